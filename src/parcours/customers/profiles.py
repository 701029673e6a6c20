"""Profiles: look a customer up, read a profile, export, erase (public through the package)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import NamedTuple

import msgspec
from babel.core import get_global
from sqlalchemy import (
    Connection,
    Select,
    and_,
    column,
    func,
    inspect,
    literal_column,
    select,
    table,
    update,
)

from parcours.customers import consent, projection
from parcours.customers.identity import identity_of
from parcours.customers.names import folded, name_of, words
from parcours.customers.people import People
from parcours.customers.tables import (
    consents,
    customer_name_words,
    customers,
    identities,
)
from parcours.log import QUIET, Reactions, append_events, internal_event
from parcours.log import queries as log_queries
from parcours.runtime.clock import iso
from parcours.runtime.db import LIKE_ESCAPE, Database, chunks, like_escape, update_rows
from parcours.runtime.documents import JsonObject
from parcours.runtime.presentation import money_text, own_event_properties

ERASED_EVENT = "Customer Erased"
_CUSTOMER_REF = re.compile(r"^cus_([0-9]{1,18})$")  # ids are 64-bit: more digits, no one
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class CustomerNotFound(LookupError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"no customer is known by {ref!r}")
        self.ref = ref


class AmbiguousCustomer(CustomerNotFound):
    """An unscoped external id that several scopes (shops) hold for different customers."""

    def __init__(self, ref: str, choices: Sequence[str]) -> None:
        LookupError.__init__(
            self, f"{ref!r} names several customers; write one of: {', '.join(choices)}"
        )
        self.ref = ref


# External ids written `<scope>:<id>` (a Shopify customer id is keyed by its shop:
# docs/events.md): `kind:id` also finds the one customer whose id it is in some scope.
SCOPED_KINDS = frozenset({"shopify_customer_id"})


def public_id(customer_id: int) -> str:
    return f"cus_{customer_id}"


def resolve(conn: Connection, ref: str, default_region: str) -> int:
    """The live customer behind any id an admin types: `cus_N`, an email, a phone, an
    external id written `kind:value`, a userId or an anonymousId. A merged customer's id
    resolves to the survivor.

    The order is what keeps it safe, as anyone with the public write key can give a
    customer any user or anonymous id: `kind:value` is looked up as that kind first, a
    text that reads as an email or a phone number as that, and only then as a user id,
    then an anonymous id. A decoy profile whose userId is someone's email never captures
    that person's erasure or export (README, "ID is any id"). Public endpoints, webhooks
    and bounces never call this: they know the kind of id they hold
    (`customers_with_identity`)."""
    ref = ref.strip()
    match = _CUSTOMER_REF.match(ref)
    if match:
        found = _follow(conn, int(match.group(1)))
        if found is None:
            raise CustomerNotFound(ref)
        return found
    kind, colon, value = ref.partition(":")
    if colon and value and _KIND.fullmatch(kind):
        found = _by_kind(conn, ref, kind.lower(), value, default_region)
        if found is not None:
            return found
    candidates: list[tuple[str, str]] = []
    email = identity_of("email", ref, default_region)
    if email:
        candidates.append(email)
    if _PHONE_TEXT.fullmatch(ref):
        phone = identity_of("phone", ref, default_region)
        if phone:
            candidates.append(phone)
    for kind, value in [*candidates, ("user_id", ref), ("anonymous_id", ref)]:
        found = _owner(conn, kind, value)
        if found is not None:
            return found
    raise CustomerNotFound(ref)


# `kind:value`: a kind is a word; a phone number is written with digits, spaces, `+`, `-`,
# `.`, `/` and brackets only (the phone parser alone would read `anonymous_id:0612345678`
# as a French number).
_KIND = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_PHONE_TEXT = re.compile(r"\+?[0-9 ().\-/]+")


def _owner(conn: Connection, kind: str, value: str) -> int | None:
    row = conn.execute(
        select(identities.c.customer_id).where(
            identities.c.kind == kind, identities.c.value == value
        )
    ).first()
    return None if row is None else int(row.customer_id)


def _by_kind(conn: Connection, ref: str, kind: str, value: str, default_region: str) -> int | None:
    """The customer of `kind:value` (an email or phone normalised), or of an unscoped
    external id held in one scope only (AmbiguousCustomer when several hold it)."""
    found = _owner(conn, *(identity_of(kind, value, default_region) or (kind, value)))
    if found is None and kind in SCOPED_KINDS and ":" not in value:
        found = _in_some_scope(conn, ref, kind, value)
    return found


def customers_with_identity(conn: Connection, kind: str, value: str) -> list[int]:
    """The live customers holding exactly this identity (normalised as stored: an email
    lowercased, a phone in E.164), merges followed, erased customers left out. The one
    lookup of public endpoints, webhooks and bounces, which know what kind of id they
    hold: a text is never tried as another kind, so a decoy id cannot capture it."""
    owners = conn.execute(
        select(identities.c.customer_id).where(
            identities.c.kind == kind, identities.c.value == value
        )
    ).scalars()
    return sorted(set(live_customers(conn, [int(owner) for owner in owners]).values()))


def has_user_id(conn: Connection, customer_id: int) -> bool:
    """Whether the brand knows this customer by one of its user ids (signed in once)."""
    return projection.holds_user_id(conn, customer_id)


def _in_some_scope(conn: Connection, ref: str, kind: str, value: str) -> int | None:
    rows = conn.execute(
        select(identities.c.value, identities.c.customer_id).where(
            identities.c.kind == kind,
            identities.c.value.like(f"%:{like_escape(value)}", escape=LIKE_ESCAPE),
        )
    ).all()
    owners = {int(row.customer_id) for row in rows}
    if len(owners) > 1:
        raise AmbiguousCustomer(ref, sorted(f"{kind}:{row.value}" for row in rows))
    return owners.pop() if owners else None


def _follow(conn: Connection, customer_id: int) -> int | None:
    for _ in range(100):
        row = conn.execute(
            select(customers.c.merged_into, customers.c.erased_at).where(
                customers.c.id == customer_id
            )
        ).first()
        if row is None:
            return None
        if row.merged_into is None:
            return customer_id
        customer_id = row.merged_into
    return None


def live_customers(conn: Connection, ids: Iterable[int]) -> dict[int, int]:
    """Each id mapped to the profile it stands for now: itself, or the profile it was
    merged into. Unknown and erased customers are left out. One query when none merged."""
    found: dict[int, int] = {}
    pending = {ident: ident for ident in set(ids)}  # asked -> where the search stands
    for _ in range(100):
        if not pending:
            break
        rows = projection.merge_states(conn, sorted(set(pending.values())))
        state = {int(ident): (merged_into, erased_at) for ident, merged_into, erased_at in rows}
        following: dict[int, int] = {}
        for asked, current in pending.items():
            if current not in state:
                continue
            merged_into, erased_at = state[current]
            if merged_into is not None:
                following[asked] = int(merged_into)
            elif erased_at is None:
                found[asked] = current
        pending = following
    return found


def traits_of(conn: Connection, ids: Iterable[int]) -> dict[int, JsonObject]:
    """The traits of each of these customers (free-form: what the brand sent), in one
    query per thousand."""
    return {
        int(ident): _decode(traits)
        for ident, traits in projection.stored_traits(conn, sorted(set(ids)))
    }


@dataclass(frozen=True)
class ConsentState:
    channel: str
    purpose: str
    status: str
    at: int
    source: str
    wording: str | None
    wording_version: str | None


def current_consents(conn: Connection, customer_id: int) -> list[ConsentState]:
    """The consent in force per channel and purpose: the latest change; at equal times a
    withdrawal wins over a grant."""
    return _in_force(projection.consent_changes(conn, customer_id))


def consents_in_force(
    conn: Connection, customer_ids: Sequence[int]
) -> dict[int, list[ConsentState]]:
    """`current_consents` of each of these customers, in one query."""
    ledgers = projection.consent_ledgers(conn, sorted(set(customer_ids)))
    return {customer: _in_force(ledger) for customer, ledger in ledgers.items()}


def _in_force(ledger: list[projection.ConsentRow]) -> list[ConsentState]:
    current: dict[tuple[str, str], projection.ConsentRow] = {}
    for row in ledger:
        key = (row.channel, row.purpose)
        held = current.get(key)
        if (
            held is None
            or row.occurred_at > held.occurred_at
            or (row.occurred_at == held.occurred_at and row.status == "withdrawn")
        ):
            current[key] = row
    return [
        ConsentState(
            r.channel, r.purpose, r.status, r.occurred_at, r.source, r.wording, r.wording_version
        )
        for _, r in sorted(current.items())
    ]


class KnownIdentity(msgspec.Struct, frozen=True):
    """One id the customer is known by (an email, a phone, a user id...)."""

    kind: str
    value: str


class ProfileConsent(msgspec.Struct, frozen=True):
    """The consent in force for a channel and a purpose, as the API shows it."""

    channel: str
    purpose: str
    status: str
    at: str | None
    source: str
    wording: str | None
    wording_version: str | None


class CustomerProfile(msgspec.Struct, frozen=True):
    """Everything the API shows about a customer (no event history): the traits as the
    brand sent them, the computed traits (`computed_view`), ids, consents, merged ids."""

    id: str
    created_at: str | None
    updated_at: str | None
    erased: bool
    traits: JsonObject
    trait_times: dict[str, str | None]
    identities: list[KnownIdentity]
    merged_from: list[str]
    consents: list[ProfileConsent]
    computed: JsonObject


def profile(conn: Connection, customer_id: int) -> CustomerProfile:
    """Everything the API shows about a customer (no event history)."""
    row = conn.execute(select(customers).where(customers.c.id == customer_id)).one()
    computed = _decode(row.computed)
    ident_rows = conn.execute(
        select(identities.c.kind, identities.c.value)
        .where(identities.c.customer_id == customer_id)
        .order_by(identities.c.kind, identities.c.value)
    ).all()
    merged_from = conn.execute(
        select(customers.c.id)
        .where(customers.c.merged_into == customer_id)
        .order_by(customers.c.id)
    ).scalars()
    trait_times = _decode(row.trait_times)
    return CustomerProfile(
        id=public_id(row.id),
        created_at=iso(row.created_at),
        updated_at=iso(row.updated_at),
        erased=row.erased_at is not None,
        traits=_decode(row.traits),
        trait_times={name: iso(at) for name, at in trait_times.items()},
        identities=[KnownIdentity(r.kind, r.value) for r in ident_rows],
        merged_from=[public_id(m) for m in merged_from],
        consents=[
            ProfileConsent(
                c.channel, c.purpose, c.status, iso(c.at), c.source, c.wording, c.wording_version
            )
            for c in current_consents(conn, customer_id)
        ],
        computed=computed_view(computed),
    )


# What conditions read about a customer is a document: the `profile` of the condition
# language's scope (runtime/conditions.py), read by path (`profile.traits.tier`,
# `profile.computed.country`), handed as such to journeys, segments and messaging's
# policies. Hence JsonObject.


def conditions_view(conn: Connection, customer_id: int) -> JsonObject:
    """What journey conditions and policies read about a customer, in one query: traits,
    computed traits, and the phone numbers (for the country of a customer without one).
    Straight through the driver: journeys call it at every step that looks at a profile."""
    traits, computed = traits_view(conn, customer_id)
    phones: list[dict[str, str]] = []
    if not computed.get("country"):
        phones = [
            {"kind": "phone", "value": value}
            for value in projection.phone_numbers(conn, customer_id)
        ]
    return {"traits": traits, "computed": computed, "identities": phones}


class TraitsView(NamedTuple):
    """The customer's traits (free-form) and computed traits (`computed_view`)."""

    traits: JsonObject
    computed: JsonObject


