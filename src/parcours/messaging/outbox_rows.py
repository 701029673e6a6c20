"""Messaging's hot path, in SQL written as text (tests/test_house.py, `RAW_SQL_HOMES`):
the statements run for every message. The outbox as delivery and the API read it (one
row or a batch, by the provider's id, the rows of `GET /api/outbox`) and as a send writes
it (an intent, its claim, its outcome, a cancellation); what channel choice and the
policies read at every send (suppressed addresses, engagement, the customer's recent
messages); the chat messages a widget has not confirmed yet, polled every second."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec
from sqlalchemy import Connection

from parcours.runtime.db import (
    chunks,
    held,
    like_escape,
    read_ahead,
    reading_ahead,
    release_held,
    select_in,
    sql,
    sql_many,
    take_ahead,
)

_decode = msgspec.json.Decoder().decode

ROW_COLUMNS = (
    "id, idempotency_key, customer_id, journey_id, run_id, step_id, channel, template, "
    "purpose, state, created_at, detail, attempt, provider, provider_message_id, address, "
    "locale, rendered, status, error, sent_at"
)
CANCELLED = "cancelled"  # the state of a message no longer wanted before it was sent
# How far a message got (timeline.RANK) as SQL; a failed message keeps its status.
STATUS_RANK_SQL = (
    "(CASE status WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 WHEN 'opened' THEN 3 "
    "WHEN 'read' THEN 3 WHEN 'clicked' THEN 4 WHEN 'failed' THEN 9 ELSE 0 END)"
)


# ---- reads of the outbox -------------------------------------------------------------------


def row(conn: Connection, outbox_id: int) -> Any:
    """One message's row, or None."""
    ahead = take_ahead(conn, _ROWS_AHEAD, outbox_id)
    if ahead is not None:
        return ahead
    return sql(conn, f"SELECT {ROW_COLUMNS} FROM outbox WHERE id = :id", {"id": outbox_id}).first()


def rows(conn: Connection, outbox_ids: list[int], columns: str = ROW_COLUMNS) -> list[Any]:
    """The rows of these messages, as `row` gives one (or only these columns)."""
    found: list[Any] = []
    for part in chunks(outbox_ids):
        marks = ", ".join(f":id{n}" for n in range(len(part)))
        params = {f"id{n}": outbox_id for n, outbox_id in enumerate(part)}
        found += sql(conn, f"SELECT {columns} FROM outbox WHERE id IN ({marks})", params).all()
    return found


_ROWS_AHEAD = "messaging.rows"


def read_ahead_rows(conn: Connection, outbox_ids: list[int]) -> list[Any]:
    """For a set of sends: these messages' rows (as `rows` gives them), kept for `row` to
    take, each once; what the set writes first makes them out of date (the set sends
    what it holds before a job about a customer an earlier one was about, and forgets
    what it read ahead)."""
    found = rows(conn, outbox_ids)
    read_ahead(conn, _ROWS_AHEAD, {int(found_row.id): found_row for found_row in found})
    return found


def find(conn: Connection, provider: str, provider_message_id: str) -> int | None:
    """The message a provider knows by this id."""
    value = sql(
        conn,
        "SELECT id FROM outbox WHERE provider = :p AND provider_message_id = :pid",
        {"p": provider, "pid": provider_message_id},
    ).scalar()
    return None if value is None else int(value)


def in_flight(conn: Connection, channel: str) -> bool:
    """Some message on this channel is being sent, its result not recorded yet."""
    return (
        sql(
            conn,
            "SELECT 1 FROM outbox WHERE state = 'sending' AND channel = :ch LIMIT 1",
            {"ch": channel},
        ).first()
        is not None
    )


@dataclass(frozen=True)
class KnownMessage:
    """What a provider's callback (or the chat widget) is checked against: the provider
    and its id for the message, its channel and its customer."""

    provider: str | None
    provider_message_id: str | None
    channel: str
    customer_id: int


def message_of(conn: Connection, outbox_id: int) -> KnownMessage | None:
    """The provider and its id for a message, to check a callback against."""
    found = row(conn, outbox_id)
    if found is None:
        return None
    return KnownMessage(
        found.provider, found.provider_message_id, found.channel, int(found.customer_id)
    )


