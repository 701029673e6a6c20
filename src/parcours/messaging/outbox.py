"""Writing message intents, each with its delivery job, in the caller's transaction, and
the outbox as the API shows it. Delivery (messaging/delivery.py) renders and sends them
(docs/channels.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import Connection, select, update

from parcours.messaging import outbox_rows
from parcours.messaging.tables import outbox
from parcours.runtime.clock import iso
from parcours.runtime.documents import JsonObject
from parcours.runtime.queue import cancel, enqueue

DELIVER = "messaging.deliver"
QUEUE = "messaging"

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


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
    fallback channel). Returns the outbox id; None too while a set of jobs holds its
    writes (the journeys' steps): the intent is inserted with the set's, and its job."""
    values = {
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
    }
    if outbox_rows.hold_intent(conn, values, _deliver):
        return None
    outbox_id = outbox_rows.insert_intent(conn, values)
    if outbox_id is None:
        return None
    _deliver(conn, outbox_id, intent.customer_id, now)
    return outbox_id


def _deliver(conn: Connection, outbox_id: int, customer_id: int, now: int) -> None:
    """The job that delivers a new intent, due at once."""
    enqueue(
        conn,
        DELIVER,
        {"id": outbox_id},
        run_at=now,
        now=now,
        queue=QUEUE,
        unique_key=f"deliver:{outbox_id}",
        customer_id=customer_id,
    )


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
    rows = outbox_rows.cancel_pending_of_run(conn, customer_id, run_id, reason, now)
    for row in rows:
        cancel(conn, f"deliver:{row.id}")
    return [
        Cancelled(int(row.id), row.channel, row.template, row.purpose, row.step_id)
        for row in sorted(rows, key=lambda row: int(row.id))
    ]


def intents_for(conn: Connection, customer_id: int) -> list[dict[str, Any]]:
    outbox_rows.release_intents(conn)
    rows = conn.execute(
        select(outbox).where(outbox.c.customer_id == customer_id).order_by(outbox.c.id)
    ).all()
    return [dict(row._mapping) for row in rows]


def reassign_intents(conn: Connection, old: int, new: int) -> None:
    """Profiles merged: the intents of the merged customer belong to the survivor."""
    outbox_rows.release_intents(conn)
    conn.execute(update(outbox).where(outbox.c.customer_id == old).values(customer_id=new))


class RunMessage(msgspec.Struct, frozen=True):
    """A message a journey run wrote, and how far it got: what the pages that follow a
    run show of it (the console's Carts page)."""

    outbox_id: int
    message_id: str  # msg_N
    run_id: int
    step_id: str | None
    channel: str
    template: str
    state: str  # pending | sending | sent | failed | cancelled
    status: str | None  # the furthest feedback: queued, sent, delivered, opened, clicked...
    created_at: int
    sent_at: int | None
    status_at: int | None
    error: str | None  # why it was cancelled or failed


def messages_of_runs(
    conn: Connection, customer_ids: Sequence[int], run_ids: Sequence[int], since: int
) -> list[RunMessage]:
    """The messages these runs (of these customers, entered from `since`) wrote, oldest
    first: one statement through the customers' index of creation times, however many
    runs."""
    if not run_ids or not customer_ids:
        return []
    rows = conn.execute(
        select(
            outbox.c.id,
            outbox.c.run_id,
            outbox.c.step_id,
            outbox.c.channel,
            outbox.c.template,
            outbox.c.state,
            outbox.c.status,
            outbox.c.created_at,
            outbox.c.sent_at,
            outbox.c.status_at,
            outbox.c.error,
        )
        .where(
            outbox.c.customer_id.in_(sorted(set(customer_ids))),
            outbox.c.created_at >= since,
            outbox.c.run_id.in_(sorted(set(run_ids))),
        )
        .order_by(outbox.c.id)
    )
    return [
        RunMessage(
            outbox_id=int(r.id),
            message_id=public_message_id(int(r.id)),
            run_id=int(r.run_id),
            step_id=r.step_id,
            channel=r.channel,
            template=r.template,
            state=r.state,
            status=r.status,
            created_at=int(r.created_at),
            sent_at=r.sent_at,
            status_at=r.status_at,
            error=r.error,
        )
        for r in rows
    ]


class OutboxMessage(msgspec.Struct):
    """A message in the outbox, as the customer got it (`GET /api/outbox`)."""

    id: str  # msg_N
    customer: str  # cus_N
    journey: str | None
    step: str | None
    channel: str
    template: str
    purpose: str
    state: str
    status: str | None
    status_at: str | None
    created_at: str
    checked_at: str | None
    sent_at: str | None
    provider: str | None
    to: str | None
    locale: str | None
    content: JsonObject | None  # what the provider got
    error: str | None
    attempts: int
    idempotency_key: str


def outbox_page(
    conn: Connection,
    limit: int,
    before: int | None,
    customer_ids: list[int] | None = None,
    *,
    after: int | None = None,
    channel: str | None = None,
    journey_id: str | None = None,
    state: str | None = None,
) -> list[OutboxMessage]:
    """The outbox, newest first: what each customer got, as they got it; only what went
    to `customer_ids`, on `channel`, from `journey_id`, in `state`, after the message
    numbered `after`, when given."""
    rows = outbox_rows.page(
        conn,
        limit,
        before,
        customer_ids,
        after=after,
        channel=channel,
        journey_id=journey_id,
        state=state,
    )
    return [_as_shown(r) for r in rows]


def _as_shown(r: Any) -> OutboxMessage:
    created_at = iso(r.created_at)
    assert created_at is not None  # NOT NULL
    return OutboxMessage(
        id=public_message_id(r.id),
        customer=f"cus_{r.customer_id}",
        journey=r.journey_id,
        step=r.step_id,
        channel=r.channel,
        template=r.template,
        purpose=r.purpose,
        state=r.state,
        status=r.status,
        status_at=iso(r.status_at),
        created_at=created_at,
        checked_at=iso(r.checked_at),
        sent_at=iso(r.sent_at),
        provider=r.provider,
        to=r.address,
        locale=r.locale,
        content=_decode(r.rendered) if r.rendered else None,
        error=r.error,
        attempts=r.attempt,
        idempotency_key=r.idempotency_key,
    )