def traits_view(conn: Connection, customer_id: int) -> TraitsView:
    """The customer's traits and computed traits (what a message template sees), in one
    query."""
    row = projection.stored_profile(conn, customer_id)
    if row is None:
        raise CustomerNotFound(public_id(customer_id))
    traits, computed = row
    return TraitsView(_decode(traits), computed_view(_decode(computed)))


def condition_views(conn: Connection, customer_ids: Sequence[int]) -> dict[int, JsonObject]:
    """`conditions_view` of many customers at once, in two queries (segments evaluate
    customers in chunks; the journey engine reads those of a batch of steps). Merged and
    erased customers are left out."""
    rows = projection.stored_live_profiles(conn, list(customer_ids))
    views: dict[int, JsonObject] = {
        int(ident): {
            "traits": _decode(traits),
            "computed": computed_view(_decode(computed)),
            "identities": [],
        }
        for ident, traits, computed in rows
    }
    countryless = [ident for ident, view in views.items() if not view["computed"].get("country")]
    if countryless:
        for customer_id, value in projection.phones_of(conn, countryless):
            views[int(customer_id)]["identities"].append({"kind": "phone", "value": value})
    return views


def survivors(conn: Connection, customer_ids: Sequence[int]) -> dict[int, int]:
    """Of these customers, those merged into another, each with the profile that holds
    them now (the end of the chain of merges)."""
    found: dict[int, int] = {}
    for ident in sorted(merged_away(conn, customer_ids)):
        survivor = _follow(conn, ident)
        if survivor is not None and survivor != ident:
            found[ident] = survivor
    return found


