"""Signed email tags: the per-message addresses that bounces and replies come back to
(`bounces+<id>-<mac>@`, `reply+<id>-<mac>@`) and the Message-ID, made with a key of their
own so that nobody can write them for a message they were not sent. Inbound mail acts on a
message only through them (docs/security.md, "Inbound email and bounces").

The MAC is 12 base32 characters (60 bits, lowercase: mail servers may change the case of
a local part) of an HMAC-SHA256 of the message's id. A Message-ID is an HMAC of the
message's idempotency key, the same for every attempt to send it. Messages numbered below
`signed_from` were sent before tags were signed: they keep their old Message-ID (a re-send
is the same message) and their unsigned tags are read only as docs/channels.md says.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from parcours.runtime.db import Database
from parcours.runtime.secrets import instance_secret

KEY_NAME = "email-tags"  # the instance secret tags are signed with
SIGNED_FROM_NAME = "email-tags-signed-from"  # the first outbox id with signed tags (0018)
MAC_CHARS = 12


@dataclass(frozen=True)
class EmailTags:
    key: bytes = field(repr=False)
    signed_from: int = 0  # outbox ids below this went out with unsigned tags

    @classmethod
    def load(cls, db: Database, now: int) -> EmailTags:
        """The installation's key (made on first use, shared by every process) and where
        signed tags start (written by the migration that brought them; 0 when there was
        nothing sent before)."""
        key = instance_secret(db, KEY_NAME, now)
        signed_from = instance_secret(db, SIGNED_FROM_NAME, now, lambda: "0")
        return cls(key.encode(), int(signed_from))

    def mac(self, outbox_id: int) -> str:
        digest = hmac.digest(self.key, f"email-tag:{outbox_id}".encode(), "sha256")
        return base64.b32encode(digest).decode().lower()[:MAC_CHARS]

    def tag(self, outbox_id: int) -> str:
        """What stands for `{id}` in the return path and reply-to: `42-<mac>`."""
        return f"{outbox_id}-{self.mac(outbox_id)}"

    def valid(self, outbox_id: int, mac: str | None) -> bool:
        return mac is not None and hmac.compare_digest(mac.lower(), self.mac(outbox_id))

    def before_signing(self, outbox_id: int) -> bool:
        """The message went out before tags were signed (its tags and Message-ID are
        guessable)."""
        return outbox_id < self.signed_from

    def message_id(self, idempotency_key: str, outbox_id: int, domain: str) -> str:
        """The Message-ID of every attempt at this message: unguessable without the key."""
        if self.before_signing(outbox_id):
            return unsigned_message_id(idempotency_key, domain)
        digest = hmac.new(self.key, f"message-id:{idempotency_key}".encode(), "sha256")
        return f"<{digest.hexdigest()[:32]}@{domain}>"


@runtime_checkable
class Tagging(Protocol):
    """An email provider that writes tags (SMTP: return path, reply-to, Message-ID;
    Postmark: reply-to)."""

    tags: EmailTags | None


def hand_to(provider: object, tags: EmailTags) -> None:
    """Give an email provider the key it signs its tags with (Services.open)."""
    if isinstance(provider, Tagging):
        provider.tags = tags


def tagged(template: str, outbox_id: int, tags: EmailTags | None) -> str:
    """An address of the settings with `{id}` made this message's tag (signed when the
    provider has the key: always under `parcours serve` and `worker`)."""
    return template.replace("{id}", tags.tag(outbox_id) if tags else str(outbox_id))


def unsigned_message_id(idempotency_key: str, domain: str) -> str:
    """The Message-ID as made before it was signed, and by a provider given no key."""
    return f"<{hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]}@{domain}>"
