"""The HTTP edge: the admin API, the public endpoints (chat, push, Wallet), the error
envelope, the key guards and the OpenAPI document; the console will sit beside them."""