def merged_away(conn: Connection, customer_ids: Sequence[int]) -> set[int]:
    """Those of these customers that were merged into another (the survivor has it all)."""
    found: set[int] = set()
    for part in chunks(list(customer_ids)):
        found.update(
            int(ident)
            for ident in conn.execute(
                select(customers.c.id).where(
                    customers.c.merged_into.is_not(None), customers.c.id.in_(part)
                )
            ).scalars()
        )
    return found


def with_merged(conn: Connection, customer_id: int) -> list[int]:
    """This customer and every customer merged into them, at any depth (what was recorded
    under an id before a merge stays under it)."""
    found, frontier = [customer_id], [customer_id]
    while frontier:
        frontier = list(
            conn.execute(
                select(customers.c.id).where(customers.c.merged_into.in_(frontier))
            ).scalars()
        )
        frontier = [int(c) for c in frontier if c not in found]
        found += frontier
    return found


def read_ahead_for_sends(conn: Connection, customer_ids: Sequence[int]) -> None:
    """For a set of jobs about to send to these customers: their contact points and
    consents, read at once (`contact_points` and `current_consents` take them)."""
    projection.read_ahead_for_sends(conn, customer_ids)


def read_ahead_profiles(conn: Connection, customer_ids: Sequence[int]) -> None:
    """For a set of jobs about to render messages for these customers: their traits and
    computed traits, read at once (`traits_view` takes them)."""
    projection.read_ahead_profiles(conn, customer_ids)