def page(
    conn: Connection,
    limit: int,
    before: int | None,
    customer_ids: list[int] | None = None,
    *,
    after: int | None = None,
    channel: str | None = None,
    journey_id: str | None = None,
    state: str | None = None,
) -> list[Any]:
    """The rows of the outbox's page (outbox.outbox_page), newest first."""
    conditions = [] if before is None else ["id < :before"]
    params: dict[str, Any] = {"limit": limit, "before": before}
    if customer_ids is not None:
        marks = ", ".join(f":c{n}" for n in range(len(customer_ids)))
        conditions.append(f"customer_id IN ({marks})")
        params |= {f"c{n}": customer_id for n, customer_id in enumerate(customer_ids)}
    for column, value in (
        ("id >", after),
        ("channel =", channel),
        ("journey_id =", journey_id),
        ("state =", state),
    ):
        if value is not None:
            name = column.split()[0]
            conditions.append(f"{column} :{name}")
            params[name] = value
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return sql(
        conn,
        "SELECT id, customer_id, journey_id, step_id, channel, template, purpose, state, "
        "status, status_at, created_at, checked_at, sent_at, provider, address, locale, "
        "rendered, error, attempt, idempotency_key "
        f"FROM outbox{where} ORDER BY id DESC LIMIT :limit",
        params,
    ).all()


def extend_lease(conn: Connection, outbox_ids: Sequence[int], until: int) -> None:
    """The messages still being sent keep their lease until `until`."""
    if not outbox_ids:
        return
    marks = ", ".join(f":i{n}" for n in range(len(outbox_ids)))
    sql(
        conn,
        f"UPDATE outbox SET lease_until = :until WHERE id IN ({marks}) AND state = 'sending'",
        {"until": until, **{f"i{n}": ident for n, ident in enumerate(outbox_ids)}},
    )


# ---- a message's way: intent, claim, outcome ------------------------------------------------


_INTENT_COLUMNS = "(:k, :c, :j, :r, :s, :ch, :t, :p, 'pending', :now, :d, :a, 'queued')"
_INSERT_INTENTS = (
    "INSERT INTO outbox (idempotency_key, customer_id, journey_id, run_id, step_id, "
    "channel, template, purpose, state, created_at, detail, address, status) VALUES "
)
_HELD_INTENTS = "messaging.intents"
_INTENTS_A_STATEMENT = 80  # 11 parameters each: under SQLite's oldest limit of 999


class HeldIntents:
    """The intents a set of jobs writes, inserted at its end (`hold_intent`): one
    statement for 80 of them, then their delivery jobs (`on_inserted`, given each new
    row's id, customer and time; a key already taken gives none, as `insert_intent`)."""

    def __init__(self, on_inserted: Any) -> None:
        self.rows: list[dict[str, Any]] = []
        self.on_inserted = on_inserted

    def write(self, conn: Connection) -> None:
        for part in chunks(self.rows, _INTENTS_A_STATEMENT):
            marks, params = [], {}
            for n, values in enumerate(part):
                marks.append(_INTENT_COLUMNS.replace(":", f":i{n}_"))
                params.update({f"i{n}_{name}": value for name, value in values.items()})
            rows = sql(
                conn,
                _INSERT_INTENTS + ", ".join(marks) + " ON CONFLICT (idempotency_key) DO NOTHING "
                "RETURNING id, customer_id, created_at",
                params,
            ).all()
            for row in sorted(rows, key=lambda row: int(row.id)):
                self.on_inserted(conn, int(row.id), int(row.customer_id), int(row.created_at))


def hold_intent(conn: Connection, values: dict[str, Any], on_inserted: Any) -> bool:
    """Keep this intent for the set of jobs running on `conn` to insert at its end (False:
    none runs: insert it now)."""
    later = held(conn, _HELD_INTENTS, lambda: HeldIntents(on_inserted))
    if later is None:
        return False
    later.rows.append(values)
    return True


def release_intents(conn: Connection) -> None:
    """Before a read that could see them: the intents a set holds are inserted."""
    release_held(conn, _HELD_INTENTS)


