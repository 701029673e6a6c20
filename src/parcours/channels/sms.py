"""SMS: segment counting (GSM-7 or UCS-2), the cost estimate, opt-out keywords, and
Twilio's Messages API with its signed status callbacks (docs/channels.md)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import msgspec

from parcours.channels.base import (
    ConfigError,
    OutgoingMessage,
    PermanentFailure,
    TransientFailure,
    setting,
)
from parcours.customers import phone_country

# ---- segments --------------------------------------------------------------------------

# The GSM 03.38 default alphabet, and its extension table (each of those takes two septets).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")


@dataclass(frozen=True)
class Segments:
    encoding: str  # GSM-7 | UCS-2
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int
    per_segment: int  # what one segment holds, given how many there are


def count_segments(text: str) -> Segments:
    """GSM-7 when every character is in the GSM alphabet: 160 septets in one segment, 153
    per segment beyond (the rest is the concatenation header), extension characters
    counting two. Otherwise UCS-2: 70 code units, then 67 per segment, characters beyond
    the Basic Multilingual Plane (emoji) counting two."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text):
        units = sum(2 if c in GSM7_EXTENDED else 1 for c in text)
        single, multi, encoding = 160, 153, "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi, encoding = 70, 67, "UCS-2"
    if units <= single:
        return Segments(encoding, units, 1 if units else 0, single)
    return Segments(encoding, units, -(-units // multi), multi)


class Estimate(msgspec.Struct, frozen=True):
    """An SMS's segments and their cost, stored with the message as its content's
    `segments` (`msgspec.to_builtins`) and shown with it."""

    encoding: str  # GSM-7 | UCS-2
    units: int
    segments: int
    per_segment: int
    cost: str  # a decimal, exact
    currency: str


@dataclass(frozen=True)
class Pricing:
    """Price per segment by the recipient's country (`*` for the rest), from
    `[channels.sms] prices` and `currency`."""

    prices: dict[str, Decimal]
    currency: str

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Pricing:
        raw = config.get("prices", {"*": "0.08"})
        if not isinstance(raw, dict):
            raise ConfigError("channels.sms.prices must map a country code (or *) to a price")
        try:
            prices = {str(k).upper(): Decimal(str(v)) for k, v in raw.items()}
        except ArithmeticError:
            raise ConfigError("channels.sms.prices: every price must be a number") from None
        return cls(prices, str(config.get("currency", "EUR")))

    def estimate(self, text: str, number: str | None) -> Estimate:
        """Encoding, segments and what they cost, as shown with the message."""
        counted = count_segments(text)
        country = phone_country(number) if number else None
        price = self.prices.get(country or "", self.prices.get("*", Decimal("0")))
        return Estimate(
            counted.encoding,
            counted.units,
            counted.segments,
            counted.per_segment,
            str(price * counted.segments),
            self.currency,
        )


# ---- keywords ----------------------------------------------------------------------------

# Opt-out and opt-in words, as carriers and Twilio understand them, with French ones.
STOP_WORDS = frozenset(
    {
        "stop",
        "stopall",
        "unsubscribe",
        "cancel",
        "end",
        "quit",
        "optout",
        "revoke",
        "arret",
        "arrêt",
        "stop sms",
        "desabonner",
        "désabonner",
    }
)
START_WORDS = frozenset({"start", "yes", "unstop", "subscribe", "optin", "oui"})
HELP_WORDS = frozenset({"help", "info", "aide"})


def keyword(text: str) -> str | None:
    """`stop`, `start` or `help` when the whole message is one of those words."""
    word = " ".join(text.strip().lower().split()).strip(".!")
    if word in STOP_WORDS:
        return "stop"
    if word in START_WORDS:
        return "start"
    if word in HELP_WORDS:
        return "help"
    return None


# ---- Twilio ------------------------------------------------------------------------------

# Error codes that mean this number will not work: no retry, the fallback takes over;
# those marked True also suppress the number.
PERMANENT_ERRORS = {
    21211: True,  # invalid 'To' number
    21214: True,  # 'To' number cannot be reached
    21408: False,  # permission to send to this region is not enabled
    21610: False,  # the recipient replied STOP
    21612: False,  # not a route Twilio can use from this sender
    21614: True,  # 'To' is not a mobile number
    30003: False,  # unreachable handset
    30004: False,  # message blocked
    30005: True,  # unknown destination handset
    30006: True,  # landline or unreachable carrier
    30007: False,  # carrier filtering
}
# Twilio's statuses and ours.
STATUSES = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "undelivered": "failed",
    "failed": "failed",
}


def twilio_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """Twilio's X-Twilio-Signature: HMAC-SHA1, keyed with the auth token, of the URL as
    called followed by every POST parameter, sorted by name, as name then value."""
    data = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@dataclass
class TwilioProvider:
    account_sid: str
    auth_token: str = field(repr=False)
    from_number: str | None = None
    messaging_service_sid: str | None = None
    senders: dict[str, str] = field(default_factory=dict)  # country -> sender id or number
    api_base: str = "https://api.twilio.com"
    status_callback: str | None = None  # set from public_url; ?m=<outbox id> is added
    timeout: float = 15.0
    connections: int = 4
    channel: str = "sms"
    name: str = "twilio"

    def __post_init__(self) -> None:
        self._client = httpx.Client(
            base_url=self.api_base,
            auth=(self.account_sid, self.auth_token),
            timeout=self.timeout,
            limits=httpx.Limits(max_keepalive_connections=self.connections),
        )

    @classmethod
    def from_config(cls, config: dict[str, Any], public_url: str) -> TwilioProvider:
        where = "channels.sms"
        senders = config.get("senders", {})
        if not isinstance(senders, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in senders.items()
        ):
            raise ConfigError(f"{where}.senders must map a country code to a sender")
        provider = cls(
            account_sid=setting(config, where, "account_sid", str),
            auth_token=setting(config, where, "auth_token", str),
            from_number=config.get("from_number"),
            messaging_service_sid=config.get("messaging_service_sid"),
            senders={k.upper(): v for k, v in senders.items()},
            api_base=setting(config, where, "api_base", str, "https://api.twilio.com"),
            status_callback=f"{public_url}/webhooks/twilio/status",
            timeout=setting(config, where, "timeout", float, 15.0),
            connections=setting(config, where, "connections", int, 4),
        )
        if not (provider.from_number or provider.messaging_service_sid or provider.senders):
            raise ConfigError(
                f"{where}: give from_number, messaging_service_sid or senders per country"
            )
        return provider

    def sender_for(self, number: str) -> dict[str, str]:
        """The sender for the recipient's country, else the default number or service."""
        country = phone_country(number)
        if country and country in self.senders:
            return {"From": self.senders[country]}
        if self.messaging_service_sid:
            return {"MessagingServiceSid": self.messaging_service_sid}
        if self.from_number:
            return {"From": self.from_number}
        return {"From": next(iter(self.senders.values()))}

    def send(self, message: OutgoingMessage) -> str:
        form = {"To": message.address, "Body": message.content["text"]}
        form |= self.sender_for(message.address)
        if self.status_callback:
            form["StatusCallback"] = f"{self.status_callback}?m={message.outbox_id}"
        try:
            response = self._client.post(
                f"/2010-04-01/Accounts/{self.account_sid}/Messages.json", data=form
            )
        except httpx.HTTPError as exc:
            raise TransientFailure(f"cannot reach Twilio: {exc}") from None
        if response.status_code in (200, 201):
            return str(response.json()["sid"])
        try:
            error = response.json()
            code = int(error.get("code") or 0)
            text = f"{code} {error.get('message', '')}".strip()
        except ValueError:
            code, text = 0, response.text[:200]
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientFailure(
                f"Twilio answered {response.status_code}: {text}", code=str(code)
            )
        if response.status_code in (401, 403):
            raise TransientFailure(
                f"Twilio refused our credentials ({response.status_code}); check account_sid "
                "and auth_token",
                code=str(code),
            )
        suppress = PERMANENT_ERRORS.get(code, False)
        raise PermanentFailure(f"Twilio: {text}", code=str(code), suppress=suppress)

    def verify(self, url: str, params: dict[str, str], signature: str | None) -> bool:
        expected = twilio_signature(self.auth_token, url, params)
        return signature is not None and hmac.compare_digest(expected, signature)

    def close(self) -> None:
        self._client.close()
