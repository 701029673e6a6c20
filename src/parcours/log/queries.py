"""Reading the log: the one place other packages' questions about events are answered.

The events table belongs to the log; every package that needs what customers did asks
here, so that the table's shape and its indexes are known in one module. The functions
that the hot paths call (segment evaluation) read many customers at once and return rows
as the driver gives them; the others return frozen dataclasses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, select

from parcours.log.tables import events
from parcours.runtime.db import in_list, select_in, sql


def last_seq(conn: Connection) -> int:
    """The position of the newest event (0 when there is none): what happened after it is
    told apart by `seq`."""
    return int(sql(conn, "SELECT coalesce(max(seq), 0) FROM events").scalar_one())


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
) -> list[Any]:
    """Every `name` event of these customers (occurring after `after`, when given), as
    rows of (customer_id, occurred_at[, payload])."""
    columns = "customer_id, occurred_at" + (", payload" if with_payload else "")
    window = ""
    leading: list[Any] = [name]
    if after is not None:
        window = " AND occurred_at > {mark}"
        leading.append(after)
    return select_in(
        conn,
        f"SELECT {columns} FROM events WHERE name = {{mark}}{window} "
        "AND customer_id IN ({marks})",
        list(customer_ids),
        leading,
    )


def appended_since(conn: Connection, seq: int, customer_ids: Sequence[int]) -> list[Any]:
    """What these customers did after event `seq`, as rows of (customer_id, type, name,
    source, payload)."""
    return select_in(
        conn,
        "SELECT customer_id, type, name, source, payload FROM events "
        "WHERE seq > {mark} AND customer_id IN ({marks})",
        list(customer_ids),
        (seq,),
    )


# What the journeys read of an event: (seq, message_id, customer_id, name, occurred_at,
# payload).
_AS_LOGGED = "SELECT seq, message_id, customer_id, name, occurred_at, payload FROM events "


def by_message_ids(conn: Connection, message_ids: Sequence[str]) -> list[Any]:
    """These events (with a customer), in the order they happened. Raw, as the journeys'
    per-reaction reads are (runtime/db.py, `sql`: SQLAlchemy's own cost per statement is
    many times the database's here)."""
    names, params = in_list("m", message_ids)
    rows = sql(
        conn, _AS_LOGGED + f"WHERE message_id IN ({names}) ORDER BY occurred_at, seq", params
    ).all()
    return [row for row in rows if row.customer_id is not None]


def named_between(
    conn: Connection, customer_id: int, name: str, since: int, before: int, after_seq: int
) -> list[Any]:
    """The customer's events named so, dated in [since, before), stored after `after_seq`,
    in the order they were stored."""
    return list(
        sql(
            conn,
            _AS_LOGGED + "WHERE customer_id = :c AND name = :n "
            "AND occurred_at >= :since AND occurred_at < :deadline AND seq > :after "
            "ORDER BY seq",
            {"c": customer_id, "n": name, "since": since, "deadline": before, "after": after_seq},
        ).all()
    )


def named_since(
    conn: Connection, customer_ids: Sequence[int], names: Sequence[str], since: int
) -> list[Any]:
    """These customers' events named so, dated from `since`, oldest first (raw: one per
    batch of steps or sends)."""
    ids, id_params = in_list("c", customer_ids)
    wanted, name_params = in_list("n", names)
    return sql(
        conn,
        _AS_LOGGED + f"WHERE customer_id IN ({ids}) AND name IN ({wanted}) "
        "AND occurred_at >= :since ORDER BY occurred_at, seq",
        {"since": since, **id_params, **name_params},
    ).all()


def own_decisions(conn: Connection, customer_id: int) -> list[Any]:
    """Parcours' own records about the customer (source "system"), oldest first, as rows
    of (occurred_at, name, payload)."""
    return list(
        sql(
            conn,
            "SELECT occurred_at, name, payload FROM events WHERE customer_id = :c "
            "AND source = 'system' ORDER BY seq",
            {"c": customer_id},
        ).all()
    )


def from_sources(conn: Connection, sources: Sequence[str]) -> list[Any]:
    """Every event recorded by these sources, in the order stored, as rows of
    (occurred_at, name, payload, source, customer_id): a scratch database's whole story."""
    return list(
        conn.execute(
            select(
                events.c.occurred_at,
                events.c.name,
                events.c.payload,
                events.c.source,
                events.c.customer_id,
            )
            .where(events.c.source.in_(list(sources)))
            .order_by(events.c.seq)
        ).all()
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
    conn: Connection, customer_id: int, *, limit: int, before: int | None = None
) -> tuple[list[Row[Any]], int | None]:
    """A page of the customer's events, newest first, and the cursor of the next page (the
    last seq shown), or None when this is the last."""
    query = select(events).where(events.c.customer_id == customer_id)
    if before is not None:
        query = query.where(events.c.seq < before)
    rows = list(conn.execute(query.order_by(events.c.seq.desc()).limit(limit + 1)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (int(rows[-1].seq) if more and rows else None)


def all_of(conn: Connection, customer_id: int) -> list[Row[Any]]:
    """Every event of the customer, oldest first (an export)."""
    return list(
        conn.execute(
            select(events).where(events.c.customer_id == customer_id).order_by(events.c.seq)
        ).all()
    )


__all__ = [
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