def contact_points(conn: Connection, customer_id: int) -> list[tuple[str, str]]:
    """(kind, value) of the customer's email addresses and phone numbers, newest first."""
    return projection.contacts(conn, customer_id)


def last_event_at(conn: Connection, customer_id: int, name: str, source: str) -> int | None:
    """When the customer last did `name` through `source` (e.g. wrote on WhatsApp)."""
    return log_queries.last_time_from(conn, customer_id, name, source)


def computed_view(computed: JsonObject) -> JsonObject:
    """The computed traits as conditions (`profile.computed`), templates and the API read
    them: the stored figures with money as text and times in ISO 8601."""
    country = computed.get("country")
    timezone = computed.get("timezone")
    timezone_source = "context" if timezone else None
    if not timezone and isinstance(country, str):
        timezone = zone_for_country(country)
        timezone_source = "country" if timezone else None
    return {
        "orders_count": computed.get("orders_count", 0),
        "revenue": {
            currency: {
                **figures,
                "total_spent": money_text(figures.get("total_spent"), currency),
                "average_order_value": money_text(figures.get("average_order_value"), currency),
            }
            for currency, figures in computed.get("revenue", {}).items()
        },
        "first_order_at": iso(computed.get("first_order_at")),
        "last_order_at": iso(computed.get("last_order_at")),
        "vip": bool(computed.get("vip", False)),
        "first_seen_at": iso(computed.get("first_seen_at")),
        "last_seen_at": iso(computed.get("last_seen_at")),
        "timezone": timezone,
        "timezone_source": timezone_source,
        "locale": computed.get("locale"),
        "country": country,
    }


