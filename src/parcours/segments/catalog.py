"""The catalog of segments: save and read definitions, members, a customer's segments.

Saving a segment starts its batch evaluation (every customer, in chunks, by the worker);
from then on each event re-evaluates the customers it concerns (segments/engine.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection

from parcours.customers import public_id
from parcours.log import queries as log_queries
from parcours.runtime.clock import iso
from parcours.runtime.db import Database, select_in, sql
from parcours.runtime.queue import enqueue
from parcours.segments.definition import Segment, load_segment

SEGMENT_ENTERED = "Segment Entered"
SEGMENT_EXITED = "Segment Exited"
QUEUE = "segments"
EVALUATE = "segments.evaluate"
RECHECK = "segments.recheck"
BACKFILL = "segments.backfill"
MEMBERS_PAGE_MAX = 1000


class UnknownSegment(LookupError):
    def __init__(self, segment_id: str) -> None:
        super().__init__(f"no segment is defined with id {segment_id!r}")
        self.segment_id = segment_id


class SegmentExists(ValueError):
    def __init__(self, segment_id: str) -> None:
        super().__init__(
            f"a segment with id {segment_id!r} exists already; change it with "
            f"PUT /api/segments/{segment_id}"
        )


class SegmentIdMismatch(ValueError):
    """The definition's id is not the one the caller addressed."""


@dataclass(frozen=True)
class Saved:
    segment_id: str
    generation: int
    changed: bool  # False when the same definition was saved again: nothing re-evaluated


def save(
    db: Database,
    source: str,
    editor: str,
    now: int,
    *,
    mode: Literal["create", "update"],
    segment_id: str | None = None,
) -> Saved:
    """Check the definition and store it; a new or changed definition is evaluated for every
    customer (a chunked job). `create` refuses an existing id, `update` an unknown one."""
    segment = load_segment(source)
    if segment_id is not None and segment.id != segment_id:
        raise SegmentIdMismatch(
            f"the definition's id {segment.id!r} is not the segment addressed, {segment_id!r}"
        )
    with db.write() as conn:
        row = sql(
            conn,
            "SELECT generation, source FROM segments WHERE id = :id",
            {"id": segment.id},
        ).first()
        if mode == "create" and row is not None:
            raise SegmentExists(segment.id)
        if mode == "update" and row is None:
            raise UnknownSegment(segment.id)
        if row is not None and row.source == source:
            return Saved(segment.id, int(row.generation), False)
        generation = 1 if row is None else int(row.generation) + 1
        values = {
            "id": segment.id,
            "name": segment.name,
            "source": source,
            "g": generation,
            "now": now,
            "by": editor,
        }
        if row is None:
            sql(
                conn,
                "INSERT INTO segments (id, name, source, generation, created_at, updated_at, "
                "updated_by) VALUES (:id, :name, :source, :g, :now, :now, :by)",
                values,
            )
        else:
            sql(
                conn,
                "UPDATE segments SET name = :name, source = :source, generation = :g, "
                "updated_at = :now, updated_by = :by, evaluated_at = NULL WHERE id = :id",
                values,
            )
        # One batch evaluation per segment: a change restarts it from the first customer.
        # What customers do from here on is theirs: the evaluation tells it apart by seq.
        since = log_queries.last_seq(conn)
        enqueue(
            conn,
            BACKFILL,
            {"segment": segment.id, "generation": generation, "after": 0, "since_seq": since},
            run_at=now,
            now=now,
            queue=QUEUE,
            unique_key=f"segment-backfill:{segment.id}",
        )
    return Saved(segment.id, generation, True)


def definitions(conn: Connection) -> list[tuple[str, int]]:
    """(id, generation) of every segment. Read for each group of events ingested, so
    straight through the driver."""
    rows = sql(conn, "SELECT id, generation FROM segments").all()
    return [(r.id, int(r.generation)) for r in rows]


def source_of(conn: Connection, segment_id: str) -> tuple[int, str] | None:
    row = sql(
        conn, "SELECT generation, source FROM segments WHERE id = :id", {"id": segment_id}
    ).first()
    return None if row is None else (int(row.generation), str(row.source))


def parse(source: str) -> Segment:
    return load_segment(source)


def missing(conn: Connection, segment_ids: set[str]) -> list[str]:
    """Which of these segment ids are not defined."""
    known = {
        row[0]
        for row in select_in(
            conn, "SELECT id FROM segments WHERE id IN ({marks})", sorted(segment_ids)
        )
    }
    return sorted(segment_ids - known)


def describe(conn: Connection, segment_id: str) -> dict[str, Any]:
    row = sql(conn, "SELECT * FROM segments WHERE id = :id", {"id": segment_id}).first()
    if row is None:
        raise UnknownSegment(segment_id)
    return {**_summary(conn, row), "source": row.source}


def listing(conn: Connection) -> list[dict[str, Any]]:
    rows = sql(conn, "SELECT * FROM segments ORDER BY id").all()
    return [_summary(conn, row) for row in rows]


def _summary(conn: Connection, row: Any) -> dict[str, Any]:
    segment = load_segment(row.source)
    members = sql(
        conn,
        "SELECT count(*) FROM segment_memberships WHERE segment_id = :s AND exited_at IS NULL",
        {"s": row.id},
    ).scalar_one()
    return {
        "id": row.id,
        "name": row.name,
        "description": segment.description,
        "generation": row.generation,
        "members": int(members),
        # `evaluating` until every existing customer has been evaluated on this definition.
        "evaluation": "done" if row.evaluated_at is not None else "evaluating",
        "evaluated_at": iso(row.evaluated_at),
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "updated_by": row.updated_by,
    }


def members(
    conn: Connection, segment_id: str, *, limit: int = 100, after: int = 0
) -> tuple[list[dict[str, Any]], int | None]:
    """A page of the segment's current members in customer id order; the cursor is the
    last customer id shown, or None on the last page."""
    if sql(conn, "SELECT 1 FROM segments WHERE id = :id", {"id": segment_id}).first() is None:
        raise UnknownSegment(segment_id)
    rows = sql(
        conn,
        "SELECT customer_id, entered_at, backfill FROM segment_memberships "
        "WHERE segment_id = :s AND exited_at IS NULL AND customer_id > :after "
        "ORDER BY customer_id LIMIT :n",
        {"s": segment_id, "after": after, "n": limit + 1},
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    page = [
        {
            "customer_id": public_id(r.customer_id),
            "entered_at": iso(r.entered_at),
            "backfill": bool(r.backfill),
        }
        for r in rows
    ]
    return page, (int(rows[-1].customer_id) if more and rows else None)


def segments_of(conn: Connection, customer_id: int) -> list[dict[str, Any]]:
    """The segments the customer is in now, with when they entered (the customer view)."""
    rows = sql(
        conn,
        "SELECT segment_id, entered_at FROM segment_memberships WHERE customer_id = :c "
        "AND exited_at IS NULL ORDER BY segment_id",
        {"c": customer_id},
    ).all()
    return [{"segment": r.segment_id, "entered_at": iso(r.entered_at)} for r in rows]


def membership_flags(conn: Connection, customer_id: int) -> dict[str, bool]:
    """segment id -> whether the customer is in it now, for every defined segment: what
    journey conditions read as `segment.<id>` (`{eq: false}` holds for a non-member)."""
    rows = sql(
        conn,
        "SELECT s.id, m.id AS membership FROM segments s LEFT JOIN segment_memberships m "
        "ON m.segment_id = s.id AND m.customer_id = :c AND m.exited_at IS NULL",
        {"c": customer_id},
    ).all()
    return {r.id: r.membership is not None for r in rows}
