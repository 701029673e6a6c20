"""The catalog of segments: save and read definitions, members, a customer's segments.

Saving a segment starts its batch evaluation (every customer, in chunks, by the worker);
from then on each event re-evaluates the customers it concerns (segments/engine.py, where
the reads run for every event are too).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from sqlalchemy import Connection, func, insert, select, update

from parcours.customers import public_id
from parcours.log import queries as log_queries
from parcours.runtime.clock import iso
from parcours.runtime.db import Database
from parcours.runtime.queue import enqueue
from parcours.segments.definition import Segment, load_segment
from parcours.segments.tables import segment_memberships, segments

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
    also: Callable[[Connection, Saved], None] | None = None,
) -> Saved:
    """Check the definition and store it; a new or changed definition is evaluated for every
    customer (a chunked job). `create` refuses an existing id, `update` an unknown one.
    `also` runs in the save's transaction when something changed (the console's audit)."""
    segment = load_segment(source)
    if segment_id is not None and segment.id != segment_id:
        raise SegmentIdMismatch(
            f"the definition's id {segment.id!r} is not the segment addressed, {segment_id!r}"
        )
    with db.write() as conn:
        row = conn.execute(
            select(segments.c.generation, segments.c.source).where(segments.c.id == segment.id)
        ).first()
        if mode == "create" and row is not None:
            raise SegmentExists(segment.id)
        if mode == "update" and row is None:
            raise UnknownSegment(segment.id)
        if row is not None and row.source == source:
            return Saved(segment.id, int(row.generation), False)
        generation = 1 if row is None else int(row.generation) + 1
        values = {
            "name": segment.name,
            "source": source,
            "generation": generation,
            "updated_at": now,
            "updated_by": editor,
        }
        if row is None:
            conn.execute(insert(segments).values(id=segment.id, created_at=now, **values))
        else:
            conn.execute(
                update(segments)
                .where(segments.c.id == segment.id)
                .values(evaluated_at=None, **values)
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
        saved = Saved(segment.id, generation, True)
        if also is not None:
            also(conn, saved)
    return saved


def source_of(conn: Connection, segment_id: str) -> tuple[int, str] | None:
    """(generation, source) of the segment; read when its generation changed."""
    row = conn.execute(
        select(segments.c.generation, segments.c.source).where(segments.c.id == segment_id)
    ).first()
    return None if row is None else (int(row.generation), str(row.source))


def sources(conn: Connection) -> dict[str, str]:
    """Every segment's definition as written, by id."""
    rows = conn.execute(select(segments.c.id, segments.c.source).order_by(segments.c.id))
    return {str(row.id): str(row.source) for row in rows}


def parse(source: str) -> Segment:
    return load_segment(source)


def missing(conn: Connection, segment_ids: set[str]) -> list[str]:
    """Which of these segment ids are not defined."""
    known = set(
        conn.execute(select(segments.c.id).where(segments.c.id.in_(sorted(segment_ids))))
        .scalars()
        .all()
    )
    return sorted(segment_ids - known)


class SegmentSummary(msgspec.Struct, frozen=True):
    """A segment, its evaluation and how many customers are in it now."""

    id: str
    name: str
    description: str
    generation: int
    members: int
    # `evaluating` until every existing customer has been evaluated on this definition.
    evaluation: str  # evaluating | done
    evaluated_at: str | None
    created_at: str
    updated_at: str
    updated_by: str


class SegmentView(SegmentSummary, frozen=True):
    """A segment, its evaluation, how many customers are in it now, and its definition."""

    source: str


class SegmentList(msgspec.Struct, frozen=True):
    segments: list[SegmentSummary]


def describe(conn: Connection, segment_id: str) -> SegmentView:
    row = conn.execute(select(segments).where(segments.c.id == segment_id)).first()
    if row is None:
        raise UnknownSegment(segment_id)
    return SegmentView(**msgspec.structs.asdict(_summary(conn, row)), source=row.source)


def listing(conn: Connection) -> SegmentList:
    """Every segment, in id order."""
    rows = conn.execute(select(segments).order_by(segments.c.id)).all()
    return SegmentList([_summary(conn, row) for row in rows])


def _summary(conn: Connection, row: Any) -> SegmentSummary:
    members = conn.execute(
        select(func.count())
        .select_from(segment_memberships)
        .where(
            segment_memberships.c.segment_id == row.id,
            segment_memberships.c.exited_at.is_(None),
        )
    ).scalar_one()
    return SegmentSummary(
        id=row.id,
        name=row.name,
        description=load_segment(row.source).description,
        generation=row.generation,
        members=int(members),
        evaluation="done" if row.evaluated_at is not None else "evaluating",
        evaluated_at=iso(row.evaluated_at),
        created_at=_time(row.created_at),
        updated_at=_time(row.updated_at),
        updated_by=row.updated_by,
    )


class SegmentMember(msgspec.Struct, frozen=True):
    customer_id: str  # cus_N
    entered_at: str
    backfill: bool  # entered by the batch evaluation of a new or changed definition


class MemberPage(msgspec.Struct, frozen=True):
    """Current members in customer id order; `next_after` is the next page's cursor."""

    segment: str
    members: list[SegmentMember]
    next_after: str | None


def members(conn: Connection, segment_id: str, *, limit: int = 100, after: int = 0) -> MemberPage:
    """A page of the segment's current members in customer id order, after the customer id
    `after`; the next page's cursor is the last customer shown, or None on the last page."""
    known = conn.execute(select(segments.c.id).where(segments.c.id == segment_id)).first()
    if known is None:
        raise UnknownSegment(segment_id)
    stays = segment_memberships.c
    rows = conn.execute(
        select(stays.customer_id, stays.entered_at, stays.backfill)
        .where(
            stays.segment_id == segment_id,
            stays.exited_at.is_(None),
            stays.customer_id > after,
        )
        .order_by(stays.customer_id)
        .limit(limit + 1)
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    page = [
        SegmentMember(public_id(r.customer_id), _time(r.entered_at), bool(r.backfill)) for r in rows
    ]
    last = public_id(rows[-1].customer_id) if more and rows else None
    return MemberPage(segment_id, page, last)


class SegmentMembership(msgspec.Struct, frozen=True):
    segment: str
    entered_at: str


def segments_of(conn: Connection, customer_id: int) -> list[SegmentMembership]:
    """The segments the customer is in now, with when they entered (the customer view)."""
    stays = segment_memberships.c
    rows = conn.execute(
        select(stays.segment_id, stays.entered_at)
        .where(stays.customer_id == customer_id, stays.exited_at.is_(None))
        .order_by(stays.segment_id)
    ).all()
    return [SegmentMembership(r.segment_id, _time(r.entered_at)) for r in rows]


def _time(ms: int) -> str:
    """A time the row always has, as the API shows it."""
    shown = iso(ms)
    assert shown is not None
    return shown
