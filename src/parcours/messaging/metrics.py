"""What messaging counts for Prometheus: messages sent and held back, and providers'
errors (docs/operations.md)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

from parcours.channels import SENDER_CODE, DeliveryFailure
from parcours.messaging.choice import reason_kind
from parcours.runtime.counting import counting

SENT = Counter(
    "parcours_messages_sent_total",
    "Messages a provider took, by channel and provider",
    ["channel", "provider"],
)
HELD = Counter(
    "parcours_messages_held_total",
    "Messages held back (deferred or dropped) by the policies or the channel choice, by the "
    "channel the step asked for and the kinds of reason (joined with +)",
    ["channel", "reason"],
)
PROVIDER_ERRORS = Counter(
    "parcours_provider_errors_total",
    "Sends a provider did not take, by provider and kind: transient (tried again, including "
    "a provider's code that raised), permanent, or sender (a receiving server refused our "
    "sending setup: sender address, SPF, DKIM, DMARC, sending IP; at send time or in a "
    "bounce later)",
    ["provider", "kind"],
)


def sent_or_failed(channel: str, provider: str, failure: DeliveryFailure | None) -> None:
    """What one send came to: taken (`failure` None), or refused by the provider."""
    if not counting():
        return
    if failure is None:
        SENT.labels(channel, provider).inc()
    elif failure.code == SENDER_CODE:
        PROVIDER_ERRORS.labels(provider, "sender").inc()
    else:
        PROVIDER_ERRORS.labels(provider, "permanent" if failure.permanent else "transient").inc()


def sender_refused(provider: str) -> None:
    """A bounce that came after the send (a bounce message, a provider's webhook) says
    a receiving server refused our sending setup."""
    if counting():
        PROVIDER_ERRORS.labels(provider, "sender").inc()


def held(channel: str, passed: list[dict[str, Any]]) -> None:
    """One message held; `passed` is the channel choice's list of {channel, reason}."""
    if not counting():
        return
    kinds = sorted({reason_kind(str(item.get("reason", ""))) for item in passed}) or ["other"]
    HELD.labels(channel, "+".join(kinds)).inc()