def zone_for_country(country: str) -> str | None:
    """The main IANA zone of a country (its first in CLDR), e.g. FR -> Europe/Paris."""
    zones = get_global("territory_zones").get(country.upper())
    return str(zones[0]) if zones else None


class EventPage(msgspec.Struct):
    """A customer's events, newest first; `next_before` is the cursor of the next page."""

    customer_id: str
    events: list[JsonObject]
    next_before: int | None


def event_page(
    conn: Connection,
    customer_id: int,
    *,
    limit: int = 50,
    before: int | None = None,
    named: str | None = None,
    since: int | None = None,
    until: int | None = None,
) -> EventPage:
    """A page of the customer's events, newest first; the cursor is the last seq shown.
    Only those `named` (a track's name, or a call's type such as `identify`) that occurred
    from `since` and before `until` (ms), when given."""
    rows, cursor = log_queries.page_of(
        conn, customer_id, limit=limit, before=before, named=named, since=since, until=until
    )
    return EventPage(public_id(customer_id), [event_view(row) for row in rows], cursor)


@dataclass(frozen=True)
class OrderFigures:
    """A customer's order traits as commerce counts them (docs/commerce.md, "Traits from
    commerce"): money as exact decimal text per currency, times in milliseconds."""

    orders_count: int
    first_order_at: int | None
    last_order_at: int | None
    revenue: dict[str, dict[str, object]]  # currency -> orders, total_spent, average_order_value
    vip: bool


def record_order_figures(conn: Connection, figures: dict[int, OrderFigures]) -> None:
    """Store commerce's order traits in these customers' computed traits (the customers
    merged away meanwhile are left: their survivor is counted on its own). PostgreSQL:
    the rows are locked first, as the projection locks them."""
    changed: list[tuple[str, int]] = []
    for ident, stored in projection.computed_of(conn, figures):
        found = figures[int(ident)]
        computed = _decode(stored)
        computed.update(orders_count=found.orders_count, revenue=found.revenue, vip=found.vip)
        for name in ("first_order_at", "last_order_at"):
            value = getattr(found, name)
            if value is None:
                computed.pop(name, None)
            else:
                computed[name] = value
        encoded = _encode(computed).decode()
        if encoded != stored:  # a view of a product changes no order figure
            changed.append((encoded, ident))
    update_rows(conn, customers, ("computed",), "id", changed)  # one statement
    projection.note_computed(conn, {ident: encoded for encoded, ident in changed})


HAND_SOURCE = "console"  # the consent source of a change a person of the brand recorded


