"""Wallet passes issued to customers and the devices that registered them (Apple's pass
web service protocol), what a wallet "message" or new fields change on a pass, and the
requests that carry a change to the devices (APNs) and to Google Wallet; the same
registrations serve Wallet orders (messaging/wallet_orders.py)."""

from __future__ import annotations

import secrets
from typing import Any

import msgspec
from sqlalchemy import Connection

from parcours.messaging.outbox import QUEUE
from parcours.runtime.db import sql
from parcours.runtime.queue import enqueue

KINDS = ("loyalty", "coupon", "vip")
PUSH = "messaging.wallet_push"  # tell the devices holding a pass or an order it changed
GOOGLE_SYNC = "messaging.wallet_google"  # bring a pass's Google Wallet object in step
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def issue(
    conn: Connection,
    customer_id: int,
    kind: str,
    fields: dict[str, Any],
    now: int,
    google_issuer_id: str | None = None,
) -> dict[str, Any]:
    """A new pass; with `google_issuer_id`, the same card is also offered for Google
    Wallet as the generic object `<issuer>.<serial>`, kept in step from then on."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    serial = secrets.token_hex(12)
    record = {
        "serial": serial,
        "customer_id": customer_id,
        "kind": kind,
        "auth_token": secrets.token_urlsafe(24),
        "fields": fields,
        "created_at": now,
        "updated_at": now,
        "google_object_id": f"{google_issuer_id}.{serial}" if google_issuer_id else None,
    }
    sql(
        conn,
        "INSERT INTO wallet_passes (serial, customer_id, kind, auth_token, fields, created_at, "
        "updated_at, google_object_id) VALUES (:serial, :customer_id, :kind, :auth_token, "
        ":fields, :created_at, :updated_at, :google_object_id)",
        {**record, "fields": _encode(fields).decode()},
    )
    return record


def get(conn: Connection, serial: str, *, lock: bool = False) -> dict[str, Any] | None:
    """The pass; with `lock`, its row is locked until the transaction ends (PostgreSQL;
    SQLite has one writer), for a read that an update follows."""
    suffix = " FOR UPDATE" if lock and conn.dialect.name != "sqlite" else ""
    row = sql(
        conn,
        "SELECT serial, customer_id, kind, auth_token, fields, created_at, updated_at, "
        f"google_object_id FROM wallet_passes WHERE serial = :s{suffix}",
        {"s": serial},
    ).first()
    if row is None:
        return None
    return {
        "serial": row.serial,
        "customer_id": row.customer_id,
        "kind": row.kind,
        "auth_token": row.auth_token,
        "fields": _decode(row.fields),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "google_object_id": row.google_object_id,
    }


def next_tag(previous: int, now: int) -> int:
    """The updated-at tag of a change: a later whole second than the last one, so that a
    device's `If-Modified-Since` (HTTP dates count seconds) never hides a change."""
    return max(now, (previous // 1000 + 1) * 1000)


def set_message(conn: Connection, serial: str, header: str, body: str, now: int) -> None:
    """A wallet message: the pass's news field changes (devices show it as a notice; the
    delivery of the message tells them). Google Wallet is brought in step too."""
    record = get(conn, serial, lock=True)
    if record is None:
        raise LookupError(f"no pass {serial}")
    _save_fields(conn, record, {"message": {"header": header, "body": body}}, now)


def update_fields(
    conn: Connection, serial: str, fields: dict[str, Any], now: int
) -> dict[str, Any] | None:
    """New values for a pass's fields (the points on a loyalty card, a coupon's offer):
    the devices holding it are told through APNs, and Google Wallet is brought in step.
    None when there is no such pass."""
    record = get(conn, serial, lock=True)
    if record is None:
        return None
    updated = _save_fields(conn, record, fields, now)
    request_push(conn, serial, int(record["customer_id"]), now)
    return updated


def _save_fields(
    conn: Connection, record: dict[str, Any], changes: dict[str, Any], now: int
) -> dict[str, Any]:
    fields = {**record["fields"], **changes}
    tag = next_tag(int(record["updated_at"]), now)
    sql(
        conn,
        "UPDATE wallet_passes SET fields = :f, updated_at = :now WHERE serial = :s",
        {"f": _encode(fields).decode(), "now": tag, "s": record["serial"]},
    )
    if record.get("google_object_id"):
        enqueue(
            conn,
            GOOGLE_SYNC,
            {"serial": record["serial"]},
            run_at=now,
            now=now,
            queue=QUEUE,
            unique_key=f"wallet-google:{record['serial']}",
            customer_id=int(record["customer_id"]),
        )
    return {**record, "fields": fields, "updated_at": tag}


def request_push(
    conn: Connection, serial: str, customer_id: int, now: int, kind: str = "pass"
) -> None:
    """Ask for the devices holding this pass (or, with kind "order", this Wallet order) to
    be told, after this transaction commits (one live request per pass or order: a newer
    change replaces it)."""
    enqueue(
        conn,
        PUSH,
        {"serial": serial, "kind": kind},
        run_at=now,
        now=now,
        queue=QUEUE,
        unique_key=f"wallet-push:{serial}",
        customer_id=customer_id,
    )


def register(
    conn: Connection, device: str, serial: str, push_token: str, customer_id: int, now: int
) -> bool:
    """True when the device is new for this pass (or order); a known device's push token
    is brought up to date."""
    known = sql(
        conn,
        "SELECT 1 FROM wallet_registrations WHERE device_id = :d AND serial = :s",
        {"d": device, "s": serial},
    ).first()
    sql(
        conn,
        "INSERT INTO wallet_registrations (device_id, serial, push_token, customer_id, "
        "created_at) VALUES (:d, :s, :p, :c, :now) ON CONFLICT (device_id, serial) DO UPDATE "
        "SET push_token = excluded.push_token",
        {"d": device, "s": serial, "p": push_token, "c": customer_id, "now": now},
    )
    return known is None


def unregister(conn: Connection, device: str, serial: str) -> None:
    sql(
        conn,
        "DELETE FROM wallet_registrations WHERE device_id = :d AND serial = :s",
        {"d": device, "s": serial},
    )


def updated_for_device(conn: Connection, device: str, since: int | None) -> list[tuple[str, int]]:
    """(serial, updated_at) of the device's passes changed after `since`."""
    return [
        (row.serial, int(row.updated_at))
        for row in sql(
            conn,
            "SELECT p.serial, p.updated_at FROM wallet_registrations r JOIN wallet_passes p "
            "ON p.serial = r.serial WHERE r.device_id = :d AND p.updated_at > :since "
            "ORDER BY p.serial",
            {"d": device, "since": since or 0},
        ).all()
    ]


def installed(conn: Connection, customer_id: int) -> str | None:
    """The serial of the customer's newest pass that some device has added."""
    value = sql(
        conn,
        "SELECT p.serial FROM wallet_passes p WHERE p.customer_id = :c AND EXISTS "
        "(SELECT 1 FROM wallet_registrations r WHERE r.serial = p.serial) "
        "ORDER BY p.created_at DESC LIMIT 1",
        {"c": customer_id},
    ).scalar()
    return None if value is None else str(value)


def push_tokens(conn: Connection, serial: str) -> list[str]:
    """The APNs push tokens of the devices holding this pass (or order)."""
    return [
        str(value)
        for value in sql(
            conn,
            "SELECT push_token FROM wallet_registrations WHERE serial = :s ORDER BY device_id",
            {"s": serial},
        ).scalars()
    ]


def forget_push_tokens(conn: Connection, serial: str, tokens: list[str]) -> None:
    """APNs says these devices are gone: they no longer hold this pass (or order)."""
    for token in tokens:
        sql(
            conn,
            "DELETE FROM wallet_registrations WHERE serial = :s AND push_token = :p",
            {"s": serial, "p": token},
        )


def reassign(conn: Connection, old: int, new: int) -> None:
    """Profiles merged: the merged customer's passes and devices are the survivor's."""
    for table in ("wallet_passes", "wallet_registrations"):
        sql(
            conn,
            f"UPDATE {table} SET customer_id = :new WHERE customer_id = :old",
            {"new": new, "old": old},
        )