def insert_intent(conn: Connection, values: dict[str, Any]) -> int | None:
    """A new intent, `pending`; None when its idempotency key is taken (the values: `k`,
    `c`, `j`, `r`, `s`, `ch`, `t`, `p`, `now`, `d`, `a`)."""
    found = sql(
        conn,
        "INSERT INTO outbox (idempotency_key, customer_id, journey_id, run_id, step_id, "
        "channel, template, purpose, state, created_at, detail, address, status) VALUES "
        "(:k, :c, :j, :r, :s, :ch, :t, :p, 'pending', :now, :d, :a, 'queued') "
        "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
        values,
    ).first()
    return None if found is None else int(found.id)


def cancel_pending_of_run(
    conn: Connection, customer_id: int, run_id: int, reason: str, now: int
) -> list[Any]:
    """A run's messages not yet handed to a provider, cancelled with the reason: their
    rows' id, channel, template, purpose and step, in no order."""
    release_intents(conn)
    return sql(
        conn,
        "UPDATE outbox SET state = :cancelled, status = :cancelled, status_at = :now, "
        "error = :r WHERE customer_id = :c AND run_id = :run AND state = 'pending' "
        "RETURNING id, channel, template, purpose, step_id",
        {"cancelled": CANCELLED, "now": now, "r": reason, "c": customer_id, "run": run_id},
    ).all()


def mark_cancelled(
    conn: Connection, outbox_id: int, reason: str, checked_at: int, now: int
) -> None:
    """A message no longer wanted when its delivery came."""
    sql(
        conn,
        "UPDATE outbox SET state = :s, status = :s, status_at = :now, error = :r, "
        "checked_at = :at WHERE id = :id",
        {"s": CANCELLED, "now": now, "r": reason, "at": checked_at, "id": outbox_id},
    )


_MARK_SENDING = (
    "UPDATE outbox SET state = 'sending', attempt = :a, lease_until = :lease, rendered = :r, "
    "locale = :l, provider = :p, checked_at = COALESCE(:checked, checked_at) WHERE id = :id"
)


def mark_sending(
    conn: Connection,
    outbox_id: int,
    attempt: int,
    lease_until: int,
    rendered: str,
    locale: str,
    provider: str,
    checked_at: int | None,
) -> None:
    """Claimed: `sending` until the lease's end, with its content (the last check kept
    when `checked_at` is None)."""
    _update(
        conn,
        _MARK_SENDING,
        {
            "a": attempt,
            "checked": checked_at,
            "lease": lease_until,
            "r": rendered,
            "l": locale,
            "p": provider,
            "id": outbox_id,
        },
    )


_MARK_SENT = (
    "UPDATE outbox SET state = 'sent', provider_message_id = :pid, sent_at = :now, "
    "status = 'sent', status_at = :now, lease_until = NULL, error = NULL WHERE id = :id"
)


def mark_sent(conn: Connection, outbox_id: int, provider_message_id: str, now: int) -> None:
    """The provider took it, under this id."""
    _update(conn, _MARK_SENT, {"pid": provider_message_id, "now": now, "id": outbox_id})


_HELD_UPDATES = "messaging.outbox_updates"


class _HeldUpdates:
    """The outbox's updates a set of jobs (or a batch of sends recorded) holds: one
    executemany per statement, in the order each was first used. A job reads only its
    own customer's messages, and the set sends what it holds before a job whose customer
    an earlier one was about: no job reads a row whose update is held."""

    def __init__(self) -> None:
        self.updates: dict[str, list[dict[str, Any]]] = {}

    def write(self, conn: Connection) -> None:
        for statement, params in self.updates.items():
            sql_many(conn, statement, params)


def _update(conn: Connection, statement: str, params: dict[str, Any]) -> None:
    later = held(conn, _HELD_UPDATES, _HeldUpdates)
    if later is not None:
        later.updates.setdefault(statement, []).append(params)
    else:
        sql(conn, statement, params)


def mark_pending_again(conn: Connection, outbox_id: int, error: str) -> None:
    """A transient failure: pending again, to be tried later."""
    sql(
        conn,
        "UPDATE outbox SET state = 'pending', error = :e, lease_until = NULL WHERE id = :id",
        {"e": error, "id": outbox_id},
    )


def mark_failed(conn: Connection, outbox_id: int, error: str, now: int) -> None:
    """The attempt ended, failed."""
    sql(
        conn,
        "UPDATE outbox SET state = 'failed', status = 'failed', status_at = :now, "
        "error = :e, lease_until = NULL WHERE id = :id",
        {"now": now, "e": error, "id": outbox_id},
    )


