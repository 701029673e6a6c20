"""Identity verification for the brand's site: a customer signed in on the site is known
by the brand's user id only when the brand's server vouches for it, with an HMAC of that
id keyed by a secret only the brand's server and Parcours hold
(`identity_verification_secret`). The site chat and Web Push subscriptions use it: an id
the browser merely states is never proof of who it is (docs/security.md)."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

MAX_USER_ID = 200
_CUSTOMER_ID = re.compile(r"cus_\d+", re.IGNORECASE)
# The anonymous ids of the site chat's visitors (drawn by Parcours, signed into their
# tokens). The chat finds a visitor's conversation by this id, so no other path may write
# one: an event naming one anywhere else is refused (tracking.py), else the public
# write key could tie a visitor id of its own to another customer's profile and read
# their chat (docs/security.md, Site chat).
CHAT_VISITOR_PREFIX = "visitor_"


class IdentityRefused(Exception):
    """A token, a user id or its hash is not accepted: the HTTP status to answer (401: no
    valid proof; 403: a proof that does not hold; 400: a value that can never be one), the
    field at fault and what is wrong, for the brand's developer."""

    def __init__(self, status: int, message: str, field: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def user_hash(secret: str, user_id: str) -> str:
    """What the brand's server computes for a signed-in customer: HMAC-SHA256 of the user
    id, keyed with the identity verification secret, in lowercase hex."""
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def verified_user_id(secret: str, user_id: Any, given_hash: Any) -> str:
    """The user id, once its hash proves the brand's server vouches for it; IdentityRefused
    naming the problem otherwise."""
    if not isinstance(user_id, str) or not user_id.strip():
        raise IdentityRefused(400, "userId must be a non-empty string", "userId")
    if user_id != user_id.strip() or len(user_id) > MAX_USER_ID or "\x00" in user_id:
        raise IdentityRefused(
            400,
            f"userId must be at most {MAX_USER_ID} characters, without surrounding spaces or NUL",
            "userId",
        )
    if _CUSTOMER_ID.fullmatch(user_id):
        raise IdentityRefused(
            400,
            f"userId {user_id!r} is a Parcours customer id, which is never accepted from a "
            "browser: pass the brand's own user id",
            "userId",
        )
    if not secret:
        raise IdentityRefused(
            403,
            "signed-in visitors are refused: identity verification is not set up "
            "(identity_verification_secret)",
            "userId",
        )
    if not given_hash:
        raise IdentityRefused(
            401,
            "userHash is required with userId: HMAC-SHA256 of the user id keyed with the "
            "identity verification secret, in hex",
            "userHash",
        )
    if not isinstance(given_hash, str) or not hmac.compare_digest(
        given_hash.strip().lower().encode(), user_hash(secret, user_id).encode()
    ):
        raise IdentityRefused(403, "userHash does not match userId", "userHash")
    return user_id