def record_consent_by_hand(
    db: Database,
    reactions: Reactions,
    customer_id: int,
    *,
    channel: str,
    purpose: str,
    status: str,
    reason: str,
    recorded_by: str,
    now_ms: int,
    also: Callable[[Connection, str], None] | None = None,
) -> str:
    """A consent change a person of the brand records for the customer (asked on the
    phone, by letter...): a `Consent Updated` appended through the log's door with its
    proof (source "console", the reason as its wording, who recorded it, when), in one
    transaction with `also` (the console's audit entry), given the event's message id.
    ConsentError for a channel, purpose or status the ledger does not know, or no reason.
    Returns the event's message id."""
    reason = " ".join(reason.split())[:1000]
    if not reason:
        raise consent.ConsentError("reason", "a consent recorded by hand needs its reason")
    properties = {
        "channel": channel,
        "purpose": purpose,
        "status": status,
        "source": HAND_SOURCE,
        "wording": reason,
        "reason": reason,
        "recorded_by": recorded_by,
    }
    consent.from_properties(properties)  # the ledger's checks, before anything is written
    message_id = f"consent-by-hand:{customer_id}:{uuid.uuid4().hex}"
    # Source "admin": a change made for the customer, not something they did (it does
    # not make them seen).
    event = internal_event(
        customer_id, consent.CONSENT_EVENT, properties, now_ms, message_id, "admin"
    )
    with db.write() as conn:
        append_events(conn, [[event]], now_ms, reactions)
        if also is not None:
            also(conn, message_id)
    return message_id


def event_view(row: log_queries.StoredEvent) -> JsonObject:
    """The event's document as it was sent (Segment's spec), with what the log adds: its
    message id, times, source and place in the log."""
    document = _decode(row.payload)
    if isinstance(document.get("properties"), dict):
        document["properties"] = own_event_properties(document["properties"], row.source)
    document["messageId"] = row.message_id
    document["type"] = row.type
    document["receivedAt"] = iso(row.received_at)
    document["occurredAt"] = iso(row.occurred_at)
    document["source"] = row.source
    document["seq"] = row.seq
    return dict(document)


# Columns other than `customer_id` that name a person: the export shows their rows, and
# an erase hook deletes them (tests/test_people.py checks that one does).
PERSON_COLUMNS: dict[str, tuple[str, ...]] = {
    "referral_conversions": ("referee_id", "referrer_id"),
}
# The profile row, shown on its own (and on erasure emptied and kept: merges and lookups
# point at it).
_KEPT = {"customers"}
_FIRST_TABLES = ("events", "identities", "consents")


def history(db: Database, ref: str, default_region: str) -> list[JsonObject]:
    """A person's events, oldest first, as the export shows them (what a simulation for
    this customer starts from)."""
    with db.read() as conn:
        customer_id = resolve(conn, ref, default_region)
        return [event_view(row) for row in log_queries.all_of(conn, customer_id)]


def export(db: Database, people: People, ref: str, default_region: str) -> JsonObject:
    """Everything held on a person, as one JSON-ready document: the profile, the consent
    ledger, the orders (as their keeper shows them, `people.orders`), the events, and the
    rows of every other table about them."""
    book = people.orders
    with db.read() as conn:
        customer_id = resolve(conn, ref, default_region)
        document: JsonObject = msgspec.to_builtins(profile(conn, customer_id))
        document["consent_ledger"] = [
            {
                "channel": r.channel,
                "purpose": r.purpose,
                "status": r.status,
                "at": iso(r.occurred_at),
                "recorded_at": iso(r.recorded_at),
                "source": r.source,
                "wording": r.wording,
                "wording_version": r.wording_version,
            }
            for r in conn.execute(
                select(consents)
                .where(consents.c.customer_id == customer_id)
                .order_by(consents.c.id)
            )
        ]
        document["orders"] = [] if book is None else book.exported(conn, customer_id)
        document["events"] = [event_view(row) for row in log_queries.all_of(conn, customer_id)]
        document["held_elsewhere"] = _held_elsewhere(
            conn, customer_id, set() if book is None else {book.orders_table}
        )
    return document


# In the export, left out: the platform's own work (jobs), and credentials (Wallet and push
# keys and tokens) that are no information about the person.
_NOT_EXPORTED_TABLES = {*_FIRST_TABLES, "jobs"}
_NOT_EXPORTED_COLUMNS = {"auth_token", "auth", "p256dh", "push_token"}


