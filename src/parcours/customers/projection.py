"""Applies new events to the customer projections, inside the writer's transaction.

One `Projector` per group of events: it resolves each event to a customer (merging
profiles when an event proves two are one person), then updates traits, computed traits
and the consent ledger, with a handful of statements for the whole group. The orders and
their traits are commerce's (docs/commerce.md, "One copy of the orders").
See docs/core.md for the rules.

The customers' raw SQL lives here (tests/test_house.py, RAW_SQL_HOMES): the projection's
own statements, and at the end the reads of a profile that run per journey step, per
message or per batch of jobs (customers/profiles.py shapes their answers).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from sqlalchemy import Connection, bindparam, insert, select, update

from parcours.customers import consent
from parcours.customers.identity import priority, traits_identities
from parcours.customers.names import name_of, write_name_words
from parcours.customers.tables import consents, customers, identities
from parcours.log import Event, IdentitiesFactory
from parcours.log import queries as log_queries
from parcours.runtime.db import (
    PerDatabase,
    chunks,
    forget_ahead,
    holds_writes,
    insert_rows,
    read_ahead,
    reading_ahead,
    select_in,
    send_ahead,
    sql,
    take_ahead,
    transaction_note,
    update_rows,
)

Key = tuple[str, str]
# The customer of each of these orders that is known to have one: (order id, customer id),
# answered by whoever keeps the orders (commerce, handed over by the composition root).
OrderOwners = Callable[[Connection, Sequence[str]], Iterable[tuple[str, int]]]

MERGE_EVENT = "Customers Merged"
# Events that do not show the customer doing anything (for last seen).
PASSIVE_SOURCES = frozenset({"system", "admin", "loyalty"})
DEFAULT_CURRENCY = "USD"

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


_OBSERVED_AT = {name: f"{name}_at" for name in ("timezone", "locale", "country")}


@dataclass
class Merge:
    survivor: int
    merged: int
    identity: Key
    cause: Event


@dataclass
class Profile:
    id: int
    created_at: int
    traits: dict[str, Any]
    trait_times: dict[str, int]
    computed: dict[str, Any]
    new: bool = False
    loaded_name: str = ""  # the name as it was read, to know whether its words change

    def set_trait(self, name: str, value: Any, at: int) -> None:
        previous = self.trait_times.get(name)
        if previous is None or at >= previous:
            self.traits[name] = value
            self.trait_times[name] = at

    def observe(self, name: str, value: Any, at: int) -> None:
        """A computed value read from context, kept if it is the newest seen."""
        at_name = _OBSERVED_AT.get(name) or f"{name}_at"
        previous = self.computed.get(at_name)
        if previous is None or at >= previous:
            self.computed[name] = value
            self.computed[at_name] = at

    def absorb(self, other: Profile) -> None:
        """Take every trait of a merged profile; the newer value of each wins."""
        for name, value in other.traits.items():
            self.set_trait(name, value, other.trait_times.get(name, 0))
        for name in ("timezone", "locale", "country"):
            if name in other.computed:
                self.observe(name, other.computed[name], other.computed.get(f"{name}_at", 0))
        for name, pick in (("first_seen_at", min), ("last_seen_at", max)):
            values = [p.computed[name] for p in (self, other) if name in p.computed]
            if values:
                self.computed[name] = pick(values)
        self.created_at = min(self.created_at, other.created_at)


_OWNERS_AT_ONCE = 5_000  # identities looked up by one statement (PostgreSQL)
# PostgreSQL: the stored identities among the keys given as two arrays, :kinds and :values.
_OWNERS_OF_KEYS = (
    "SELECT i.kind, i.value, i.customer_id FROM identities i "
    "JOIN unnest(CAST(:kinds AS text[]), CAST(:values AS text[])) AS k(kind, value) "
    "ON i.kind = k.kind AND i.value = k.value"
)


class Projector:
    def __init__(
        self,
        conn: Connection,
        *,
        now_ms: int,
        default_region: str,
        order_owners: OrderOwners | None = None,
    ) -> None:
        self.conn = conn
        self.order_owners = order_owners
        self.now = now_ms
        self.region = default_region
        self.is_sqlite = conn.dialect.name == "sqlite"
        self.owner: dict[Key, int] = {}
        self.assigned: list[Key] = []
        self.parent: dict[int, int] = {}
        self.user_ids: dict[int, set[str]] = {}
        self.new_customers: set[int] = set()
        self.merges: list[Merge] = []
        self._id_pool: list[int] = []
        # Ids are taken (from the process's reserve on PostgreSQL, `_Reserve`) as many as
        # the group's new people look like (`_people_unknown`), then twice as many each
        # time, up to 256.
        self._pool_size = 32
        self._highest: int | None = None
        # The writer's: what the profiles were read ahead by (`read_ahead`).
        self._profiles_ahead: tuple[list[Key], list[int]] | None = None

    # ---- identity -------------------------------------------------------------------

    def keys_of(self, event: Event) -> list[Key]:
        """The event's identities, normalised (computed once per event)."""
        return event_keys(event, self.region)

    def read_ahead(self, events: list[Event]) -> None:
        """In the writer's transaction (PostgreSQL): the owners of these events'
        identities, and the profiles of those owners and of the customers the events name
        (read and locked), sent now and answered with the transaction's next read
        (`runtime.db.send_ahead`): `resolve` and `project` of the same events take them."""
        if self.is_sqlite:
            return
        wanted = self._wanted(events)
        send_ahead(self.conn, self._load_owners_at_once, wanted)
        if holds_writes(self.conn) and len(wanted) <= _OWNERS_AT_ONCE:
            named = sorted({e.customer_id for e in events if e.customer_id is not None})
            self._profiles_ahead = (sorted(wanted), named)
            send_ahead(self.conn, self._owned_profile_rows, *self._profiles_ahead)

    def _wanted(self, events: list[Event]) -> set[Key]:
        """The identities these events name (an alias's previous id as either kind)."""
        wanted = {key for event in events for key in self.keys_of(event)}
        for event in events:
            if event.type == "alias" and event.previous_id:
                wanted |= set(_alias_keys(event.previous_id))
        return wanted

    def resolve(self, events: list[Event]) -> list[Event]:
        """Give every event its customer; return the merge events to append with them."""
        keyed = [(event, self.keys_of(event)) for event in events]
        self._load_owners(self._wanted(events))
        if not self.is_sqlite:  # SQLite counts its ids in process: nothing to size
            self._pool_size = max(1, self._people_unknown(keyed))
        for event, keys in keyed:
            if event.customer_id is not None:
                continue  # addressed to a known customer (admin API)
            if event.type == "alias":
                event.customer_id = self._resolve_alias(event, keys)
            else:
                event.customer_id = self._resolve_one(event, keys)
        if self.parent:  # merges in this group: point every event at the survivor
            for event in events:
                if event.customer_id is not None:
                    event.customer_id = self._find(event.customer_id)
        self._attribute_by_order(events)
        self._write_identities()
        return self._merge_events()

    def _people_unknown(self, keyed: list[tuple[Event, list[Key]]]) -> int:
        """How many new customers the events will make, as far as can be told before
        resolving them: the events of which no identity is known, those that share one
        counted once (exact unless the group's events also merge people)."""
        seen: set[Key] = set()
        count = 0
        for event, keys in keyed:
            if event.type == "alias" and event.previous_id:
                keys = keys + _alias_keys(event.previous_id)
            if event.customer_id is not None or not keys:
                continue
            if any(key in self.owner for key in keys):
                continue
            if not seen.intersection(keys):
                count += 1
            seen.update(keys)
        return count

    def _attribute_by_order(self, events: list[Event]) -> None:
        """An event that names no person but names an order (a refund, a shipment) belongs
        to the customer who placed that order: placed earlier in this group, else as the
        orders' keeper knows it."""
        by_order: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            if event.customer_id is None:
                order_id = _text_id(event.properties.get("order_id"))
                if order_id:
                    by_order[order_id].append(event)
        if not by_order:
            return
        placed: dict[str, int] = {}
        for event in events:
            if event.customer_id is not None and event.name == "Order Completed":
                placed.setdefault(order_key(event.properties, event.message_id), event.customer_id)
        stored = [order_id for order_id in by_order if order_id not in placed]
        if stored and self.order_owners is not None:
            for order_id, customer in self.order_owners(self.conn, stored):
                placed.setdefault(order_id, int(customer))
        for order_id, customer in placed.items():
            for event in by_order.get(order_id, ()):
                event.customer_id = self._find(customer)

    def _resolve_one(self, event: Event, keys: list[Key]) -> int | None:
        if not keys:
            return None
        owner = self.owner.get(keys[0])
        if owner is not None:
            for key in keys[1:]:
                if self.owner.get(key) != owner:
                    break
            else:  # the usual case: every identity already known, one person
                return self._find(owner)
        user_id = event.user_id
        candidates = self._owners_by_priority(keys)
        target: int | None = None
        if user_id and ("user_id", user_id) in self.owner:
            target = self._find(self.owner[("user_id", user_id)])
        if target is None:
            target = next((c for c in candidates if self._compatible(c, user_id)), None)
        if target is None:
            target = self._new_customer()
        for candidate, key in candidates.items():
            candidate = self._find(candidate)
            if (
                candidate != target
                and self._compatible(candidate, user_id)
                and self._mergeable(target, candidate)
            ):
                target = self._merge(target, candidate, key, event)
        for key in keys:
            if key not in self.owner:
                self._assign(key, target)
        return target

    def _resolve_alias(self, event: Event, keys: list[Key]) -> int:
        assert event.user_id and event.previous_id
        allowed = {event.user_id, event.previous_id}
        uid_key = ("user_id", event.user_id)
        target = self._find(self.owner[uid_key]) if uid_key in self.owner else None
        previous = self._owners_by_priority(_alias_keys(event.previous_id))
        for candidate, key in previous.items():
            candidate = self._find(candidate)
            if target is None:
                if self._uids(candidate) <= allowed:
                    target = candidate
            elif (
                candidate != target
                and self._mergeable(target, candidate)
                and (self._uids(candidate) | self._uids(target)) <= allowed
            ):
                # Never two customers who each carry a userId of their own: the public
                # write key could otherwise make one signed-in person of two.
                target = self._merge(target, candidate, key, event)
        if target is None:
            target = self._new_customer()
        if not previous:
            # An id never seen before becomes one of this person's ids.
            self._assign(("anonymous_id", event.previous_id), target)
        for key in keys:
            if key not in self.owner:
                self._assign(key, target)
        return target

    def _owners_by_priority(self, keys: Iterable[Key]) -> dict[int, Key]:
        owned = sorted(
            ((key, self._find(self.owner[key])) for key in keys if key in self.owner),
            key=lambda pair: priority(pair[0][0]),
        )
        found: dict[int, Key] = {}
        for key, customer in owned:
            found.setdefault(customer, key)
        return found

    def _compatible(self, customer: int, user_id: str | None) -> bool:
        return user_id is None or self._uids(customer) <= {user_id}

    def _mergeable(self, a: int, b: int) -> bool:
        ua, ub = self._uids(a), self._uids(b)
        return not ua or not ub or ua == ub

    def _merge(self, a: int, b: int, key: Key, cause: Event) -> int:
        survivor, merged = min(a, b), max(a, b)
        self.parent[merged] = survivor
        self.user_ids[survivor] = self._uids(survivor) | self._uids(merged)
        self.merges.append(Merge(survivor, merged, key, cause))
        return survivor

    def _find(self, customer: int) -> int:
        while customer in self.parent:
            customer = self.parent[customer]
        return customer

    def _uids(self, customer: int) -> set[str]:
        customer = self._find(customer)
        if customer not in self.user_ids:
            rows = self.conn.execute(
                select(identities.c.value).where(
                    identities.c.kind == "user_id", identities.c.customer_id == customer
                )
            ).scalars()
            self.user_ids[customer] = set(rows)
        return self.user_ids[customer]

    def _assign(self, key: Key, customer: int) -> None:
        if key[0] == "user_id":
            self._uids(customer).add(key[1])
        self.owner[key] = customer
        self.assigned.append(key)

    def _new_customer(self) -> int:
        if not self._id_pool:
            self._id_pool = self._allocate_ids(self._pool_size)[::-1]
            self._pool_size = min(256, self._pool_size * 2)
        customer = self._id_pool.pop()
        self.new_customers.add(customer)
        self.user_ids[customer] = set()
        return customer

    def _allocate_ids(self, count: int) -> list[int]:
        if self.is_sqlite:
            # BEGIN IMMEDIATE made this the only writer: the next ids are ours.
            if self._highest is None:
                self._highest = int(
                    self.conn.exec_driver_sql(
                        "SELECT coalesce(max(id), 0) FROM customers"
                    ).scalar_one()
                )
            start = self._highest + 1
            self._highest += count
            return list(range(start, start + count))
        return _RESERVE.take(self.conn, count)

    def _load_owners(self, keys: set[Key]) -> None:
        if not self.is_sqlite:
            self._load_owners_at_once(keys)
            return
        by_kind: dict[str, list[str]] = defaultdict(list)
        for kind, value in keys:
            by_kind[kind].append(value)
        for kind, values in by_kind.items():
            rows = select_in(
                self.conn,
                "SELECT value, customer_id FROM identities "
                "WHERE kind = {mark} AND value IN ({marks})",
                values,
                (kind,),
            )
            for value, customer in rows:
                self.owner[(kind, value)] = customer
        owners = sorted(set(self.owner.values()))
        for customer in owners:
            self.user_ids[customer] = set()
        rows = select_in(
            self.conn,
            "SELECT customer_id, value FROM identities "
            "WHERE kind = 'user_id' AND customer_id IN ({marks})",
            owners,
        )
        for customer, value in rows:
            self.user_ids[customer].add(value)

    def _load_owners_at_once(self, keys: set[Key]) -> None:
        """PostgreSQL: the owners of these keys and the user ids each owner holds, in one
        statement (a statement per kind, then one for the user ids, was a round trip
        each). The owners go to the second part as an array: an index probe per owner,
        where `IN (SELECT ...)` planned a join that cost twice as much."""
        for part in chunks(sorted(keys), _OWNERS_AT_ONCE):
            found = sql(
                self.conn,
                f"WITH found AS MATERIALIZED ({_OWNERS_OF_KEYS}) "
                "SELECT kind, value, customer_id FROM found UNION ALL "
                "SELECT NULL, value, customer_id FROM identities WHERE kind = 'user_id' "
                "AND customer_id = ANY(ARRAY(SELECT customer_id FROM found))",
                {"kinds": [k for k, _ in part], "values": [v for _, v in part]},
            )
            user_ids: list[tuple[int, str]] = []
            for kind, value, customer in found.all():
                if kind is None:
                    user_ids.append((customer, value))
                else:
                    self.owner[(kind, value)] = customer
                    self.user_ids.setdefault(customer, set())
            for customer, value in user_ids:
                self.user_ids[customer].add(value)

    def _write_identities(self) -> None:
        insert_rows(
            self.conn,
            identities,
            ("kind", "value", "customer_id", "created_at"),
            [
                (kind, value, self._find(self.owner[(kind, value)]), self.now)
                for kind, value in self.assigned
            ],
        )
        for merge in self.merges:
            if merge.merged in self.new_customers:
                continue
            survivor = self._find(merge.merged)
            params = {"old": merge.merged, "new": survivor}
            # The customers' own rows move here, as the profile is derived from them;
            # every other package's (events included) move in its merge hook, when the
            # merge event is appended (customers.people).
            for table in (identities, consents):
                self.conn.execute(
                    update(table)
                    .where(table.c.customer_id == bindparam("old"))
                    .values(customer_id=bindparam("new")),
                    params,
                )
            self.conn.execute(
                update(customers)
                .where(customers.c.merged_into == bindparam("old"))
                .values(merged_into=bindparam("new")),
                params,
            )

    def _merge_events(self) -> list[Event]:
        produced: list[Event] = []
        for number, merge in enumerate(self.merges):
            if merge.merged in self.new_customers:
                continue  # created and merged within this group: nobody ever saw it
            survivor = self._find(merge.survivor)
            properties = {
                "survivor_id": survivor,
                "merged_id": merge.merged,
                "reason": f"{merge.cause.type} {merge.cause.message_id} shares this identity",
                "identity": {"kind": merge.identity[0], "value": merge.identity[1]},
            }
            message_id = f"merge:{merge.cause.message_id}:{number}"
            document = {
                "type": "track",
                "event": MERGE_EVENT,
                "messageId": message_id,
                "properties": properties,
            }
            produced.append(
                Event(
                    message_id=message_id,
                    type="track",
                    name=MERGE_EVENT,
                    user_id=None,
                    anonymous_id=None,
                    properties=properties,
                    traits={},
                    context={},
                    occurred_at=merge.cause.occurred_at,
                    received_at=self.now,
                    timestamp=None,
                    sent_at=None,
                    source="system",
                    payload=_encode(document).decode(),
                    customer_id=survivor,
                )
            )
        return produced

    # ---- profiles -------------------------------------------------------------------

    def project(self, events: list[Event]) -> None:
        """Update traits, computed traits and consents for these (new) events."""
        ledger: list[dict[str, Any]] = []
        for event in events:
            if event.customer_id is not None:
                self._collect(event, ledger)
        survivors = {self._find(m.survivor) for m in self.merges}
        wanted = {e.customer_id for e in events if e.customer_id is not None}
        wanted |= survivors
        merged_in_db = {m.merged for m in self.merges if m.merged not in self.new_customers}
        profiles = self._load_profiles(wanted | merged_in_db)
        for merge in self.merges:
            if merge.merged in profiles and merge.merged not in self.new_customers:
                profiles[self._find(merge.merged)].absorb(profiles.pop(merge.merged))
        for event in events:
            if event.customer_id is not None:
                _apply(profiles[event.customer_id], event)
        if ledger:
            self.conn.execute(insert(consents), ledger)  # rare: SQLAlchemy's executemany is fine
        # Consents changed, or moved by a merge: a set's sends read them again from here on.
        for customer in {row["customer_id"] for row in ledger} | survivors | merged_in_db:
            forget_ahead(self.conn, _CONSENTS_AHEAD, customer)
        self._write_profiles(profiles, merged_in_db)

    def _collect(self, event: Event, ledger: list[dict[str, Any]]) -> None:
        customer = event.customer_id
        assert customer is not None
        changes: list[consent.ConsentChange] = []
        if event.type == "identify" and "consent" in event.traits:
            changes = consent.from_trait(event.traits["consent"])
        elif event.type == "track" and event.name == consent.CONSENT_EVENT:
            changes = [consent.from_properties(event.properties)]
        for change in changes:
            ledger.append(
                {
                    "customer_id": customer,
                    "channel": change.channel,
                    "purpose": change.purpose,
                    "status": change.status,
                    "occurred_at": event.occurred_at,
                    "recorded_at": self.now,
                    "source": change.source or event.source,
                    "wording": change.wording,
                    "wording_version": change.wording_version,
                    "message_id": event.message_id,
                }
            )

    def _profile_rows(self, ids: list[int]) -> list[Any]:
        """The stored profiles of these customers. PostgreSQL: the rows are locked until
        commit, in id order, so that two transactions projecting onto one customer (the
        writer with an identify, a worker with a message's status) take turns instead of
        one overwriting the other's change. SQLite has one writer at a time anyway."""
        lock = "" if self.is_sqlite else " ORDER BY id FOR UPDATE"
        return select_in(
            self.conn,
            "SELECT id, created_at, traits, trait_times, computed FROM customers "
            "WHERE id IN ({marks})" + lock,
            ids,
        )

    def _owned_profile_rows(self, keys: list[Key], named: list[int]) -> list[Any]:
        """PostgreSQL: the stored profiles of the owners of these identities and of these
        customers, locked as `_profile_rows` locks them."""
        return sql(
            self.conn,
            "SELECT id, created_at, traits, trait_times, computed FROM customers "
            "WHERE id = ANY(ARRAY(SELECT customer_id FROM "
            f"({_OWNERS_OF_KEYS}) AS owned) || CAST(:named AS bigint[])) "
            "ORDER BY id FOR UPDATE",
            {"kinds": [k for k, _ in keys], "values": [v for _, v in keys], "named": named},
        ).all()

    def _load_profiles(self, ids: set[int]) -> dict[int, Profile]:
        profiles: dict[int, Profile] = {}
        wanted = ids - self.new_customers
        rows: list[Any] | None = None
        if self._profiles_ahead is not None:
            # Read with the group's first statement (`read_ahead`): its people, and perhaps
            # a few more (locked as well: owners of identities an event did not end with).
            ahead = self._owned_profile_rows(*self._profiles_ahead)
            self._profiles_ahead = None
            if wanted.issubset(row[0] for row in ahead):
                rows = [row for row in ahead if row[0] in wanted]
        if rows is None:
            rows = self._profile_rows(sorted(wanted))
        for ident, created_at, traits, trait_times, computed in rows:
            decoded = _decode(traits)
            profiles[ident] = Profile(
                ident,
                created_at,
                decoded,
                _decode(trait_times),
                _decode(computed),
                loaded_name=name_of(decoded),
            )
        for customer in ids:
            if customer not in profiles:
                profiles[customer] = Profile(customer, self.now, {}, {}, {}, new=True)
        return profiles

    def _write_profiles(self, profiles: dict[int, Profile], merged: set[int]) -> None:
        fresh = [p for p in profiles.values() if p.new]
        known = [p for p in profiles.values() if not p.new]
        insert_rows(
            self.conn,
            customers,
            ("id", "created_at", "updated_at", "traits", "trait_times", "computed"),
            [
                (
                    p.id,
                    p.created_at,
                    self.now,
                    _json(p.traits),
                    _json(p.trait_times),
                    _json(p.computed),
                )
                for p in fresh
            ],
        )
        update_rows(
            self.conn,
            customers,
            ("created_at", "updated_at", "traits", "trait_times", "computed"),
            "id",
            [
                (
                    p.created_at,
                    self.now,
                    _json(p.traits),
                    _json(p.trait_times),
                    _json(p.computed),
                    p.id,
                )
                for p in known
            ],
        )
        update_rows(
            self.conn,
            customers,
            ("merged_into", "updated_at", "traits", "trait_times", "computed"),
            "id",
            [(self._find(m), self.now, "{}", "{}", "{}", m) for m in sorted(merged)],
        )
        if holds_writes(self.conn):
            written = transaction_note(self.conn, _COMPUTED_WRITTEN)
            written.update((p.id, _json(p.computed)) for p in profiles.values())
            for m in merged:
                written.pop(m, None)
        named = {p.id: name_of(p.traits) for p in profiles.values()}
        renamed = {p.id: named[p.id] for p in profiles.values() if named[p.id] != p.loaded_name}
        write_name_words(self.conn, renamed | dict.fromkeys(merged, ""))


