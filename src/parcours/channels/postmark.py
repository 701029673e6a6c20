"""Email through Postmark's HTTP API, and its webhooks for deliveries, bounces and spam
complaints (docs/channels.md). Postmark signs the mail with the brand's DKIM itself."""

from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass, field
from typing import Any

import httpx

from parcours.channels.base import (
    ConfigError,
    OutgoingMessage,
    PermanentFailure,
    TransientFailure,
    setting,
)
from parcours.channels.email import check_configured_address
from parcours.channels.email_bounces import (
    BAD_ADDRESS,
    HARD,
    OUR_SETUP,
    POLICY,
    SENDER,
    SOFT,
    TEMPORARY,
    Verdict,
    classify,
)
from parcours.channels.email_tags import EmailTags, tagged
from parcours.runtime.documents import JsonObject

# Postmark's ErrorCode values that mean this address will not work.
SUPPRESS_ERRORS = {300, 406}  # invalid address; inactive recipient (bounced or complained)
# Postmark's bounce types, read by the shared rule (channels/email_bounces.py): a bad
# address is hard; a block, a DNS error or a soft bounce is soft, unless its text puts it
# down to our sending setup; a DMARC refusal is about our domain; "Undeliverable" and
# "Unknown" are read from their text like any bounce. The rest (Transient: a delay while
# Postmark retries; AutoResponder; Subscribe...) are no bounce.
_BOUNCE_TYPES = {
    "HardBounce": Verdict(HARD, BAD_ADDRESS),
    "BadEmailAddress": Verdict(HARD, BAD_ADDRESS),
    "ManuallyDeactivated": Verdict(HARD, BAD_ADDRESS),
    "SoftBounce": Verdict(SOFT, TEMPORARY),
    "DnsError": Verdict(SOFT, TEMPORARY),
    "SpamNotification": Verdict(SOFT, POLICY),
    "Blocked": Verdict(SOFT, POLICY),
    "VirusNotification": Verdict(SOFT, POLICY),
    "DMARCPolicy": Verdict(SENDER, OUR_SETUP),
}
_READ_FROM_TEXT = {"Undeliverable", "Unknown"}


def bounce_verdict(record: dict[str, Any]) -> Verdict | None:
    """Hard or soft for a Bounce webhook's record; None when it is no bounce."""
    kind = str(record.get("Type") or "")
    text = f"{record.get('Description') or ''} {record.get('Details') or ''}"
    if kind in _BOUNCE_TYPES:
        verdict = _BOUNCE_TYPES[kind]
        if verdict.counted and classify(text).ours:
            return Verdict(SENDER, OUR_SETUP)
        return verdict
    if kind in _READ_FROM_TEXT:
        return classify(text)
    return None


@dataclass
class PostmarkProvider:
    server_token: str = field(repr=False)
    from_address: str
    from_name: str = ""
    reply_to: str | None = None
    message_stream: str = "outbound"  # transactional; "broadcast" for marketing
    marketing_stream: str = "broadcast"
    webhook_user: str = ""
    webhook_password: str = field(default="", repr=False)
    api_base: str = "https://api.postmarkapp.com"
    timeout: float = 15.0
    connections: int = 4
    channel: str = "email"
    name: str = "postmark"
    # What signs the reply-to tag (channels/email_tags.py), given by Services.open.
    tags: EmailTags | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._client = httpx.Client(
            base_url=self.api_base,
            timeout=self.timeout,
            headers={"X-Postmark-Server-Token": self.server_token, "Accept": "application/json"},
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PostmarkProvider:
        where = "channels.email"
        provider = cls(
            server_token=setting(config, where, "server_token", str),
            from_address=setting(config, where, "from_address", str),
            from_name=setting(config, where, "from_name", str, ""),
            reply_to=config.get("reply_to"),
            message_stream=setting(config, where, "message_stream", str, "outbound"),
            marketing_stream=setting(config, where, "marketing_stream", str, "broadcast"),
            webhook_user=setting(config, where, "webhook_user", str, ""),
            webhook_password=setting(config, where, "webhook_password", str, ""),
            api_base=setting(config, where, "api_base", str, "https://api.postmarkapp.com"),
            timeout=setting(config, where, "timeout", float, 15.0),
            connections=setting(config, where, "connections", int, 4),
        )
        for name in ("from_address", "reply_to"):
            check_configured_address(where, name, getattr(provider, name))
        if not provider.webhook_user or not provider.webhook_password:
            raise ConfigError(
                f"{where}: webhook_user and webhook_password protect the Postmark webhook"
            )
        return provider

    def payload(self, message: OutgoingMessage) -> JsonObject:
        content = message.content
        sender = f"{self.from_name} <{self.from_address}>" if self.from_name else self.from_address
        headers = [{"Name": "X-Parcours-Message", "Value": str(message.outbox_id)}]
        unsubscribe = message.links.get("unsubscribe")
        if unsubscribe:
            headers += [
                {"Name": "List-Unsubscribe", "Value": f"<{unsubscribe}>"},
                {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
            ]
        document: dict[str, Any] = {
            "From": sender,
            "To": message.address,
            "Subject": content["subject"],
            "TextBody": content.get("text") or "",
            "Headers": headers,
            "MessageStream": (
                self.marketing_stream if message.purpose == "marketing" else self.message_stream
            ),
            "Metadata": {"parcours_message": str(message.outbox_id)},
            "TrackOpens": False,  # Parcours tracks opens and clicks itself
            "TrackLinks": "None",
        }
        if content.get("html"):
            document["HtmlBody"] = content["html"]
        if self.reply_to:
            document["ReplyTo"] = tagged(self.reply_to, message.outbox_id, self.tags)
        return document

    def send(self, message: OutgoingMessage) -> str:
        try:
            response = self._client.post("/email", json=self.payload(message))
        except httpx.HTTPError as exc:
            raise TransientFailure(f"cannot reach Postmark: {exc}") from None
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        code = int(answer.get("ErrorCode") or 0)
        if response.status_code == 200 and code == 0:
            return str(answer["MessageID"])
        text = f"Postmark {response.status_code} {code} {answer.get('Message', '')}".strip()
        if response.status_code in (429, 500, 503) or response.status_code == 401:
            raise TransientFailure(text, code=str(code))
        raise PermanentFailure(text, code=str(code), suppress=code in SUPPRESS_ERRORS)

    def webhook_allowed(self, authorization: str | None) -> bool:
        """Postmark calls with the HTTP Basic credentials written in the webhook's URL."""
        expected = base64.b64encode(
            f"{self.webhook_user}:{self.webhook_password}".encode()
        ).decode()
        return authorization is not None and hmac.compare_digest(authorization, f"Basic {expected}")

    def close(self) -> None:
        self._client.close()