_MOVE_FORWARD = (
    f"UPDATE outbox SET status = :s, status_at = :now WHERE id = :id AND {STATUS_RANK_SQL} < :rank"
)


def move_status_forward(conn: Connection, outbox_id: int, status: str, rank: int, now: int) -> None:
    """The status, if it is further than the row's (`rank`: its RANK), decided by the row
    as it is when updated."""
    _update(conn, _MOVE_FORWARD, {"s": status, "now": now, "id": outbox_id, "rank": rank})


# ---- what channel choice and the policies read at every send --------------------------------


_SUPPRESSED_AHEAD = "messaging.suppressed"
_SENT_AHEAD = "messaging.sent"
_PUSH_AHEAD = "messaging.push"


def read_ahead_for_sends(conn: Connection, customer_ids: Sequence[int], since: int) -> None:
    """For a set of jobs about to send to these customers: their suppressed addresses,
    their messages created after `since` and their push subscriptions, three queries for
    all of them (`suppressed`, `sent_since`, `newest_push_endpoint` take them). Nothing
    when no set runs."""
    if not customer_ids or not reading_ahead(conn):
        return
    suppressed_of: dict[int, set[tuple[str, str]]] = {c: set() for c in customer_ids}
    for customer, channel, address in select_in(
        conn,
        "SELECT customer_id, channel, address FROM suppressions WHERE customer_id IN ({marks})",
        customer_ids,
    ):
        suppressed_of[int(customer)].add((channel, address))
    read_ahead(conn, _SUPPRESSED_AHEAD, suppressed_of)
    sent: dict[int, tuple[int, list[Any]]] = {c: (since, []) for c in customer_ids}
    for row in select_in(
        conn,
        "SELECT customer_id, channel, template, purpose, created_at, idempotency_key FROM outbox "
        "WHERE created_at > {mark} AND state <> 'cancelled' AND customer_id IN ({marks}) "
        "ORDER BY customer_id, created_at",
        customer_ids,
        (since,),
    ):
        sent[int(row[0])][1].append(_SentRow(*row[1:]))
    read_ahead(conn, _SENT_AHEAD, sent)
    endpoints: dict[int, list[tuple[str, bool]]] = {c: [] for c in customer_ids}
    for customer, endpoint, verified in select_in(
        conn,
        "SELECT customer_id, endpoint, verified_user_id IS NOT NULL FROM push_subscriptions "
        "WHERE customer_id IN ({marks}) ORDER BY customer_id, created_at DESC, id DESC",
        customer_ids,
    ):
        endpoints[int(customer)].append((str(endpoint), bool(verified)))
    read_ahead(conn, _PUSH_AHEAD, endpoints)


class _SentRow(NamedTuple):
    channel: str
    template: str
    purpose: str
    created_at: int
    idempotency_key: str


def suppressed(conn: Connection, customer_id: int) -> set[tuple[str, str]]:
    """The customer's suppressed addresses, as (channel, address)."""
    ahead: set[tuple[str, str]] | None = take_ahead(conn, _SUPPRESSED_AHEAD, customer_id)
    if ahead is not None:
        return ahead
    return {
        (found.channel, found.address)
        for found in sql(
            conn,
            "SELECT channel, address FROM suppressions WHERE customer_id = :c",
            {"c": customer_id},
        ).all()
    }


def engagement(conn: Connection, customer_id: int, since: int) -> dict[str, int]:
    """How many of the customer's messages created after `since` were opened, read or
    clicked, per channel."""
    return {
        found.channel: int(found.n)
        for found in sql(
            conn,
            "SELECT channel, count(*) AS n FROM outbox WHERE customer_id = :c AND created_at > "
            ":since AND status IN ('opened', 'read', 'clicked') GROUP BY channel",
            {"c": customer_id, "since": since},
        ).all()
    }