def event_keys(event: Event, default_region: str) -> list[Key]:
    """The event's identities, normalised: user id, anonymous id, external ids, and the
    email and phone of its traits. Kept on the event (`Event.identities`)."""
    if event.identities is not None:
        return event.identities
    keys: list[Key] = []
    if event.user_id:
        keys.append(("user_id", event.user_id))
    if event.anonymous_id:
        keys.append(("anonymous_id", event.anonymous_id))
    ids_only = len(keys)  # a user id and an anonymous id cannot repeat each other
    keys.extend(event.external_ids)
    context_traits = event.context.get("traits")
    if context_traits and isinstance(context_traits, dict):
        keys.extend(traits_identities(context_traits, default_region))
    if event.type == "identify":
        keys.extend(traits_identities(event.traits, default_region))
    if len(keys) > ids_only:
        keys = list(dict.fromkeys(keys))
    event.identities = keys
    return keys


def _apply(profile: Profile, event: Event) -> None:
    at = event.occurred_at
    computed = profile.computed
    if event.source not in PASSIVE_SOURCES:
        if at > computed.get("last_seen_at", at - 1):
            computed["last_seen_at"] = at
        if at < computed.get("first_seen_at", at + 1):
            computed["first_seen_at"] = at
    context = event.context
    context_traits = context.get("traits")
    if context_traits and isinstance(context_traits, dict):
        for name, value in context_traits.items():
            profile.set_trait(name, value, at)
    identify = event.type == "identify"
    if identify:
        for name, value in event.traits.items():
            if name != "consent":
                profile.set_trait(name, value, at)
    timezone = context.get("timezone")
    if (
        timezone
        and isinstance(timezone, str)
        and (timezone == computed.get("timezone") or _is_zone(timezone))
    ):
        profile.observe("timezone", timezone, at)
    locale = context.get("locale")
    if locale and isinstance(locale, str) and locale.strip():
        profile.observe("locale", locale.strip(), at)
    if "location" in context or context_traits or identify:
        country = _country_of(event)
        if country:
            profile.observe("country", country, at)


