"""Counts of the log by hour: how many events of each name, per channel, per reason for a
held message, and the revenue of orders per currency. Read by the console's overview in a
few hundred rows whatever the size of the log (docs/console.md, "The overview's figures").

The counts follow the log from behind: `catch_up` reads the events appended since it last
ran, in order of `seq`, up to the point below which every append is committed, and adds
them to the hourly rows in the same transaction that moves its position. Nothing on the
append's path changes; a reader sees the counts as of its last catch-up.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from sqlalchemy import Connection, select, update

from parcours.analytics.tables import analytics_positions, event_counts
from parcours.customers import CONSENT_EVENT, order_total
from parcours.log import queries
from parcours.runtime.clock import Clock
from parcours.runtime.db import Database, sql_write, upsert_rows

HOUR_MS = 3_600_000
POSITION = "event_counts"
CHUNK = 10_000
ORDER_EVENTS = frozenset({"Order Completed"})
# A segment's entries and exits are counted per segment (its id in `detail`), those of a
# batch evaluation apart (`channel` "backfill"): segments.SEGMENT_ENTERED and _EXITED.
SEGMENT_EVENTS = frozenset({"Segment Entered", "Segment Exited"})
BACKFILL = "backfill"
_decode = msgspec.json.Decoder().decode


@dataclass(frozen=True)
class HourCount:
    hour: int  # hours since the epoch, UTC
    name: str
    channel: str
    detail: str
    currency: str
    count: int
    amount: Decimal


def _key(event: queries.LoggedEvent) -> tuple[str, str, str, str, Decimal]:
    name = event.name or event.type
    channel = detail = currency = ""
    amount = Decimal(0)
    if (
        name.startswith("Message ")
        or name in ORDER_EVENTS
        or name in SEGMENT_EVENTS
        or name == CONSENT_EVENT
    ):
        try:
            document = _decode(event.payload)
        except msgspec.DecodeError:
            document = {}
        properties: Any = document.get("properties") if isinstance(document, dict) else None
        if isinstance(properties, dict):
            if name.startswith("Message "):
                channel = str(properties.get("channel") or "")[:40]
                if name == "Message Held":
                    detail = str(properties.get("reason") or "")[:200]
            elif name == CONSENT_EVENT:  # purpose:status, such as marketing:withdrawn
                channel = str(properties.get("channel") or "")[:40]
                detail = f"{properties.get('purpose')}:{properties.get('status')}"[:80]
            elif name in SEGMENT_EVENTS:
                detail = str(properties.get("segment") or "")[:200]
                channel = BACKFILL if properties.get("backfill") else ""
            else:
                currency = str(properties.get("currency") or "").upper()[:8]
                amount = order_total(properties)
    return name[:200], channel, detail, currency, amount


def catch_up(db: Database, *, limit: int = 1_000_000) -> int:
    """Count the events appended since the last catch-up (at most `limit` of them);
    how many were counted. Two catching up at once count each event once.

    When no event newer than the counts' position is visible, there is nothing to count
    yet, and that is known from a read: the appends in flight, whose `seq` may lie below
    a visible one, are counted by a later catch-up once committed. Only when there is
    something to count is the log locked for an instant to find how far every append is
    committed (`committed_seq`): an idle worker's catch-up, every few seconds, neither
    writes nor makes an append wait."""
    with db.read() as conn:
        if queries.last_seq(conn) <= _counted_to(conn):
            return 0
    with db.write() as conn:
        upto = queries.committed_seq(conn)
    counted = 0
    while counted < limit:
        with db.write() as conn:
            after = _position(conn)
            batch = queries.logged_between(conn, after, upto, min(CHUNK, limit - counted))
            if not batch:
                return counted
            _add(conn, batch)
            conn.execute(
                update(analytics_positions)
                .where(analytics_positions.c.name == POSITION)
                .values(seq=batch[-1].seq)
            )
        counted += len(batch)
    return counted


class KeepUp:
    """The worker's finisher (`Worker.finish_with`) that keeps the counts a few seconds
    behind the log: when it rests, at most every `every_ms`, it counts up to `limit` new
    events, in transactions of their own. The pages then catch up little or nothing
    themselves (`PAGE_LIMIT`)."""

    def __init__(self, db: Database, clock: Clock, *, every_ms: int = 2_000, limit: int = 50_000):
        self.db, self.clock, self.every_ms, self.limit = db, clock, every_ms, limit
        self._last = -every_ms

    def __call__(self) -> bool:
        now = self.clock.now_ms()
        if now - self._last < self.every_ms:
            return False
        self._last = now
        catch_up(self.db, limit=self.limit)
        return False  # counting makes no job due


# What a page counts itself before it reads, at most: a page never waits for a backlog
# (a worker that was stopped, a large import); the worker's `KeepUp` counts the rest.
PAGE_LIMIT = CHUNK


def _counted_to(conn: Connection) -> int:
    """The counts' position, read without a lock; -1 before the first catch-up."""
    statement = select(analytics_positions.c.seq).where(analytics_positions.c.name == POSITION)
    found = conn.execute(statement).scalar()
    return -1 if found is None else int(found)


