"""The outbox as delivery and the API read it: one row or a batch, by the provider's id,
and the page `GET /api/outbox` shows."""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import Connection

from parcours.messaging.outbox import public_message_id
from parcours.runtime.clock import iso
from parcours.runtime.db import chunks, sql

_decode = msgspec.json.Decoder().decode

ROW_COLUMNS = (
    "id, idempotency_key, customer_id, journey_id, run_id, step_id, channel, template, "
    "purpose, state, created_at, detail, attempt, provider, provider_message_id, address, "
    "locale, rendered, status, error, sent_at"
)


def row(conn: Connection, outbox_id: int) -> Any:
    """One message's row, or None."""
    return sql(conn, f"SELECT {ROW_COLUMNS} FROM outbox WHERE id = :id", {"id": outbox_id}).first()


def rows(conn: Connection, outbox_ids: list[int], columns: str = ROW_COLUMNS) -> list[Any]:
    """The rows of these messages, as `row` gives one (or only these columns)."""
    found: list[Any] = []
    for part in chunks(outbox_ids):
        marks = ", ".join(f":id{n}" for n in range(len(part)))
        params = {f"id{n}": outbox_id for n, outbox_id in enumerate(part)}
        found += sql(conn, f"SELECT {columns} FROM outbox WHERE id IN ({marks})", params).all()
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


def message_of(conn: Connection, outbox_id: int) -> dict[str, Any] | None:
    """The provider and its id for a message, to check a callback against."""
    found = row(conn, outbox_id)
    if found is None:
        return None
    return {
        "provider": found.provider,
        "provider_message_id": found.provider_message_id,
        "channel": found.channel,
        "customer_id": found.customer_id,
    }


def outbox_page(
    conn: Connection, limit: int, before: int | None, customer_ids: list[int] | None = None
) -> list[dict[str, Any]]:
    """The outbox, newest first: what each customer got, as they got it; only what went
    to `customer_ids` when given."""
    conditions = [] if before is None else ["id < :before"]
    params: dict[str, Any] = {"limit": limit, "before": before}
    if customer_ids is not None:
        marks = ", ".join(f":c{n}" for n in range(len(customer_ids)))
        conditions.append(f"customer_id IN ({marks})")
        params |= {f"c{n}": customer_id for n, customer_id in enumerate(customer_ids)}
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    found = sql(
        conn,
        "SELECT id, customer_id, journey_id, step_id, channel, template, purpose, state, "
        "status, status_at, created_at, checked_at, sent_at, provider, address, locale, "
        "rendered, error, attempt, idempotency_key "
        f"FROM outbox{where} ORDER BY id DESC LIMIT :limit",
        params,
    ).all()
    return [_as_shown(r) for r in found]


def _as_shown(r: Any) -> dict[str, Any]:
    return {
        "id": public_message_id(r.id),
        "customer": f"cus_{r.customer_id}",
        "journey": r.journey_id,
        "step": r.step_id,
        "channel": r.channel,
        "template": r.template,
        "purpose": r.purpose,
        "state": r.state,
        "status": r.status,
        "status_at": iso(r.status_at),
        "created_at": iso(r.created_at),
        "checked_at": iso(r.checked_at),
        "sent_at": iso(r.sent_at),
        "provider": r.provider,
        "to": r.address,
        "locale": r.locale,
        "content": _decode(r.rendered) if r.rendered else None,
        "error": r.error,
        "attempts": r.attempt,
        "idempotency_key": r.idempotency_key,
    }


# ---- where a push or a Wallet message goes, read at every send (choice.py, preparers.py) --


def newest_push_endpoint(conn: Connection, customer_id: int, verified_only: bool) -> str | None:
    """The endpoint of the customer's newest push subscription (subscriptions.py); with
    `verified_only`, of the newest made with a verified user id."""
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
    "ROW_COLUMNS",
    "find",
    "in_flight",
    "installed_pass",
    "message_of",
    "newest_push_endpoint",
    "outbox_page",
    "push_subscription",
    "row",
    "rows",
    "wallet_push_tokens",
]
