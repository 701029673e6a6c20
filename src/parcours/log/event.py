"""An event of the log: what the shop, the site, a provider or Parcours itself recorded,
with its times in milliseconds since the epoch."""

from __future__ import annotations

from typing import Any

import msgspec

from parcours.runtime.clock import iso

_encode = msgspec.json.Encoder().encode


class Event(msgspec.Struct):
    """One accepted event, with its times in milliseconds since the epoch (a Struct: built
    several times faster than a dataclass of as many fields, on the ingestion hot path)."""

    message_id: str
    type: str
    name: str | None
    user_id: str | None
    anonymous_id: str | None
    properties: dict[str, Any]
    traits: dict[str, Any]
    context: dict[str, Any]
    occurred_at: int
    received_at: int
    timestamp: int | None
    sent_at: int | None
    source: str
    payload: str
    previous_id: str | None = None
    group_id: str | None = None
    customer_id: int | None = None
    external_ids: list[tuple[str, str]] = msgspec.field(default_factory=list)
    # Its identities, normalised (customers.projection.event_keys): computed once, by the
    # first to need them (the HTTP process, before handing the event to the writer).
    identities: list[tuple[str, str]] | None = None


def internal_event(
    customer_id: int,
    name: str | None,
    properties: dict[str, Any],
    at: int,
    message_id: str,
    source: str,
    *,
    traits: dict[str, Any] | None = None,
    context_traits: dict[str, Any] | None = None,
    received_at: int | None = None,
) -> Event:
    """An event Parcours itself records about a known customer: a journey's decision
    (source "system"), a channel's feedback ("channel"), a click on an unsubscribe link.
    The message id makes it idempotent: the same fact recorded twice is stored once.
    With `traits` (and no name) it is an identify call that sets them on the profile;
    `context_traits` sets traits from a track, as Segment's `context.traits` does (the
    fact and the trait it gives in one event). `received_at` defaults to `at`; a fact
    dated by an earlier one (a referral credited for an order) gives both."""
    kind = "identify" if traits is not None else "track"
    context: dict[str, Any] = {"traits": context_traits} if context_traits else {}
    if kind == "track":
        document = {"type": kind, "event": name, "messageId": message_id, "properties": properties}
    else:
        document = {"type": kind, "messageId": message_id, "traits": traits}
    if context:
        document["context"] = context
    document["timestamp"] = iso(at)
    return Event(
        message_id=message_id,
        type=kind,
        name=name if kind == "track" else None,
        user_id=None,
        anonymous_id=None,
        properties=properties,
        traits=traits or {},
        context=context,
        occurred_at=at,
        received_at=at if received_at is None else received_at,
        timestamp=at,
        sent_at=None,
        source=source,
        payload=_encode(document).decode("utf-8"),
        customer_id=customer_id,
    )
