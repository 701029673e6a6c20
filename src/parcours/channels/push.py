"""Web Push: VAPID (RFC 8292) with keys made on first start, payloads encrypted for the
browser's subscription (RFC 8291) by `pywebpush`; a subscription the push service says
is gone (404, 410) is removed (docs/channels.md)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid
from pywebpush import WebPushException, webpush

from parcours.channels.base import (
    ConfigError,
    OutgoingMessage,
    PermanentFailure,
    TransientFailure,
    setting,
)


def make_vapid_key() -> str:
    """A new P-256 private key, PEM (made once per installation, kept in the database)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def application_server_key(private_pem: str) -> str:
    """The public key a browser subscribes with: the uncompressed point, base64url."""
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    raw = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class WebPushProvider:
    vapid_pem: str = field(repr=False)
    subject: str  # mailto: or https: where the push service can reach the sender
    ttl: int = 24 * 3600
    timeout: float = 10.0
    connections: int = 4
    channel: str = "push"
    name: str = "webpush"

    def __post_init__(self) -> None:
        self._vapid = Vapid.from_pem(self.vapid_pem.encode())
        self._session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=self.connections)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)

    @classmethod
    def from_config(cls, config: dict[str, Any], vapid_pem: str) -> WebPushProvider:
        where = "channels.push"
        subject = setting(config, where, "subject", str)
        if not subject.startswith(("mailto:", "https://")):
            raise ConfigError(f"{where}.subject must be a mailto: or https: address")
        return cls(
            vapid_pem=vapid_pem,
            subject=subject,
            ttl=setting(config, where, "ttl", int, 24 * 3600),
            timeout=setting(config, where, "timeout", float, 10.0),
            connections=setting(config, where, "connections", int, 4),
        )

    @property
    def public_key(self) -> str:
        return application_server_key(self.vapid_pem)

    def payload(self, message: OutgoingMessage) -> bytes:
        """What the service worker receives (push/sw.js shows it)."""
        content = message.content
        document = {
            "title": content["title"],
            "body": content["body"],
            "url": content.get("url"),
            "image": content.get("image"),
            "tag": f"msg_{message.outbox_id}",
        }
        return json.dumps({k: v for k, v in document.items() if v}).encode()

    def send(self, message: OutgoingMessage) -> str:
        subscription = message.target
        if not subscription.get("endpoint") or not subscription.get("keys"):
            raise PermanentFailure("no push subscription to send to")
        try:
            response = webpush(
                subscription_info=subscription,
                data=self.payload(message).decode(),
                vapid_private_key=self._vapid,
                vapid_claims={"sub": self.subject},
                ttl=self.ttl,
                timeout=self.timeout,
                headers={"Topic": f"m{message.outbox_id}", "Urgency": "normal"},
                requests_session=self._session,
            )
        except WebPushException as exc:
            status = exc.response.status_code if exc.response is not None else 0
            reason = f"the push service answered {status or 'nothing'}"
            if status in (404, 410):
                raise PermanentFailure(
                    f"{reason}: the subscription has expired", code=str(status), suppress=True
                ) from None
            if status == 0 or status == 429 or status >= 500:
                raise TransientFailure(reason, code=str(status)) from None
            raise PermanentFailure(reason, code=str(status)) from None
        except requests.RequestException as exc:
            raise TransientFailure(f"cannot reach the push service: {exc}") from None
        assert not isinstance(response, str)
        return str(response.headers.get("Location") or f"webpush:{message.key}")

    def close(self) -> None:
        self._session.close()