def _country_of(event: Event) -> str | None:
    candidates: list[Any] = []
    location = event.context.get("location")
    if isinstance(location, dict):
        candidates.append(location.get("country"))
    for traits in (event.traits if event.type == "identify" else {}, event.context.get("traits")):
        if traits and isinstance(traits, dict):
            address = traits.get("address")
            if isinstance(address, dict):
                candidates.append(address.get("country"))
            candidates.append(traits.get("country"))
    for candidate in candidates:
        if isinstance(candidate, str) and candidate.strip():
            value = candidate.strip()
            return value.upper() if len(value) == 2 else value
    return None


def order_key(props: dict[str, Any], message_id: str) -> str:
    """The id an order counts under: its `order_id`, else the event's own id."""
    return _text_id(props.get("order_id")) or message_id


def order_total(props: dict[str, Any]) -> Decimal:
    """An order event's amount: `total`, else `revenue`, else the products' prices."""
    for name in ("total", "revenue"):
        value = decimal_of(props.get(name))
        if value is not None:
            return value
    products = props.get("products")
    total = Decimal(0)
    if isinstance(products, list):
        for product in products:
            if isinstance(product, dict):
                price = decimal_of(product.get("price")) or Decimal(0)
                quantity = decimal_of(product.get("quantity")) or Decimal(1)
                total += price * quantity
    return total


