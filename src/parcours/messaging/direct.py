"""A message to someone who is not a customer (an invitation to the console), handed to
the configured provider of its channel at once: outside the outbox, the journeys and the
policies, and told back to the caller, who shows whether it went."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from parcours.channels import DeliveryFailure, OutgoingMessage, Providers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Handed:
    """What the provider said: taken (`error` None) or why not; `sandbox` when the channel
    is the sandbox's, which takes every message and sends nothing out."""

    provider: str
    sandbox: bool
    error: str | None = None

    @property
    def sent(self) -> bool:
        return self.error is None


def send_email_now(
    providers: Providers, key: str, address: str, subject: str, text: str, locale: str
) -> Handed:
    """Send a transactional email of plain text now, through the email channel's provider
    (the same key gives the same Message-ID). Never raises for the provider's refusal or
    absence: the answer says it."""
    provider = providers.for_channel("email")
    message = OutgoingMessage(
        key=key,
        outbox_id=0,  # in no outbox
        customer_id=0,  # to no customer
        channel="email",
        purpose="transactional",
        address=address,
        content={"subject": subject, "text": text},
        locale=locale,
    )
    try:
        provider.send(message)
    except DeliveryFailure as exc:
        log.warning(
            "a direct email was not sent",
            extra={"fields": {"provider": provider.name, "reason": exc.reason}},
        )
        return Handed(provider.name, provider.name == "sandbox", exc.reason)
    except Exception as exc:  # a provider's bug must not lose what the caller did
        log.exception("a direct email failed", extra={"fields": {"provider": provider.name}})
        return Handed(provider.name, provider.name == "sandbox", f"{type(exc).__name__}")
    return Handed(provider.name, provider.name == "sandbox")


__all__ = ["Handed", "send_email_now"]
