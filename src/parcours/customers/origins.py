"""What one origin told about people (one Shopify shop, for instance), taken away alone.

A shop asks, through Shopify, that what it gave be deleted (`shop/redact` once it has
uninstalled the app, `customers/redact` for one of its customers). Whoever was known only
through that shop is erased as a person (`api.erase_in`). Whoever is known otherwise too
(the brand's own tracking, another shop, a conversation, an SMS reply) stays, and loses
what came from that shop: its ids, its events, the orders they placed and the consents
they granted; traits and computed traits are then derived again from what remains.
docs/security.md (Shopify) gives the reasons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import Connection, delete, select, update

from parcours.customers.consent import CONSENT_EVENT
from parcours.customers.names import name_of, write_name_words
from parcours.customers.people import People
from parcours.customers.profiles import Erasure, erase_in, live_customers, public_id
from parcours.customers.projection import (
    MERGE_EVENT,
    derive_profile,
    event_keys,
    order_key,
    stored_event,
)
from parcours.customers.tables import consents, customers, identities
from parcours.log import QUIET, append_events, internal_event
from parcours.log import people as log_people
from parcours.log import queries as log_queries
from parcours.runtime.db import LIKE_ESCAPE, chunks, like_escape

# Events that record what Parcours or the brand's team did to a person, not what anyone
# told about them: merges and segment changes ("system"), journey steps ("journey"),
# referral codes ("loyalty"), the statuses of the messages Parcours sent and the
# unsubscribes and complaints they drew ("channel"), a journey entered through the admin
# API ("admin"). They tell nothing about where a person is known from...
REACTION_SOURCES = frozenset({"system", "journey", "loyalty", "channel", "admin"})
# ...except these, which carry what the person or the brand's team said: a reply the
# customer wrote to an email, a consent the team recorded.
TOLD_IN_REACTION = frozenset({("channel", "Message Received"), ("admin", CONSENT_EVENT)})
PART_ERASED_EVENT = "Customer Partly Erased"
_CONTACT_KINDS = ("email", "phone")
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class Origin:
    """One origin: the events of `source` whose `context.<context_key>` is `scope`, and
    the identities of `identity_kind` and order ids it writes `<scope>:<id>`."""

    source: str
    context_key: str
    scope: str
    identity_kind: str

    @property
    def prefix(self) -> str:
        return f"{self.scope}:"

    @property
    def label(self) -> str:
        return f"{self.source} {self.scope}"

    def holds(self, document: Any) -> bool:
        """Whether a stored event's document came from this origin."""
        context = document.get("context") if isinstance(document, dict) else None
        return isinstance(context, dict) and context.get(self.context_key) == self.scope

    def owns_identity(self, kind: str, value: str) -> bool:
        return kind == self.identity_kind and value.startswith(self.prefix)

    def marker(self) -> str:
        """A LIKE pattern every stored document of the origin matches (documents are
        stored as compact JSON): a first filter, checked exactly by `holds`."""
        needle = f'"{self.context_key}":{_encode(self.scope).decode()}'
        return f"%{like_escape(needle)}%"


@dataclass(frozen=True)
class Outcome:
    customer_id: int
    whole: bool  # erased as a person; otherwise only what the origin gave was taken away
    erasure: Erasure


def origin_customers(conn: Connection, origin: Origin) -> list[int]:
    """Every live customer the origin told something about: holding one of its ids, or
    with one of its events. Reads the origin's events once (shop/redact is rare)."""
    found = set(
        conn.execute(
            select(identities.c.customer_id).where(
                identities.c.kind == origin.identity_kind,
                identities.c.value.like(f"{like_escape(origin.prefix)}%", escape=LIKE_ESCAPE),
            )
        ).scalars()
    )
    found |= log_people.customers_with_events(conn, origin.source, origin.marker())
    return sorted(set(live_customers(conn, found).values()))


def erase_origin(
    conn: Connection,
    people: People,
    customer_id: int,
    origin: Origin,
    now_ms: int,
    requested_by: str,
    default_region: str,
) -> Outcome | None:
    """Take away what the origin gave about this customer: the person, when nothing else
    is known of them; otherwise the origin's part only. None when it gave nothing."""
    _lock(conn, customer_id)
    rows = log_queries.all_of(conn, customer_id)
    mine: list[log_queries.StoredEvent] = []
    rest: list[log_queries.StoredEvent] = []
    for row in rows:
        from_origin = row.source == origin.source and origin.holds(_decode(row.payload))
        (mine if from_origin else rest).append(row)
    held = [
        (row.kind, row.value)
        for row in conn.execute(
            select(identities.c.kind, identities.c.value).where(
                identities.c.customer_id == customer_id
            )
        )
    ]
    if not mine and not any(origin.owns_identity(kind, value) for kind, value in held):
        return None
    known_elsewhere = any(_tells(row.source, row.name) for row in rest) or any(
        not origin.owns_identity(kind, value) and kind not in _CONTACT_KINDS for kind, value in held
    )
    if not known_elsewhere:
        return Outcome(customer_id, True, erase_in(conn, people, customer_id, now_ms, requested_by))
    erasure = _erase_part(
        conn, people, customer_id, origin, mine, rest, held, now_ms, default_region
    )
    _audit(conn, erasure, origin, now_ms, requested_by)
    return Outcome(customer_id, False, erasure)


