"""What each channel does to a rendered message before it is handed to a provider, in a
table keyed by the channel's name: adding a channel is adding a row (docs/delivery-layout.md).

A preparer runs in the claim's transaction, once per message (a message sent again after a
crash goes with the content stored the first time). It may read and write that
transaction's tables; it never calls the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
from sqlalchemy import Connection

from parcours.channels import Pricing, WhatsAppPricing
from parcours.messaging import choice, passes, subscriptions
from parcours.messaging.links import Links, track_html


@dataclass(frozen=True)
class Draft:
    """A message rendered from its template, before its channel's preparer has seen it."""

    outbox_id: int
    customer_id: int
    address: str | None
    content: dict[str, Any]  # the template's fields, rendered for the customer
    links: dict[str, str]  # the links the message carries (its unsubscribe link)
    now: int


@dataclass(frozen=True)
class Prepared:
    """The content as it goes to the provider, and as the outbox stores it."""

    content: dict[str, Any]


@dataclass(frozen=True)
class Unsendable:
    """The message cannot go on this channel: a permanent failure, for this reason."""

    reason: str


class Preparer(Protocol):
    def prepare(self, conn: Connection, draft: Draft) -> Prepared | Unsendable:
        """The content for the provider, or why the message cannot go."""
        ...

    def target(self, conn: Connection, address: str | None) -> dict[str, Any]:
        """Provider-specific addressing that is not content (a push subscription's keys)."""
        ...


class UnknownChannel(LookupError):
    """An outbox row names a channel that has no preparer in the table."""


class AsRendered:
    """A channel whose provider takes the rendered fields as they are (the site chat)."""

    def prepare(self, conn: Connection, draft: Draft) -> Prepared | Unsendable:
        return Prepared(dict(draft.content))

    def target(self, conn: Connection, address: str | None) -> dict[str, Any]:
        return {}


class EmailPreparer(AsRendered):
    """HTML email gets its open pixel and its links made trackable (not the unsubscribe
    link, nor the other links the message carries itself)."""

    def __init__(self, links: Links) -> None:
        self.links = links

    def prepare(self, conn: Connection, draft: Draft) -> Prepared | Unsendable:
        content = dict(draft.content)
        if content.get("html"):
            keep = set(draft.links.values())
            content["html"] = track_html(content["html"], self.links, draft.outbox_id, keep)
        return Prepared(content)


class SmsPreparer(AsRendered):
    """An SMS shows its encoding, its segments and what it costs for its number."""

    def __init__(self, pricing: Pricing) -> None:
        self.pricing = pricing

    def prepare(self, conn: Connection, draft: Draft) -> Prepared | Unsendable:
        content = dict(draft.content)
        estimate = self.pricing.estimate(content["text"], draft.address)
        content["segments"] = msgspec.to_builtins(estimate)
        return Prepared(content)


class WhatsAppPreparer(AsRendered):
    """Free-form text inside the 24-hour window, else the approved template, with the
    conversation's price; neither: it cannot go."""

    def __init__(self, pricing: WhatsAppPricing) -> None:
        self.pricing = pricing

    def prepare(self, conn: Connection, draft: Draft) -> Prepared | Unsendable:
        form = whatsapp_form(conn, draft.customer_id, draft.content, draft.now)
        if form is None:
            return Unsendable(choice.WINDOW_CLOSED)
        return Prepared({**form, "pricing": self.pricing.estimate(form["category"])})


class PushPreparer(AsRendered):
    """A push's link goes through our click redirect; a browser subscription's keys are
    its target."""

    def __init__(self, links: Links) -> None:
        self.links = links

    def prepare(self, conn: Connection, draft: Draft) -> Prepared | Unsendable:
        content = dict(draft.content)
        if content.get("url"):
            content["url"] = self.links.click(draft.outbox_id, content["url"])
        return Prepared(content)

    def target(self, conn: Connection, address: str | None) -> dict[str, Any]:
        if not address:
            return {}
        return subscriptions.by_endpoint(conn, address) or {}


class WalletPreparer(AsRendered):
    """A Wallet message is the pass's news field, changed in the claim's transaction; the
    devices holding the pass are told through their push tokens."""

    def prepare(self, conn: Connection, draft: Draft) -> Prepared | Unsendable:
        content = dict(draft.content)
        if draft.address:
            passes.set_message(conn, draft.address, content["header"], content["body"], draft.now)
        return Prepared(content)

    def target(self, conn: Connection, address: str | None) -> dict[str, Any]:
        if not address:
            return {}
        return {"push_tokens": passes.push_tokens(conn, address)}


def preparer_table(
    links: Links, sms_pricing: Pricing, whatsapp_pricing: WhatsAppPricing
) -> dict[str, Preparer]:
    """Every channel delivery sends on, with its preparer."""
    return {
        "email": EmailPreparer(links),
        "sms": SmsPreparer(sms_pricing),
        "whatsapp": WhatsAppPreparer(whatsapp_pricing),
        "push": PushPreparer(links),
        "wallet": WalletPreparer(),
        "chat": AsRendered(),
    }


def preparer_for(table: Mapping[str, Preparer], channel: str) -> Preparer:
    """The preparer of a channel; UnknownChannel names the channels there are."""
    try:
        return table[channel]
    except KeyError:
        known = ", ".join(sorted(table))
        raise UnknownChannel(
            f"no preparer for channel {channel!r}: delivery sends on {known}"
        ) from None


def whatsapp_form(
    conn: Connection, customer_id: int, content: dict[str, Any], now: int
) -> dict[str, Any] | None:
    """Free-form text inside the 24-hour window when the template has it, else the
    approved template, each with the template's buttons; None when neither may go now."""
    buttons = {"buttons": content["buttons"]} if content.get("buttons") else {}
    if "text" in content and choice.whatsapp_window_open(conn, customer_id, now):
        return {"mode": "text", "text": content["text"], "category": "service", **buttons}
    if "template" in content:
        return {
            "mode": "template",
            "template": content["template"],
            "language": content.get("language"),
            "category": content.get("category"),
            "parameters": content.get("parameters", []),
            **buttons,
        }
    return None


__all__ = [
    "Draft",
    "Prepared",
    "Preparer",
    "UnknownChannel",
    "Unsendable",
    "preparer_for",
    "preparer_table",
    "whatsapp_form",
]