def sent_since(
    conn: Connection, customer_id: int, since: int, attempts_of: str | None
) -> list[Any]:
    """The customer's messages created after `since` (channel, template, purpose,
    created_at), oldest first, leaving out those cancelled before they were handed over
    and, given `attempts_of`, the attempts whose key starts with it."""
    ahead: tuple[int, list[_SentRow]] | None = take_ahead(conn, _SENT_AHEAD, customer_id)
    if ahead is not None and ahead[0] <= since:
        return [
            row
            for row in ahead[1]
            if row.created_at > since
            and (attempts_of is None or not row.idempotency_key.startswith(attempts_of))
        ]
    release_intents(conn)
    earlier, params = "", {}
    if attempts_of is not None:
        earlier = " AND idempotency_key NOT LIKE :attempts ESCAPE '\\'"
        params = {"attempts": like_escape(attempts_of) + "%"}
    return sql(
        conn,
        "SELECT channel, template, purpose, created_at FROM outbox WHERE customer_id = :c "
        f"AND created_at > :since AND state <> 'cancelled'{earlier} ORDER BY created_at",
        {"c": customer_id, "since": since, **params},
    ).all()


# ---- the site chat -------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatMessage:
    """A chat message sent to a customer, waiting for a widget to confirm it has it."""

    outbox_id: int
    text: str


def unconfirmed_chat_messages(conn: Connection, customer_id: int) -> list[ChatMessage]:
    """The chat messages sent to this customer that no widget has confirmed yet, oldest
    first (the chat endpoint polls this every second for each open widget)."""
    found = sql(
        conn,
        "SELECT id, rendered FROM outbox WHERE customer_id = :c AND channel = 'chat' "
        "AND state = 'sent' AND status = 'sent' ORDER BY id",
        {"c": customer_id},
    ).all()
    return [ChatMessage(int(r.id), _decode(r.rendered)["text"]) for r in found]


# ---- where a push or a Wallet message goes, read at every send (choice.py, preparers.py) --


def newest_push_endpoint(conn: Connection, customer_id: int, verified_only: bool) -> str | None:
    """The endpoint of the customer's newest push subscription (subscriptions.py); with
    `verified_only`, of the newest made with a verified user id."""
    ahead: list[tuple[str, bool]] | None = take_ahead(conn, _PUSH_AHEAD, customer_id)
    if ahead is not None:
        return next((e for e, verified in ahead if verified or not verified_only), None)
    verified = " AND verified_user_id IS NOT NULL" if verified_only else ""
    value = sql(
        conn,
        f"SELECT endpoint FROM push_subscriptions WHERE customer_id = :c{verified} "
        "ORDER BY created_at DESC, id DESC LIMIT 1",
        {"c": customer_id},
    ).scalar()
    return None if value is None else str(value)


def push_subscription(conn: Connection, endpoint: str) -> tuple[str, str, str] | None:
    """The push subscription at this endpoint: (endpoint, p256dh, auth)."""
    found = sql(
        conn,
        "SELECT endpoint, p256dh, auth FROM push_subscriptions WHERE endpoint = :e",
        {"e": endpoint},
    ).first()
    return None if found is None else (found.endpoint, found.p256dh, found.auth)


def installed_pass(conn: Connection, customer_id: int) -> str | None:
    """The serial of the customer's newest Wallet pass that some device has added
    (passes.py)."""
    value = sql(
        conn,
        "SELECT p.serial FROM wallet_passes p WHERE p.customer_id = :c AND EXISTS "
        "(SELECT 1 FROM wallet_registrations r WHERE r.serial = p.serial) "
        "ORDER BY p.created_at DESC LIMIT 1",
        {"c": customer_id},
    ).scalar()
    return None if value is None else str(value)


def wallet_push_tokens(conn: Connection, serial: str) -> list[str]:
    """The APNs push tokens of the devices holding this pass (or Wallet order)."""
    return [
        str(value)
        for value in sql(
            conn,
            "SELECT push_token FROM wallet_registrations WHERE serial = :s ORDER BY device_id",
            {"s": serial},
        ).scalars()
    ]


__all__ = [
    "CANCELLED",
    "ROW_COLUMNS",
    "STATUS_RANK_SQL",
    "ChatMessage",
    "KnownMessage",
    "cancel_pending_of_run",
    "engagement",
    "find",
    "in_flight",
    "insert_intent",
    "installed_pass",
    "mark_cancelled",
    "mark_failed",
    "mark_pending_again",
    "mark_sending",
    "mark_sent",
    "message_of",
    "move_status_forward",
    "newest_push_endpoint",
    "page",
    "push_subscription",
    "row",
    "rows",
    "sent_since",
    "suppressed",
    "unconfirmed_chat_messages",
    "wallet_push_tokens",
]