def _position(conn: Connection) -> int:
    """Where the counts stand, the row locked so that a second catch-up waits (SQLite:
    the write transaction already serialises them)."""
    statement = select(analytics_positions.c.seq).where(analytics_positions.c.name == POSITION)
    if conn.dialect.name != "sqlite":
        statement = statement.with_for_update()
    found = conn.execute(statement).scalar()
    if found is None:
        # The first catch-up of a database: two workers starting at once both find no row
        # (the second, waiting for the first's insert, then finds it made).
        sql_write(
            conn,
            "INSERT INTO analytics_positions (name, seq) VALUES (:name, 0) "
            "ON CONFLICT (name) DO NOTHING",
            {"name": POSITION},
        )
        found = conn.execute(statement).scalar_one()
    return int(found)


def _add(conn: Connection, batch: Iterable[queries.LoggedEvent]) -> None:
    totals: dict[tuple[int, str, str, str, str], list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for event in batch:
        name, channel, detail, currency, amount = _key(event)
        total = totals[(event.occurred_at // HOUR_MS, name, channel, detail, currency)]
        total[0] += 1
        total[1] += amount
    columns = ("hour", "name", "channel", "detail", "currency", "count", "amount_e4")
    rows = [
        (hour, name, channel, detail, currency, count, int(amount * 10_000))
        for (hour, name, channel, detail, currency), (count, amount) in sorted(totals.items())
    ]
    # One statement for the whole chunk on PostgreSQL (a replayed history spreads its
    # events over thousands of hours: a statement per row was most of the worker's time).
    upsert_rows(
        conn,
        event_counts,
        columns,
        rows,
        conflict=columns[:5],
        updates={
            "count": "event_counts.count + excluded.count",
            "amount_e4": "event_counts.amount_e4 + excluded.amount_e4",
        },
    )


def hourly(conn: Connection, since_ms: int, until_ms: int) -> list[HourCount]:
    """The hourly counts of the hours from that of `since_ms` to that of `until_ms`."""
    c = event_counts.c
    rows = conn.execute(
        select(
            c.hour, c.name, c.channel, c.detail, c.currency, c.count.label("events"), c.amount_e4
        ).where(c.hour >= since_ms // HOUR_MS, c.hour <= until_ms // HOUR_MS)
    )
    return [
        HourCount(
            row.hour,
            row.name,
            row.channel,
            row.detail,
            row.currency,
            int(row.events),
            Decimal(int(row.amount_e4)) / 10_000,
        )
        for row in rows
    ]


def segment_changes(
    conn: Connection, segment_id: str, since_ms: int, until_ms: int
) -> list[HourCount]:
    """The hourly counts of a segment's entries and exits (`Segment Entered`, `Segment
    Exited`; `channel` "backfill" for those of a batch evaluation) from the hour of
    `since_ms` to that of `until_ms`."""
    c = event_counts.c
    rows = conn.execute(
        select(c.hour, c.name, c.channel, c.detail, c.currency, c.count.label("events")).where(
            c.hour >= since_ms // HOUR_MS,
            c.hour <= until_ms // HOUR_MS,
            c.name.in_(sorted(SEGMENT_EVENTS)),
            c.detail == segment_id,
        )
    )
    return [
        HourCount(row.hour, row.name, row.channel, row.detail, "", int(row.events), Decimal(0))
        for row in rows
    ]


def local_day(hour: int, timezone: str) -> date:
    """The day, in `timezone`, of an hour counted since the epoch."""
    return datetime.fromtimestamp(hour * 3600, tz=UTC).astimezone(ZoneInfo(timezone)).date()
