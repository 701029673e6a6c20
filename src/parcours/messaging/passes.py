"""Wallet passes issued to customers and the devices that registered them (Apple's pass
web service protocol), and what a wallet "message" changes on a pass."""

from __future__ import annotations

import secrets
from typing import Any

import msgspec
from sqlalchemy import Connection

from parcours.runtime.db import run

KINDS = ("loyalty", "coupon", "vip")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def issue(
    conn: Connection, customer_id: int, kind: str, fields: dict[str, Any], now: int
) -> dict[str, Any]:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    record = {
        "serial": secrets.token_hex(12),
        "customer_id": customer_id,
        "kind": kind,
        "auth_token": secrets.token_urlsafe(24),
        "fields": fields,
        "created_at": now,
        "updated_at": now,
    }
    run(
        conn,
        "INSERT INTO wallet_passes (serial, customer_id, kind, auth_token, fields, created_at, "
        "updated_at) VALUES (:serial, :customer_id, :kind, :auth_token, :fields, :created_at, "
        ":updated_at)",
        {**record, "fields": _encode(fields).decode()},
    )
    return record


def get(conn: Connection, serial: str) -> dict[str, Any] | None:
    row = run(
        conn,
        "SELECT serial, customer_id, kind, auth_token, fields, created_at, updated_at "
        "FROM wallet_passes WHERE serial = :s",
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
    }


def set_message(conn: Connection, serial: str, header: str, body: str, now: int) -> None:
    """A wallet message: the pass's news field changes (devices show it as a notice)."""
    record = get(conn, serial)
    if record is None:
        raise LookupError(f"no pass {serial}")
    fields = {**record["fields"], "message": {"header": header, "body": body}}
    run(
        conn,
        "UPDATE wallet_passes SET fields = :f, updated_at = :now WHERE serial = :s",
        {
            "f": _encode(fields).decode(),
            "now": max(now, int(record["updated_at"]) + 1),
            "s": serial,
        },
    )


def register(conn: Connection, device: str, serial: str, push_token: str, now: int) -> bool:
    """True when the device is new for this pass."""
    result = run(
        conn,
        "INSERT INTO wallet_registrations (device_id, serial, push_token, created_at) VALUES "
        "(:d, :s, :p, :now) ON CONFLICT (device_id, serial) DO UPDATE SET push_token = "
        "excluded.push_token RETURNING created_at",
        {"d": device, "s": serial, "p": push_token, "now": now},
    ).first()
    return bool(result is not None and int(result.created_at) == now)


def unregister(conn: Connection, device: str, serial: str) -> None:
    run(
        conn,
        "DELETE FROM wallet_registrations WHERE device_id = :d AND serial = :s",
        {"d": device, "s": serial},
    )


def updated_for_device(conn: Connection, device: str, since: int | None) -> list[tuple[str, int]]:
    """(serial, updated_at) of the device's passes changed after `since`."""
    return [
        (row.serial, int(row.updated_at))
        for row in run(
            conn,
            "SELECT p.serial, p.updated_at FROM wallet_registrations r JOIN wallet_passes p "
            "ON p.serial = r.serial WHERE r.device_id = :d AND p.updated_at > :since "
            "ORDER BY p.serial",
            {"d": device, "since": since or 0},
        ).all()
    ]


def installed(conn: Connection, customer_id: int) -> str | None:
    """The serial of the customer's newest pass that some device has added."""
    value = run(
        conn,
        "SELECT p.serial FROM wallet_passes p WHERE p.customer_id = :c AND EXISTS "
        "(SELECT 1 FROM wallet_registrations r WHERE r.serial = p.serial) "
        "ORDER BY p.created_at DESC LIMIT 1",
        {"c": customer_id},
    ).scalar()
    return None if value is None else str(value)


def push_tokens(conn: Connection, serial: str) -> list[str]:
    """The APNs push tokens of the devices holding this pass."""
    return [
        str(value)
        for value in run(
            conn,
            "SELECT push_token FROM wallet_registrations WHERE serial = :s ORDER BY device_id",
            {"s": serial},
        ).scalars()
    ]
