"""WhatsApp through Meta's Cloud API: approved templates outside the 24-hour customer
service window, free-form text inside it; webhooks verified (hub.challenge) and signed
(X-Hub-Signature-256) (docs/channels.md)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

from parcours.channels import whatsapp_buttons
from parcours.channels.base import (
    ConfigError,
    OutgoingMessage,
    PermanentFailure,
    TransientFailure,
    setting,
)
from parcours.runtime.documents import JsonObject

WINDOW_MS = 24 * 3_600_000  # the customer-service window after the customer's last message
# Errors worth trying again later (rate limits, temporary trouble at Meta).
TRANSIENT_ERRORS = {1, 2, 4, 80007, 130429, 131000, 131016, 131056, 133004}
# Errors that mean this number is not on WhatsApp: bar it.
SUPPRESS_ERRORS = {131026, 131030}
STATUSES = {"sent": "sent", "delivered": "delivered", "read": "read", "failed": "failed"}


def hub_signature(app_secret: str, body: bytes) -> str:
    """X-Hub-Signature-256: `sha256=` and the hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def wa_number(address: str) -> str:
    """The Cloud API wants the number in international form without the `+`."""
    return address.lstrip("+")


@dataclass
class MetaWhatsAppProvider:
    phone_number_id: str
    access_token: str = field(repr=False)
    app_secret: str = field(repr=False)
    verify_token: str = field(repr=False)
    api_base: str = "https://graph.facebook.com"
    api_version: str = "v21.0"
    timeout: float = 15.0
    connections: int = 4
    channel: str = "whatsapp"
    name: str = "meta"

    def __post_init__(self) -> None:
        self._client = httpx.Client(
            base_url=self.api_base,
            headers={"Authorization": f"Bearer {self.access_token}"},
            timeout=self.timeout,
            limits=httpx.Limits(max_keepalive_connections=self.connections),
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MetaWhatsAppProvider:
        where = "channels.whatsapp"
        return cls(
            phone_number_id=setting(config, where, "phone_number_id", str),
            access_token=setting(config, where, "access_token", str),
            app_secret=setting(config, where, "app_secret", str),
            verify_token=setting(config, where, "verify_token", str),
            api_base=setting(config, where, "api_base", str, "https://graph.facebook.com"),
            api_version=setting(config, where, "api_version", str, "v21.0"),
            timeout=setting(config, where, "timeout", float, 15.0),
            connections=setting(config, where, "connections", int, 4),
        )

    def payload(self, message: OutgoingMessage) -> JsonObject:
        """The Cloud API request for a message rendered as text (interactive when it has
        buttons) or as a template (its buttons' parameters after its body's)."""
        content = message.content
        base = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": wa_number(message.address),
        }
        buttons = content.get("buttons") or []
        if content.get("mode") == "text":
            if buttons:  # an interactive message: reply buttons, or one URL button
                interactive = whatsapp_buttons.interactive(content["text"], buttons)
                return {**base, "type": "interactive", "interactive": interactive}
            return {**base, "type": "text", "text": {"body": content["text"], "preview_url": True}}
        parameters = [{"type": "text", "text": value} for value in content.get("parameters", [])]
        template: dict[str, Any] = {
            "name": content["template"],
            "language": {"code": content.get("language") or message.locale},
        }
        components = [{"type": "body", "parameters": parameters}] if parameters else []
        components += whatsapp_buttons.template_components(buttons)
        if components:
            template["components"] = components
        return {**base, "type": "template", "template": template}

    def send(self, message: OutgoingMessage) -> str:
        try:
            response = self._client.post(
                f"/{self.api_version}/{self.phone_number_id}/messages", json=self.payload(message)
            )
        except httpx.HTTPError as exc:
            raise TransientFailure(f"cannot reach the WhatsApp Cloud API: {exc}") from None
        if response.status_code == 200:
            return str(response.json()["messages"][0]["id"])
        try:
            error = response.json().get("error", {})
            code = int(error.get("code") or 0)
            text = f"{code} {error.get('message', '')}".strip()
        except (ValueError, AttributeError):
            code, text = 0, response.text[:200]
        if response.status_code >= 500 or response.status_code == 429 or code in TRANSIENT_ERRORS:
            raise TransientFailure(f"WhatsApp: {text}", code=str(code))
        if code == 190 or response.status_code == 401:
            raise TransientFailure(
                f"WhatsApp refused the access token ({text}); renew it", code=str(code)
            )
        raise PermanentFailure(
            f"WhatsApp: {text}", code=str(code), suppress=code in SUPPRESS_ERRORS
        )

    def verify(self, body: bytes, signature: str | None) -> bool:
        expected = hub_signature(self.app_secret, body)
        return signature is not None and hmac.compare_digest(expected, signature)

    def close(self) -> None:
        self._client.close()


@dataclass(frozen=True)
class WhatsAppPricing:
    """What a message costs by its category (Meta prices marketing, utility and
    authentication templates differently; service messages inside the window are free),
    from `[channels.whatsapp] prices` and `currency`."""

    prices: dict[str, Decimal]
    currency: str

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> WhatsAppPricing:
        raw = config.get(
            "prices",
            {"marketing": "0.0859", "utility": "0.0300", "authentication": "0.0300"},
        )
        if not isinstance(raw, dict):
            raise ConfigError("channels.whatsapp.prices must map a category to a price")
        try:
            prices = {str(k): Decimal(str(v)) for k, v in raw.items()}
        except ArithmeticError:
            raise ConfigError("channels.whatsapp.prices: every price must be a number") from None
        prices.setdefault("service", Decimal("0"))
        return cls(prices, str(config.get("currency", "EUR")))

    def estimate(self, category: str | None) -> dict[str, str]:
        kind = category or "service"
        return {
            "category": kind,
            "cost": str(self.prices.get(kind, Decimal("0"))),
            "currency": self.currency,
        }
