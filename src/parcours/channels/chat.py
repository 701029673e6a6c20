"""Site chat: the widget on the brand's site talks to Parcours over a WebSocket. Messages
to the customer wait in the outbox until their widget is open; messages from the
customer are events (docs/channels.md). Who a widget speaks for is proven by a visitor
token Parcours signs, and a signed-in customer by the brand's identity hash: never by an
id the browser merely states (docs/security.md, Site chat)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

import msgspec

from parcours.channels.base import OutgoingMessage
from parcours.customers import IdentityRefused

VisitorKind = Literal["anonymous", "user"]

TOKEN_LIFETIME_MS = 60 * 60 * 1000  # a token opens the chat for an hour...
RENEWAL_MS = 30 * 24 * 60 * 60 * 1000  # ...and an anonymous one is renewed within 30 days
_PREFIX = "pcv1"
_KINDS: dict[str, VisitorKind] = {"a": "anonymous", "u": "user"}
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


@dataclass
class SiteChatProvider:
    """Nothing leaves Parcours: the customer's widget collects the message."""

    channel: str = "chat"
    name: str = "site"
    connections: int = 1

    def send(self, message: OutgoingMessage) -> str:
        return "chat_" + hashlib.sha256(message.key.encode()).hexdigest()[:24]

    def close(self) -> None:
        return None


@dataclass(frozen=True)
class Visitor:
    """Who a widget speaks for: an anonymous visitor, by an id Parcours made for them, or
    a customer the brand signed in, by the brand's user id. `expires_at` ends the token's
    use for the chat; `issued_at` starts its renewal window."""

    kind: VisitorKind
    id: str
    issued_at: int
    expires_at: int

    @property
    def identity(self) -> dict[str, str]:
        """The event fields naming this visitor."""
        return {"userId": self.id} if self.kind == "user" else {"anonymousId": self.id}

    def is_same_person(self, other: Visitor) -> bool:
        return (self.kind, self.id) == (other.kind, other.id)


class VisitorTokens:
    """Visitor tokens: `pcv1.<payload>.<HMAC-SHA256 of "pcv1.<payload>">`, base64url, the
    payload naming the visitor and the token's times. Signed with a key kept for this
    alone (no other part of Parcours signs or accepts anything with it)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("a visitor token key has at least 32 bytes")
        self._key = key

    def issue(self, kind: VisitorKind, visitor_id: str, now: int) -> tuple[str, Visitor]:
        visitor = Visitor(kind, visitor_id, now, now + TOKEN_LIFETIME_MS)
        payload = {"k": kind[0], "v": visitor_id, "iat": now, "exp": visitor.expires_at}
        body = _b64(_encode(payload))
        return f"{_PREFIX}.{body}.{_b64(self._mac(body))}", visitor

    def new_anonymous(self, now: int) -> tuple[str, Visitor]:
        """A token for a visitor not seen before, under an id nobody can guess."""
        return self.issue("anonymous", "visitor_" + secrets.token_hex(16), now)

    def read(self, token: str, now: int) -> Visitor:
        """The visitor a valid, unexpired token speaks for; IdentityRefused (401) if not."""
        visitor = self._verified(token)
        if now >= visitor.expires_at:
            raise IdentityRefused(
                401, "the visitor token expired: ask POST /chat/session for a new one", "token"
            )
        return visitor

    def renew(self, token: str, now: int) -> tuple[str, Visitor]:
        """A new token for the same anonymous visitor, expired or not, within the renewal
        window of the one given."""
        visitor = self._verified(token)
        if visitor.kind != "anonymous":
            raise IdentityRefused(
                401,
                "a signed-in visitor's token is not renewed by itself: send userId and "
                "userHash again",
                "token",
            )
        if now >= visitor.issued_at + RENEWAL_MS:
            raise IdentityRefused(
                401,
                "the visitor token is too old to renew (30 days): start a new session without it",
                "token",
            )
        return self.issue("anonymous", visitor.id, now)

    def _mac(self, body: str) -> bytes:
        return hmac.digest(self._key, f"{_PREFIX}.{body}".encode(), "sha256")

    def _verified(self, token: str) -> Visitor:
        invalid = IdentityRefused(
            401, "the visitor token is not valid (not made by this Parcours, or altered)", "token"
        )
        prefix, _, rest = token.partition(".")
        body, _, mac = rest.partition(".")
        if prefix != _PREFIX or not body or not mac:
            raise invalid
        try:
            if not hmac.compare_digest(_unb64(mac), self._mac(body)):
                raise invalid
            payload = _decode(_unb64(body))
        except (ValueError, binascii.Error, msgspec.DecodeError):
            raise invalid from None
        if not isinstance(payload, dict) or payload.get("k") not in _KINDS:
            raise invalid
        kind = _KINDS[payload["k"]]
        visitor_id, issued_at, expires_at = payload.get("v"), payload.get("iat"), payload.get("exp")
        if not isinstance(visitor_id, str) or not visitor_id:
            raise invalid
        if not isinstance(issued_at, int) or not isinstance(expires_at, int):
            raise invalid
        return Visitor(kind, visitor_id, issued_at, expires_at)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