def _held_elsewhere(
    conn: Connection, customer_id: int, shown: set[str]
) -> dict[str, list[JsonObject]]:
    """Every other table's rows about the person (the tables erasure deletes from), by
    table: messages, journey runs, push subscriptions, Wallet passes, referral codes...
    (those `shown` are left out: the export shows them already)."""
    held: dict[str, list[JsonObject]] = {}
    for name, columns in _person_tables(conn):
        if name in _NOT_EXPORTED_TABLES or name in shown:
            continue
        rows: list[JsonObject] = []
        for person in columns:
            query: Select[tuple[object]] = (
                select(literal_column("*"))
                .select_from(table(name))
                .where(column(person) == customer_id)
            )
            rows += [
                {k: v for k, v in row._mapping.items() if k not in _NOT_EXPORTED_COLUMNS}
                for row in conn.execute(query)
            ]
        if rows:
            held[name] = rows
    return held


@dataclass(frozen=True)
class Erasure:
    customer_id: int
    events: int
    identities: int
    consents: int
    orders: int
    # Every other table's rows about the person: outbox, journey runs, jobs, push
    # subscriptions, Wallet passes and orders, referral codes, segment memberships...
    other: dict[str, int] = field(default_factory=dict)


def erase(
    db: Database,
    people: People,
    ref: str,
    default_region: str,
    now_ms: int,
    source: str,
    *,
    also: Callable[[Connection, Erasure], None] | None = None,
) -> Erasure:
    """Remove a person: their rows deleted from every package's tables (each package's
    erase hook, registered with `people`); the profile row (and those merged into it)
    emptied and marked erased; one audit event that holds no personal data. All in one
    transaction (with `also`, run in it: the console's audit entry)."""
    with db.write() as conn:
        customer_id = resolve(conn, ref, default_region)
        erased = erase_in(conn, people, customer_id, now_ms, source)
        if also is not None:
            also(conn, erased)
        return erased


def _person_tables(conn: Connection) -> list[tuple[str, tuple[str, ...]]]:
    """Each table (other than `customers`) with the columns that name a person in it,
    read from the database's schema once per connection (it only changes by migration,
    before anything runs): what the export shows."""
    cached: list[tuple[str, tuple[str, ...]]] | None = conn.info.get("parcours_person_tables")
    if cached is not None:
        return cached
    inspector = inspect(conn)
    found = []
    for name in inspector.get_table_names():
        if name in _KEPT:
            continue
        names = {found_column["name"] for found_column in inspector.get_columns(name)}
        wanted = ("customer_id", *PERSON_COLUMNS.get(name, ()))
        columns = tuple(person for person in wanted if person in names)
        if columns:
            found.append((name, columns))
    conn.info["parcours_person_tables"] = found
    return found


def erase_in(
    conn: Connection, people: People, customer_id: int, now_ms: int, source: str
) -> Erasure:
    """`erase` in the caller's transaction, for a customer already resolved."""
    family = [
        customer_id,
        *conn.execute(
            select(customers.c.id).where(customers.c.merged_into == customer_id)
        ).scalars(),
    ]
    counts = people.erase(conn, family)
    conn.execute(
        update(customers)
        .where(customers.c.id.in_(family))
        .values(traits="{}", trait_times="{}", computed="{}", erased_at=now_ms, updated_at=now_ms)
    )
    erasure = Erasure(
        customer_id,
        counts.pop("events", 0),
        counts.pop("identities", 0),
        counts.pop("consents", 0),
        counts.pop(people.orders.orders_table, 0) if people.orders is not None else 0,
        {table: n for table, n in counts.items() if n},
    )
    properties = {
        "customer_id": public_id(customer_id),
        "events_deleted": erasure.events,
        "identities_deleted": erasure.identities,
        "consents_deleted": erasure.consents,
        "orders_deleted": erasure.orders,
        "other_rows_deleted": erasure.other,
        "requested_by": source,
    }
    # What remains of the person: the fact of the erasure, through the log's one door.
    # Nothing reacts to it (no reactions are given): the person is gone.
    recorded = internal_event(
        customer_id, ERASED_EVENT, properties, now_ms, f"erase:{customer_id}:{now_ms}", "system"
    )
    append_events(conn, [[recorded]], now_ms, QUIET)
    return erasure


