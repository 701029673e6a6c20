"""The log's part when two profiles merge or a person is erased (customers.people): the
events follow the person. And what a partial erasure of one origin's part needs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import Connection, delete, select, update

from parcours.log.tables import events
from parcours.runtime.db import LIKE_ESCAPE, chunks

TABLES = ("events",)


def move_events(conn: Connection, merged_id: int, survivor_id: int, now: int) -> None:
    """Profiles merged: the merged customer's events are the survivor's history."""
    conn.execute(
        update(events).where(events.c.customer_id == merged_id).values(customer_id=survivor_id)
    )


def erase_events(conn: Connection, customer_ids: Sequence[int]) -> dict[str, int]:
    """A person erased: every event about them (the erasure's own record comes after)."""
    deleted = conn.execute(delete(events).where(events.c.customer_id.in_(list(customer_ids))))
    return {"events": deleted.rowcount}


# What taking away one origin's part of people needs (customers/origins.py: a Shopify
# shop's redaction). `pattern` is a LIKE pattern escaped with runtime.db.LIKE_ESCAPE.


def customers_with_events(conn: Connection, source: str, pattern: str) -> set[int]:
    """The customers with an event of `source` whose stored document matches `pattern`."""
    return {
        int(customer)
        for customer in conn.execute(
            select(events.c.customer_id)
            .distinct()
            .where(
                events.c.source == source,
                events.c.customer_id.is_not(None),
                events.c.payload.like(pattern, escape=LIKE_ESCAPE),
            )
        ).scalars()
    }


class UnattributedEvent(NamedTuple):
    """An event about no customer: its place in the log and its stored document."""

    seq: int
    payload: str


def unattributed_events(conn: Connection, source: str, pattern: str) -> list[UnattributedEvent]:
    """The events of `source` about no customer matching `pattern`."""
    return [
        UnattributedEvent(*row)
        for row in conn.execute(
            select(events.c.seq, events.c.payload).where(
                events.c.source == source,
                events.c.customer_id.is_(None),
                events.c.payload.like(pattern, escape=LIKE_ESCAPE),
            )
        )
    ]


def delete_events(conn: Connection, seqs: Sequence[int]) -> None:
    """Delete these events (by their place in the log)."""
    for part in chunks(list(seqs)):
        conn.execute(delete(events).where(events.c.seq.in_(part)))
