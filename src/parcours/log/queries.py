"""Reading the log: the one place other packages' questions about events are answered,
and the log's own statements on its hot paths (the append's, log/append.py).

The events table belongs to the log; every package that needs what customers did asks
here, so that the table's shape and its indexes are known in one module. Each answer is
a row of its own (a named tuple of the columns asked). What runs per event, per journey
step or per message (the append, the journeys' and segments' reads) goes straight through
the driver (runtime/db.py: SQLAlchemy's own cost per statement is many times the
database's there); the rest is SQLAlchemy Core.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, func, or_, select

from parcours.log.event import Event
from parcours.log.tables import events
from parcours.runtime.db import in_list, insert_rows, select_in, sql


class StoredEvent(NamedTuple):
    """An event as the log holds it: every column of its row."""

    seq: int
    message_id: str
    customer_id: int | None
    type: str
    name: str | None
    user_id: str | None
    anonymous_id: str | None
    occurred_at: int
    timestamp: int | None
    sent_at: int | None
    received_at: int
    source: str
    payload: str


class CustomerEvent(NamedTuple):
    """What the journeys read of a customer's event: its place in the log, its id, when it
    happened and its stored document."""

    seq: int
    message_id: str
    customer_id: int
    name: str | None
    occurred_at: int
    payload: str


class EventOccurrence(NamedTuple):
    """One event of a name for a customer: when, and its document when it was asked for."""

    customer_id: int
    occurred_at: int
    payload: str | None = None


class AppendedEvent(NamedTuple):
    """What a customer did after some point of the log, as segments weigh it."""

    customer_id: int
    type: str
    name: str | None
    source: str
    payload: str


def _stored(rows: Iterable[Any]) -> list[StoredEvent]:
    return [StoredEvent(**row._mapping) for row in rows]


def last_seq(conn: Connection) -> int:
    """The position of the newest event (0 when there is none): what happened after it is
    told apart by `seq`."""
    return int(conn.execute(select(func.coalesce(func.max(events.c.seq), 0))).scalar_one())


def last_times(conn: Connection, name: str, customer_ids: Sequence[int]) -> dict[int, int]:
    """When each of these customers last did `name` (customers who never did are left out)."""
    rows = select_in(
        conn,
        "SELECT customer_id, max(occurred_at) FROM events WHERE name = {mark} "
        "AND customer_id IN ({marks}) GROUP BY customer_id",
        list(customer_ids),
        (name,),
    )
    return {int(customer): int(last) for customer, last in rows}


def occurrences(
    conn: Connection,
    name: str,
    customer_ids: Sequence[int],
    *,
    after: int | None = None,
    with_payload: bool = False,
) -> list[EventOccurrence]:
    """Every `name` event of these customers (occurring after `after`, when given), with
    its document when `with_payload`."""
    columns = "customer_id, occurred_at" + (", payload" if with_payload else "")
    window = ""
    leading: list[Any] = [name]
    if after is not None:
        window = " AND occurred_at > {mark}"
        leading.append(after)
    rows = select_in(
        conn,
        f"SELECT {columns} FROM events WHERE name = {{mark}}{window} "
        "AND customer_id IN ({marks})",
        list(customer_ids),
        leading,
    )
    return [EventOccurrence(*row) for row in rows]


def appended_since(conn: Connection, seq: int, customer_ids: Sequence[int]) -> list[AppendedEvent]:
    """What these customers did after event `seq`."""
    rows = select_in(
        conn,
        "SELECT customer_id, type, name, source, payload FROM events "
        "WHERE seq > {mark} AND customer_id IN ({marks})",
        list(customer_ids),
        (seq,),
    )
    return [AppendedEvent(*row) for row in rows]


# What the journeys read of an event (CustomerEvent).
_AS_LOGGED = "SELECT seq, message_id, customer_id, name, occurred_at, payload FROM events "


def by_message_ids(conn: Connection, message_ids: Sequence[str]) -> list[CustomerEvent]:
    """These events (with a customer), in the order they happened. Raw, as the journeys'
    per-reaction reads are (runtime/db.py, `sql`: SQLAlchemy's own cost per statement is
    many times the database's here)."""
    names, params = in_list("m", message_ids)
    rows = sql(
        conn, _AS_LOGGED + f"WHERE message_id IN ({names}) ORDER BY occurred_at, seq", params
    ).all()
    return [CustomerEvent(*row) for row in rows if row.customer_id is not None]


def named_between(
    conn: Connection, customer_id: int, name: str, since: int, before: int, after_seq: int
) -> list[CustomerEvent]:
    """The customer's events named so, dated in [since, before), stored after `after_seq`,
    in the order they were stored."""
    rows = sql(
        conn,
        _AS_LOGGED + "WHERE customer_id = :c AND name = :n "
        "AND occurred_at >= :since AND occurred_at < :deadline AND seq > :after "
        "ORDER BY seq",
        {"c": customer_id, "n": name, "since": since, "deadline": before, "after": after_seq},
    ).all()
    return [CustomerEvent(*row) for row in rows]


def named_since(
    conn: Connection, customer_ids: Sequence[int], names: Sequence[str], since: int
) -> list[CustomerEvent]:
    """These customers' events named so, dated from `since`, oldest first (raw: one per
    batch of steps or sends)."""
    ids, id_params = in_list("c", customer_ids)
    wanted, name_params = in_list("n", names)
    rows = sql(
        conn,
        _AS_LOGGED + f"WHERE customer_id IN ({ids}) AND name IN ({wanted}) "
        "AND occurred_at >= :since ORDER BY occurred_at, seq",
        {"since": since, **id_params, **name_params},
    ).all()
    return [CustomerEvent(*row) for row in rows]


def own_decisions(conn: Connection, customer_id: int) -> list[StoredEvent]:
    """Parcours' own records about the customer (source "system"), oldest first."""
    return _stored(
        conn.execute(
            select(events)
            .where(events.c.customer_id == customer_id, events.c.source == "system")
            .order_by(events.c.seq)
        )
    )


def from_sources(conn: Connection, sources: Sequence[str]) -> list[StoredEvent]:
    """Every event recorded by these sources, in the order stored: a scratch database's
    whole story."""
    return _stored(
        conn.execute(
            select(events).where(events.c.source.in_(list(sources))).order_by(events.c.seq)
        )
    )


def last_time_from(conn: Connection, customer_id: int, name: str, source: str) -> int | None:
    """When the customer last did `name` through `source` (e.g. wrote on WhatsApp)."""
    value = sql(
        conn,
        "SELECT max(occurred_at) FROM events WHERE customer_id = :c AND name = :n AND source = :s",
        {"c": customer_id, "n": name, "s": source},
    ).scalar()
    return None if value is None else int(value)


def page_of(
    conn: Connection,
    customer_id: int,
    *,
    limit: int,
    before: int | None = None,
    named: str | None = None,
    since: int | None = None,
    until: int | None = None,
) -> tuple[list[StoredEvent], int | None]:
    """A page of the customer's events, newest first, and the cursor of the next page (the
    last seq shown), or None when this is the last. Only those `named` (a track's name or
    a call's type: `identify`), that occurred from `since` and before `until`, if given."""
    query = select(events).where(events.c.customer_id == customer_id)
    if before is not None:
        query = query.where(events.c.seq < before)
    if named:
        query = query.where(or_(events.c.name == named, events.c.type == named))
    if since is not None:
        query = query.where(events.c.occurred_at >= since)
    if until is not None:
        query = query.where(events.c.occurred_at < until)
    rows = _stored(conn.execute(query.order_by(events.c.seq.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (int(rows[-1].seq) if more and rows else None)


def all_of(conn: Connection, customer_id: int) -> list[StoredEvent]:
    """Every event of the customer, oldest first (an export)."""
    return _stored(
        conn.execute(
            select(events).where(events.c.customer_id == customer_id).order_by(events.c.seq)
        )
    )


# ---- the append's statements (log/append.py: the one door, nothing else calls them) ---------


def stored_message_ids(conn: Connection, message_ids: Sequence[str]) -> set[str]:
    """Those of these message ids the log already holds (what an append leaves out)."""
    return {
        row[0]
        for row in select_in(
            conn, "SELECT message_id FROM events WHERE message_id IN ({marks})", list(message_ids)
        )
    }


_EVENT_COLUMNS = (
    "message_id",
    "customer_id",
    "type",
    "name",
    "user_id",
    "anonymous_id",
    "occurred_at",
    "timestamp",
    "sent_at",
    "received_at",
    "source",
    "payload",
)


def insert_events(conn: Connection, new: Sequence[Event]) -> None:
    """Store these events, in one statement (COPY on PostgreSQL). Only `append_events`
    calls it: the log's one door."""
    insert_rows(
        conn,
        events,
        _EVENT_COLUMNS,
        [
            (
                e.message_id,
                e.customer_id,
                e.type,
                e.name,
                e.user_id,
                e.anonymous_id,
                e.occurred_at,
                e.timestamp,
                e.sent_at,
                e.received_at,
                e.source,
                e.payload,
            )
            for e in new
        ],
    )


__all__ = [
    "AppendedEvent",
    "CustomerEvent",
    "EventOccurrence",
    "StoredEvent",
    "all_of",
    "appended_since",
    "by_message_ids",
    "from_sources",
    "last_seq",
    "last_time_from",
    "last_times",
    "named_between",
    "named_since",
    "occurrences",
    "own_decisions",
    "page_of",
]


class LoggedEvent(NamedTuple):
    """What a count of the log needs of an event: its place, name and time, its body."""

    seq: int
    type: str
    name: str | None
    occurred_at: int
    payload: str


def committed_seq(conn: Connection) -> int:
    """The highest `seq` below which every event is committed, as of now: on PostgreSQL a
    transaction may take a `seq` and commit after a later one, so the table is locked
    against new appends for an instant (SHARE: waits for the appends in flight, blocks new
    ones until this transaction ends; call it in a transaction of its own). SQLite has one
    writer at a time: its last `seq` is it."""
    if conn.dialect.name != "sqlite":
        conn.exec_driver_sql("LOCK TABLE events IN SHARE MODE")
    return last_seq(conn)


def logged_between(conn: Connection, after: int, upto: int, limit: int) -> list[LoggedEvent]:
    """The events with `after` < seq <= `upto`, in order, at most `limit`."""
    rows = conn.execute(
        select(events.c.seq, events.c.type, events.c.name, events.c.occurred_at, events.c.payload)
        .where(events.c.seq > after, events.c.seq <= upto)
        .order_by(events.c.seq)
        .limit(limit)
    )
    return [LoggedEvent(*row) for row in rows]