def erase_unattributed(conn: Connection, origin: Origin) -> int:
    """Delete the origin's events that name no person (a shop's inventory levels)."""
    seqs = [
        row.seq
        for row in log_people.unattributed_events(conn, origin.source, origin.marker())
        if origin.holds(_decode(row.payload))
    ]
    log_people.delete_events(conn, seqs)
    return len(seqs)


def _erase_part(
    conn: Connection,
    people: People,
    customer_id: int,
    origin: Origin,
    mine: list[log_queries.StoredEvent],
    rest: list[log_queries.StoredEvent],
    held: list[tuple[str, str]],
    now_ms: int,
    default_region: str,
) -> Erasure:
    """The origin's events, ids, orders and granted consents deleted; the identities no
    remaining event carries (an email only the shop knew) too, and the merge records
    that name one; the profile derived again from what remains."""
    mine_events = [stored_event(row) for row in mine]
    rest_events = [stored_event(row) for row in rest]
    carried = {key for event in rest_events for key in event_keys(event, default_region)}
    dropped_ids = [
        (kind, value)
        for kind, value in held
        if origin.owns_identity(kind, value)
        or (kind in _CONTACT_KINDS and (kind, value) not in carried)
    ]
    naming_dropped = {
        event.message_id
        for event in rest_events
        if event.source == "system"
        and event.name == MERGE_EVENT
        and _named_identity(event.properties) in dropped_ids
    }
    rest_events = [event for event in rest_events if event.message_id not in naming_dropped]
    placed_by = {
        which: {
            order_key(event.properties, event.message_id)
            for event in group
            if event.type == "track" and event.name == "Order Completed"
        }
        for which, group in (("mine", mine_events), ("rest", rest_events))
    }
    book = people.orders
    dropped_orders = [
        order_id
        for order_id in (book.order_ids_of(conn, customer_id) if book is not None else [])
        if (order_id.startswith(origin.prefix) or order_id in placed_by["mine"])
        and order_id not in placed_by["rest"]
    ]
    granted = [event.message_id for event in mine_events]
    consents_deleted = 0
    for part in chunks(granted):
        consents_deleted += conn.execute(
            delete(consents).where(
                consents.c.customer_id == customer_id,
                consents.c.status == "granted",
                consents.c.message_id.in_(part),
            )
        ).rowcount
    seqs = [row.seq for row in mine] + [row.seq for row in rest if row.message_id in naming_dropped]
    log_people.delete_events(conn, seqs)
    for kind, value in dropped_ids:
        conn.execute(
            delete(identities).where(
                identities.c.customer_id == customer_id,
                identities.c.kind == kind,
                identities.c.value == value,
            )
        )
    orders_deleted = book.take_away(conn, customer_id, dropped_orders) if book is not None else 0
    created_at = conn.execute(
        select(customers.c.created_at).where(customers.c.id == customer_id)
    ).scalar_one()
    derived = derive_profile(customer_id, created_at, rest_events)
    conn.execute(
        update(customers)
        .where(customers.c.id == customer_id)
        .values(
            traits=_encode(derived.traits).decode(),
            trait_times=_encode(derived.trait_times).decode(),
            computed=_encode(derived.computed).decode(),
            updated_at=now_ms,
        )
    )
    write_name_words(conn, {customer_id: name_of(derived.traits)})
    if book is not None:  # the order traits, from the orders that remain
        book.recount(conn, [customer_id])
    return Erasure(customer_id, len(seqs), len(dropped_ids), consents_deleted, orders_deleted)


def _audit(
    conn: Connection, erasure: Erasure, origin: Origin, now_ms: int, requested_by: str
) -> None:
    """One event that says what was taken away, with no personal data."""
    customer_id = erasure.customer_id
    message_id = f"erase-part:{customer_id}:{origin.source}:{origin.scope}:{now_ms}"
    properties = {
        "customer_id": public_id(customer_id),
        "origin": origin.label,
        "events_deleted": erasure.events,
        "identities_deleted": erasure.identities,
        "consents_deleted": erasure.consents,
        "orders_deleted": erasure.orders,
        "requested_by": requested_by,
    }
    # Through the log's door; nothing reacts to it (no reactions are given).
    recorded = internal_event(
        customer_id, PART_ERASED_EVENT, properties, now_ms, message_id, "system"
    )
    append_events(conn, [[recorded]], now_ms, QUIET)


def _lock(conn: Connection, customer_id: int) -> None:
    """PostgreSQL: the profile row is held until commit, so that the writer projecting a
    new event onto this customer waits rather than writing a profile derived before."""
    if conn.dialect.name != "sqlite":
        conn.execute(select(customers.c.id).where(customers.c.id == customer_id).with_for_update())


def _named_identity(properties: dict[str, Any]) -> tuple[str, str] | None:
    identity = properties.get("identity")
    if isinstance(identity, dict):
        return (str(identity.get("kind")), str(identity.get("value")))
    return None


def _tells(source: str, name: str | None) -> bool:
    """Whether an event tells where a person is known from (not a mere reaction)."""
    return source not in REACTION_SOURCES or (source, name) in TOLD_IN_REACTION


__all__ = [
    "PART_ERASED_EVENT",
    "REACTION_SOURCES",
    "Origin",
    "Outcome",
    "erase_origin",
    "erase_unattributed",
    "origin_customers",
]