def ids_after(conn: Connection, after: int, limit: int) -> list[int]:
    """The next `limit` customers by id after `after` that were not merged into another
    (a batch that walks every profile, such as a segment's first evaluation)."""
    return [
        int(value)
        for value in conn.execute(
            select(customers.c.id)
            .where(customers.c.id > after, customers.c.merged_into.is_(None))
            .order_by(customers.c.id)
            .limit(limit)
        ).scalars()
    ]


def count_customers(conn: Connection) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(customers)
            .where(and_(customers.c.merged_into.is_(None), customers.c.erased_at.is_(None)))
        ).scalar_one()
    )


def new_since(conn: Connection, since_ms: int) -> int:
    """How many customers Parcours first saw at or after `since_ms` (merged away and erased
    ones left out)."""
    return int(
        conn.execute(
            select(func.count())
            .select_from(customers)
            .where(
                customers.c.created_at >= since_ms,
                customers.c.merged_into.is_(None),
                customers.c.erased_at.is_(None),
            )
        ).scalar_one()
    )


@dataclass(frozen=True)
class CustomerMatch:
    """A customer found by a search, with what tells them apart in a list."""

    customer_id: int
    public_id: str
    name: str
    email: str | None
    phone: str | None


SEARCHED_KINDS = ("email", "phone", "user_id", "anonymous_id")


def search(
    conn: Connection, text: str, default_region: str, limit: int = 20
) -> list[CustomerMatch]:
    """Customers by any id typed whole (as `resolve` reads it), by the start of an email,
    phone, user or anonymous id, or by a part of their name; live customers only (a
    merged id finds the survivor), at most `limit`."""
    text = text.strip()[:200]
    if not text:
        return []
    found: list[int] = []
    with suppress(CustomerNotFound):
        found.append(resolve(conn, text, default_region))
    prefix = text.lower()
    for kind in SEARCHED_KINDS:  # a range on the primary key (kind, value)
        start = prefix if kind != "phone" else text.replace(" ", "")
        found.extend(
            conn.execute(
                select(identities.c.customer_id)
                .where(
                    identities.c.kind == kind,
                    identities.c.value >= start,
                    identities.c.value < start + "\U0010ffff",
                )
                .order_by(identities.c.value)
                .limit(limit)
            ).scalars()
        )
    if len(found) < limit:  # the start of a word of a name: a range on the words' key
        query = folded(text)
        longest = max(words(text), key=len, default="")
        named: list[int] = []
        if longest:
            named = list(
                dict.fromkeys(
                    conn.execute(
                        select(customer_name_words.c.customer_id)
                        .where(
                            customer_name_words.c.word >= longest,
                            customer_name_words.c.word < longest + "\U0010ffff",
                        )
                        .order_by(
                            customer_name_words.c.word, customer_name_words.c.customer_id.desc()
                        )
                        .limit(limit * 5)
                    ).scalars()
                )
            )
        names = {ident: name_of(t) for ident, t in traits_of(conn, named).items()}
        found.extend(ident for ident in named if query in folded(names.get(ident, "")))
    live = live_customers(conn, found)
    ordered = list(dict.fromkeys(live[ident] for ident in found if ident in live))[:limit]
    traits = traits_of(conn, ordered)
    contacts: dict[int, dict[str, str]] = {ident: {} for ident in ordered}
    for row in conn.execute(
        select(identities.c.customer_id, identities.c.kind, identities.c.value).where(
            identities.c.customer_id.in_(ordered), identities.c.kind.in_(("email", "phone"))
        )
    ):
        contacts[int(row.customer_id)].setdefault(row.kind, row.value)
    return [
        CustomerMatch(
            ident,
            public_id(ident),
            name_of(traits.get(ident, {})),
            contacts[ident].get("email"),
            contacts[ident].get("phone"),
        )
        for ident in ordered
    ]
