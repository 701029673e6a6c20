"""Segments' part when a person is erased (customers.people): their memberships go.

A merge is followed by the segment engine itself, in the evaluation job its append
reaction enqueues (segments.engine): the memberships move there, and the survivor is
evaluated on every segment in the same step."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, delete

from parcours.segments.tables import segment_memberships

TABLES = ("segment_memberships",)


def erase(conn: Connection, customer_ids: Sequence[int]) -> dict[str, int]:
    """A person erased: every segment they were ever in."""
    deleted = conn.execute(
        delete(segment_memberships).where(segment_memberships.c.customer_id.in_(list(customer_ids)))
    )
    return {"segment_memberships": deleted.rowcount}