def decimal_of(value: Any) -> Decimal | None:
    """An exact decimal from a number or text; None when it is not one."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _text_id(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    text_value = str(value).strip()
    return text_value or None


def _alias_keys(previous_id: str) -> list[Key]:
    return [("user_id", previous_id), ("anonymous_id", previous_id)]


def _is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _json(value: Any) -> str:
    return _encode(value).decode()


def stored_event(row: log_queries.StoredEvent) -> Event:
    """An event as the log holds it (a row of `events`), for derive_profile and event_keys."""
    document = _decode(row.payload)
    properties = document.get("properties")
    traits = document.get("traits")
    context = document.get("context")
    return Event(
        message_id=row.message_id,
        type=row.type,
        name=row.name,
        user_id=row.user_id,
        anonymous_id=row.anonymous_id,
        properties=properties if isinstance(properties, dict) else {},
        traits=traits if isinstance(traits, dict) else {},
        context=context if isinstance(context, dict) else {},
        occurred_at=row.occurred_at,
        received_at=row.received_at,
        timestamp=row.timestamp,
        sent_at=row.sent_at,
        source=row.source,
        payload=row.payload,
        customer_id=row.customer_id,
        external_ids=_stored_external_ids(context),
    )


def _stored_external_ids(context: Any) -> list[Key]:
    items = context.get("externalIds") if isinstance(context, dict) else None
    return [
        (item["type"].strip().lower(), str(item["id"]))
        for item in items or []
        if isinstance(item, dict) and isinstance(item.get("type"), str) and "id" in item
    ]


def derive_profile(customer_id: int, created_at: int, events: Iterable[Event]) -> Profile:
    """The profile the projection would hold had only these events been recorded (in
    their order of arrival), order traits aside (the orders' keeper counts them): used
    when part of what was known about a person is taken away (customers/origins.py)."""
    profile = Profile(customer_id, created_at, {}, {}, {})
    for event in events:
        _apply(profile, event)
    return profile


def identity_resolver(
    default_region: str, order_owners: OrderOwners | None = None
) -> IdentitiesFactory:
    """The log's identities (log/reactions.py): a Projector for each append, resolving ids
    written without a country in `default_region`, and an event that names only an order
    to its customer (`order_owners`: whoever keeps the orders; without it, the group's
    own orders only)."""

    def for_append(conn: Connection, now_ms: int) -> Projector:
        return Projector(
            conn, now_ms=now_ms, default_region=default_region, order_owners=order_owners
        )

    return for_append


# ---- the profile as the hot paths read it ----------------------------------------------------
# Per journey step, per message sent, per batch of referral or segment jobs: straight
# through the driver (runtime/db.py, `sql`: SQLAlchemy's own cost per statement is many
# times the database's here). customers/profiles.py turns the rows into its answers.


def holds_user_id(conn: Connection, customer_id: int) -> bool:
    """Whether one of the customer's identities is a user id."""
    return (
        sql(
            conn,
            "SELECT 1 FROM identities WHERE customer_id = :c AND kind = 'user_id' LIMIT 1",
            {"c": customer_id},
        ).first()
        is not None
    )


def merge_states(
    conn: Connection, customer_ids: Sequence[int]
) -> list[tuple[int, int | None, int | None]]:
    """(id, merged_into, erased_at) of each of these customers that exists."""
    return select_in(
        conn,
        "SELECT id, merged_into, erased_at FROM customers WHERE id IN ({marks})",
        customer_ids,
    )


def stored_traits(conn: Connection, customer_ids: Sequence[int]) -> list[tuple[int, str]]:
    """(id, traits as stored JSON) of each of these customers."""
    return select_in(conn, "SELECT id, traits FROM customers WHERE id IN ({marks})", customer_ids)


class ConsentRow(NamedTuple):
    channel: str
    purpose: str
    status: str
    occurred_at: int
    source: str
    wording: str | None
    wording_version: str | None


def consent_changes(conn: Connection, customer_id: int) -> list[ConsentRow]:
    """The customer's consent ledger, in the order the changes happened. Read ahead for a
    set of sends, it is kept for every read of the set (a send reads it to choose its
    channel, then its policies read it again) until the set writes what it held, or a
    profile of the customer is projected."""
    ahead: list[ConsentRow] | None = take_ahead(conn, _CONSENTS_AHEAD, customer_id, keep=True)
    if ahead is not None:
        return ahead
    rows = sql(
        conn,
        "SELECT channel, purpose, status, occurred_at, source, wording, wording_version "
        "FROM consents WHERE customer_id = :id ORDER BY occurred_at, id",
        {"id": customer_id},
    ).all()
    return [ConsentRow(*row) for row in rows]


def phone_numbers(conn: Connection, customer_id: int) -> list[str]:
    """The customer's phone numbers."""
    return sql(
        conn,
        "SELECT value FROM identities WHERE customer_id = :id AND kind = 'phone'",
        {"id": customer_id},
    ).scalars()


def stored_profile(conn: Connection, customer_id: int) -> tuple[str, str] | None:
    """(traits, computed) of the customer as stored JSON; None for no such customer."""
    ahead: tuple[str, str] | None = take_ahead(conn, _PROFILES_AHEAD, customer_id)
    if ahead is not None:
        return ahead
    row = sql(
        conn, "SELECT traits, computed FROM customers WHERE id = :id", {"id": customer_id}
    ).first()
    return None if row is None else (row.traits, row.computed)


def stored_live_profiles(
    conn: Connection, customer_ids: Sequence[int]
) -> list[tuple[int, str, str]]:
    """(id, traits, computed) as stored JSON of those of these customers neither merged
    nor erased."""
    return select_in(
        conn,
        "SELECT id, traits, computed FROM customers WHERE merged_into IS NULL "
        "AND erased_at IS NULL AND id IN ({marks})",
        customer_ids,
    )


def phones_of(conn: Connection, customer_ids: Sequence[int]) -> list[tuple[int, str]]:
    """(customer_id, phone number) of these customers' phone numbers."""
    return select_in(
        conn,
        "SELECT customer_id, value FROM identities WHERE kind = 'phone' "
        "AND customer_id IN ({marks})",
        customer_ids,
    )


_CONSENTS_AHEAD = "customers.consents"
_CONTACTS_AHEAD = "customers.contacts"
_PROFILES_AHEAD = "customers.profiles"


def read_ahead_profiles(conn: Connection, customer_ids: Sequence[int]) -> None:
    """For a set of jobs about to render messages for these customers: their stored
    profiles, one query for all of them (`stored_profile` takes them). Nothing when no
    set runs."""
    if not customer_ids or not reading_ahead(conn):
        return
    found = select_in(
        conn, "SELECT id, traits, computed FROM customers WHERE id IN ({marks})", customer_ids
    )
    read_ahead(
        conn, _PROFILES_AHEAD, {int(ident): (traits, computed) for ident, traits, computed in found}
    )


def read_ahead_for_sends(conn: Connection, customer_ids: Sequence[int]) -> None:
    """For a set of jobs about to send to these customers: their contact points and
    consent ledgers, two queries for all of them (`contacts`, `consent_changes` take
    them). Nothing when no set runs."""
    if not customer_ids or not reading_ahead(conn):
        return
    contacts_of: dict[int, list[tuple[str, str]]] = {c: [] for c in customer_ids}
    for customer, kind, value in select_in(
        conn,
        "SELECT customer_id, kind, value FROM identities WHERE kind IN ('email', 'phone') "
        "AND customer_id IN ({marks}) ORDER BY customer_id, created_at DESC, value",
        customer_ids,
    ):
        contacts_of[int(customer)].append((kind, value))
    read_ahead(conn, _CONTACTS_AHEAD, contacts_of)
    read_ahead(conn, _CONSENTS_AHEAD, consent_ledgers(conn, customer_ids))


def consent_ledgers(conn: Connection, customer_ids: Sequence[int]) -> dict[int, list[ConsentRow]]:
    """These customers' consent ledgers, each in the order the changes happened: one
    query for all of them."""
    ledgers: dict[int, list[ConsentRow]] = {c: [] for c in customer_ids}
    for customer, *change in select_in(
        conn,
        "SELECT customer_id, channel, purpose, status, occurred_at, source, wording, "
        "wording_version FROM consents WHERE customer_id IN ({marks}) "
        "ORDER BY customer_id, occurred_at, id",
        customer_ids,
    ):
        ledgers[int(customer)].append(ConsentRow(*change))
    return ledgers


def contacts(conn: Connection, customer_id: int) -> list[tuple[str, str]]:
    """(kind, value) of the customer's email addresses and phone numbers, newest first."""
    ahead: list[tuple[str, str]] | None = take_ahead(conn, _CONTACTS_AHEAD, customer_id)
    if ahead is not None:
        return ahead
    return [
        (row.kind, row.value)
        for row in sql(
            conn,
            "SELECT kind, value FROM identities WHERE customer_id = :c AND kind IN "
            "('email', 'phone') ORDER BY created_at DESC, value",
            {"c": customer_id},
        ).all()
    ]


# The writer's transaction (`holds_writes`): the computed traits (JSON) it wrote of each
# customer it projected, whose rows it holds locked; the customers merged away left out.
_COMPUTED_WRITTEN = "parcours_computed_written"


def computed_of(conn: Connection, ids: Iterable[int]) -> list[tuple[int, str]]:
    """The stored computed traits (JSON) of these customers, in the order of their ids,
    those merged away left out; on PostgreSQL their rows locked, in that order, as the
    projection locks them (commerce's order traits write them in the append's
    transaction). In the writer's transaction, those the projection just wrote are not
    read again (`note_computed`)."""
    wanted = sorted(set(ids))
    written = transaction_note(conn, _COMPUTED_WRITTEN) if holds_writes(conn) else {}
    found = {ident: written[ident] for ident in wanted if ident in written}
    lock = "" if conn.dialect.name == "sqlite" else " ORDER BY id FOR UPDATE"
    rows = select_in(
        conn,
        "SELECT id, computed FROM customers WHERE id IN ({marks}) AND merged_into IS NULL" + lock,
        [ident for ident in wanted if ident not in found],
    )
    found.update((int(ident), computed) for ident, computed in rows)
    return sorted(found.items())


def note_computed(conn: Connection, written: dict[int, str]) -> None:
    """These customers' computed traits were written as given, in this transaction: the
    writer's next `computed_of` takes them from here."""
    if holds_writes(conn):
        transaction_note(conn, _COMPUTED_WRITTEN).update(written)


# ---- new customer ids (PostgreSQL) --------------------------------------------------------

RESERVE_BLOCK = 128  # ids taken from the sequence at a time, kept by the process


class _Reserve:
    """New customer ids on PostgreSQL, taken from the sequence `RESERVE_BLOCK` (or a group's
    need, if more) at a time and kept by the process, per database, for its next groups:
    a call to the sequence is a round trip, and most groups of orders make new people
    (docs/architecture.md, "One pipeline a group"). A sequence's ids are never given twice,
    whatever becomes of the transaction that asked: those kept are gaps in the ids when
    the process stops (at most a block), as those of a transaction rolled back are. Each
    group takes only what it makes, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: PerDatabase[list[int]] = PerDatabase(list)

    def take(self, conn: Connection, count: int) -> list[int]:
        with self._lock:
            kept = self._kept.of(conn)
            if len(kept) < count:
                wanted = max(RESERVE_BLOCK, count - len(kept))
                kept += sorted(
                    sql(
                        conn,
                        "SELECT nextval(pg_get_serial_sequence('customers', 'id')) "
                        "FROM generate_series(1, :n)",
                        {"n": wanted},
                    ).scalars()
                )
            taken, kept[:] = kept[:count], kept[count:]
            return taken


_RESERVE = _Reserve()
