"""Writing message intents, each with its delivery job, in the caller's transaction.
Delivery (messaging/delivery.py) renders and sends them (docs/channels.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import Connection, select

from parcours.messaging.tables import outbox
from parcours.runtime.db import sql
from parcours.runtime.queue import cancel, enqueue

DELIVER = "messaging.deliver"
QUEUE = "messaging"
CANCELLED = "cancelled"  # the state of a message no longer wanted before it was sent

_encode = msgspec.json.Encoder().encode


def public_message_id(outbox_id: int) -> str:
    """How the API and the log name a message."""
    return f"msg_{outbox_id}"


@dataclass(frozen=True)
class Intent:
    idempotency_key: str
    customer_id: int
    channel: str
    template: str
    purpose: str
    journey_id: str | None = None
    run_id: int | None = None
    step_id: str | None = None


def add_intent(
    conn: Connection, intent: Intent, now: int, detail: dict[str, Any], address: str | None = None
) -> int | None:
    """Write the intent once, and the job that delivers it; a second write with the same
    key changes nothing (None). The key ends in `:<attempt>` (0 first, then one per
    fallback channel). Returns the outbox id."""
    row = sql(
        conn,
        "INSERT INTO outbox (idempotency_key, customer_id, journey_id, run_id, step_id, "
        "channel, template, purpose, state, created_at, detail, address, status) VALUES "
        "(:k, :c, :j, :r, :s, :ch, :t, :p, 'pending', :now, :d, :a, 'queued') "
        "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
        {
            "k": intent.idempotency_key,
            "c": intent.customer_id,
            "j": intent.journey_id,
            "r": intent.run_id,
            "s": intent.step_id,
            "ch": intent.channel,
            "t": intent.template,
            "p": intent.purpose,
            "now": now,
            "d": _encode(detail).decode(),
            "a": address,
        },
    ).first()
    if row is None:
        return None
    outbox_id = int(row.id)
    enqueue(
        conn,
        DELIVER,
        {"id": outbox_id},
        run_at=now,
        now=now,
        queue=QUEUE,
        unique_key=f"deliver:{outbox_id}",
        customer_id=intent.customer_id,
    )
    return outbox_id


@dataclass(frozen=True)
class Cancelled:
    """A message cancelled before it was handed to its provider."""

    outbox_id: int
    channel: str
    template: str
    purpose: str
    step_id: str | None


def cancel_run_intents(
    conn: Connection, customer_id: int, run_id: int, reason: str, now: int
) -> list[Cancelled]:
    """A journey run ended by a goal or an exit: its messages not yet handed to a provider
    (`pending`) are cancelled with the reason, and their delivery jobs go, in the caller's
    transaction. A message being sent (`sending`) is left to its delivery: it may have
    gone already. One statement through the customer's index, and one per message found."""
    rows = sql(
        conn,
        "UPDATE outbox SET state = :cancelled, status = :cancelled, status_at = :now, "
        "error = :r WHERE customer_id = :c AND run_id = :run AND state = 'pending' "
        "RETURNING id, channel, template, purpose, step_id",
        {"cancelled": CANCELLED, "now": now, "r": reason, "c": customer_id, "run": run_id},
    ).all()
    for row in rows:
        cancel(conn, f"deliver:{row.id}")
    return [
        Cancelled(int(row.id), row.channel, row.template, row.purpose, row.step_id)
        for row in sorted(rows, key=lambda row: int(row.id))
    ]


def intents_for(conn: Connection, customer_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(outbox).where(outbox.c.customer_id == customer_id).order_by(outbox.c.id)
    ).all()
    return [dict(row._mapping) for row in rows]


def reassign_intents(conn: Connection, old: int, new: int) -> None:
    """Profiles merged: the intents of the merged customer belong to the survivor."""
    sql(
        conn,
        "UPDATE outbox SET customer_id = :new WHERE customer_id = :old",
        {"new": new, "old": old},
    )
