"""The transports into the log: the Segment-compatible tracking API, bulk import,
Shopify's webhooks and the providers' callbacks. Each checks what comes in, then appends
(parcours.log)."""
