"""Suppressed addresses: never written to again on their channel until an admin lifts the
suppression. Email bounces are counted here, by the one rule of channels/email_bounces.py:
a hard bounce bars the address at once; soft bounces bar it once `soft_limit` of them
(one per message) fall within `soft_window_days`. Inbound mail that changed nothing is
kept here too, with why, for an admin to read (docs/channels.md)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import Connection

from parcours.channels import HARD, SOFT, ConfigError, DeliveryFailure, PermanentFailure
from parcours.messaging import subscriptions
from parcours.runtime.clock import iso
from parcours.runtime.db import sql

DAY_MS = 86_400_000
# Peers: Klaviyo bars after 7 soft bounces in a row, Postmark and Braze never bar on soft
# bounces; 3 within 30 days (docs/channels.md says why) is the default.
DEFAULT_SOFT_LIMIT = 3
DEFAULT_SOFT_WINDOW_DAYS = 30
IGNORED_KEPT_DAYS = 90  # inbound mail not acted on is kept this long, then deleted
# Sources recorded with a suppression or a bounce.
BOUNCE_MESSAGE = "bounce message"
SOFT_BOUNCES = "soft bounces"

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


@dataclass(frozen=True)
class BounceRule:
    soft_limit: int = DEFAULT_SOFT_LIMIT
    soft_window_days: int = DEFAULT_SOFT_WINDOW_DAYS

    @classmethod
    def from_config(cls, section: Any) -> BounceRule:
        """`channels.email.soft_bounce_limit` and `soft_bounce_window_days`, checked."""
        if not isinstance(section, dict):
            return cls()  # the providers' own check names what is wrong with the section
        values = []
        for name, default, high in (
            ("soft_bounce_limit", DEFAULT_SOFT_LIMIT, 100),
            ("soft_bounce_window_days", DEFAULT_SOFT_WINDOW_DAYS, 3650),
        ):
            value = section.get(name, default)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
                raise ConfigError(
                    f"channels.email.{name} must be a whole number from 1 to {high}, got {value!r}"
                )
            values.append(value)
        return cls(values[0], values[1])


def suppress(
    conn: Connection,
    channel: str,
    address: str,
    reason: str,
    customer_id: int | None,
    now: int,
    *,
    source: str | None = None,
    outbox_id: int | None = None,
) -> None:
    """Never write to this address on this channel again (a hard bounce, a dead number);
    a push subscription the push service says is gone is removed."""
    if channel == "push":
        subscriptions.remove(conn, address)
    sql(
        conn,
        "INSERT INTO suppressions (channel, address, reason, customer_id, created_at, source, "
        "outbox_id) VALUES (:ch, :a, :r, :c, :now, :s, :o) "
        "ON CONFLICT (channel, address) DO NOTHING",
        {
            "ch": channel,
            "a": address,
            "r": _text(reason, 1000),
            "c": customer_id,
            "now": now,
            "s": source,
            "o": outbox_id,
        },
    )


def after_failure(
    conn: Connection,
    rule: BounceRule,
    row: Any,
    failure: DeliveryFailure,
    source: str,
    now: int,
) -> None:
    """What a message's failure does to its address: an email bounce is recorded (hard
    bars, soft counts); another channel's address is barred when the failure says so."""
    if not row.address:
        return
    hard = isinstance(failure, PermanentFailure) and failure.suppress
    if row.channel == "email" and (hard or failure.soft_bounce):
        record_bounce(
            conn,
            rule,
            address=row.address,
            kind=HARD if hard else SOFT,
            reason=failure.reason,
            source=source,
            customer_id=row.customer_id,
            outbox_id=row.id,
            now=now,
        )
    elif hard:
        suppress(
            conn,
            row.channel,
            row.address,
            failure.reason,
            row.customer_id,
            now,
            source=source,
            outbox_id=row.id,
        )


def record_bounce(
    conn: Connection,
    rule: BounceRule,
    *,
    address: str,
    kind: str,
    reason: str,
    source: str,
    customer_id: int | None,
    outbox_id: int | None,
    now: int,
) -> str | None:
    """Count one email bounce (at most one per message: the unique index on
    `bounces.outbox_id` keeps the first, even when two reports about one message are
    recorded at once); the reason the address is now barred, or None when it is not (or
    was already, or this message's bounce was counted before)."""
    inserted = sql(
        conn,
        "INSERT INTO bounces (channel, address, customer_id, outbox_id, kind, reason, source, "
        "at) VALUES ('email', :a, :c, :o, :k, :r, :s, :now) "
        "ON CONFLICT (outbox_id) DO NOTHING",
        {
            "a": address,
            "c": customer_id,
            "o": outbox_id,
            "k": kind,
            "r": _text(reason, 1000),
            "s": source,
            "now": now,
        },
    ).rowcount
    if not inserted:
        return None
    if kind == HARD:
        barred = reason
        suppress(
            conn, "email", address, reason, customer_id, now, source=source, outbox_id=outbox_id
        )
        return barred
    count = int(
        sql(
            conn,
            "SELECT count(*) FROM bounces WHERE channel = 'email' AND address = :a "
            "AND kind = 'soft' AND cleared_at IS NULL AND at >= :since",
            {"a": address, "since": now - rule.soft_window_days * DAY_MS},
        ).scalar_one()
    )
    if count < rule.soft_limit:
        return None
    barred = (f"{count} soft bounces within {rule.soft_window_days} days; the last: {reason}")[
        :1000
    ]
    suppress(
        conn, "email", address, barred, customer_id, now, source=SOFT_BOUNCES, outbox_id=outbox_id
    )
    return barred


def is_suppressed(conn: Connection, channel: str, address: str) -> bool:
    return (
        sql(
            conn,
            "SELECT 1 FROM suppressions WHERE channel = :ch AND address = :a",
            {"ch": channel, "a": address},
        ).first()
        is not None
    )


def lift(conn: Connection, channel: str, address: str, now: int) -> dict[str, Any] | None:
    """Remove the suppression (the address may be written to again) and clear its soft
    bounces, so that counting starts again; what was lifted, or None if nothing was."""
    row = sql(
        conn,
        f"SELECT {_COLUMNS} FROM suppressions WHERE channel = :ch AND address = :a",
        {"ch": channel, "a": address},
    ).first()
    if row is None:
        return None
    sql(
        conn,
        "DELETE FROM suppressions WHERE channel = :ch AND address = :a",
        {"ch": channel, "a": address},
    )
    sql(
        conn,
        "UPDATE bounces SET cleared_at = :now WHERE channel = :ch AND address = :a "
        "AND cleared_at IS NULL",
        {"now": now, "ch": channel, "a": address},
    )
    return _view(row)


# ---- reading, for the admin API -----------------------------------------------------------

_COLUMNS = "channel, address, reason, customer_id, created_at, source, outbox_id"


class BadCursor(ValueError):
    """A `before` cursor that is not one this API gave."""


def page(
    conn: Connection,
    limit: int,
    *,
    channel: str | None = None,
    address: str | None = None,
    customer_ids: list[int] | None = None,
    before: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Suppressions, newest first, and the cursor of the next page (None at the end)."""
    conditions: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    if channel is not None:
        conditions.append("channel = :ch")
        params["ch"] = channel
    if address is not None:
        conditions.append("address = :a")
        params["a"] = address
    if customer_ids is not None:
        marks = ", ".join(f":c{n}" for n in range(len(customer_ids)))
        conditions.append(f"customer_id IN ({marks})")
        params |= {f"c{n}": value for n, value in enumerate(customer_ids)}
    if before is not None:
        at, before_channel, before_address = _read_cursor(before)
        conditions.append(
            "(created_at < :bt OR (created_at = :bt AND (channel > :bc OR "
            "(channel = :bc AND address > :ba))))"
        )
        params |= {"bt": at, "bc": before_channel, "ba": before_address}
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = sql(
        conn,
        f"SELECT {_COLUMNS} FROM suppressions{where} "
        "ORDER BY created_at DESC, channel, address LIMIT :limit",
        params,
    ).all()
    cursor = None
    if len(rows) == limit:
        last = rows[-1]
        cursor = _cursor(int(last.created_at), last.channel, last.address)
    return [_view(row) for row in rows], cursor


def bounce_history(
    conn: Connection, address: str | None, customer_ids: list[int] | None, limit: int
) -> list[dict[str, Any]]:
    """An address's (or customers') email bounces, newest first."""
    conditions = ["channel = 'email'"]
    params: dict[str, Any] = {"limit": limit}
    if address is not None:
        conditions.append("address = :a")
        params["a"] = address
    if customer_ids is not None:
        marks = ", ".join(f":c{n}" for n in range(len(customer_ids)))
        conditions.append(f"customer_id IN ({marks})")
        params |= {f"c{n}": value for n, value in enumerate(customer_ids)}
    rows = sql(
        conn,
        "SELECT id, address, customer_id, outbox_id, kind, reason, source, at, cleared_at "
        f"FROM bounces WHERE {' AND '.join(conditions)} ORDER BY at DESC, id DESC "
        "LIMIT :limit",
        params,
    ).all()
    return [
        {
            "address": row.address,
            "kind": row.kind,
            "reason": row.reason,
            "source": row.source,
            "at": iso(row.at),
            "counted": row.kind == SOFT and row.cleared_at is None,
            "cleared_at": iso(row.cleared_at) if row.cleared_at is not None else None,
            "customer": _customer(row.customer_id),
            "message": _message(row.outbox_id),
        }
        for row in rows
    ]


def _view(row: Any) -> dict[str, Any]:
    return {
        "channel": row.channel,
        "address": row.address,
        "reason": row.reason,
        "source": row.source,
        "created_at": iso(row.created_at),
        "customer": _customer(row.customer_id),
        "message": _message(row.outbox_id),
    }


def _customer(customer_id: int | None) -> str | None:
    return None if customer_id is None else f"cus_{customer_id}"


def _message(outbox_id: int | None) -> str | None:
    return None if outbox_id is None else f"msg_{outbox_id}"


def _cursor(at: int, channel: str, address: str) -> str:
    return base64.urlsafe_b64encode(_encode([at, channel, address])).decode().rstrip("=")


def _read_cursor(text: str) -> tuple[int, str, str]:
    try:
        value = _decode(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise BadCursor("before is not a cursor this API gave (take `next` as it is)") from None
    if (
        not isinstance(value, list)
        or len(value) != 3
        or not isinstance(value[0], int)
        or isinstance(value[0], bool)
        or not -(2**63) <= value[0] < 2**63
        or not all(isinstance(part, str) for part in value[1:])
    ):
        raise BadCursor("before is not a cursor this API gave (take `next` as it is)")
    return value[0], value[1], value[2]


# ---- inbound mail that changed nothing ----------------------------------------------------


@dataclass(frozen=True)
class IgnoredMail:
    rcpt_to: str
    mail_from: str | None
    from_address: str | None
    subject: str | None
    message_id: str | None
    code: str
    reason: str
    customer_id: int | None = None
    outbox_id: int | None = None


def record_ignored(conn: Connection, item: IgnoredMail, now: int) -> None:
    """Keep it, with why, for IGNORED_KEPT_DAYS (older ones are deleted as new come)."""
    sql(
        conn,
        "DELETE FROM inbound_ignored WHERE received_at < :cut",
        {"cut": now - IGNORED_KEPT_DAYS * DAY_MS},
    )
    sql(
        conn,
        "INSERT INTO inbound_ignored (received_at, mail_from, rcpt_to, from_address, subject, "
        "message_id, customer_id, outbox_id, code, reason) VALUES (:now, :mf, :rt, :fa, :s, "
        ":mid, :c, :o, :code, :r)",
        {
            "now": now,
            "mf": _short(item.mail_from, 320),
            "rt": _short(item.rcpt_to, 320) or "",
            "fa": _short(item.from_address, 320),
            "s": _short(item.subject, 300),
            "mid": _short(item.message_id, 300),
            "c": item.customer_id,
            "o": item.outbox_id,
            "code": item.code,
            "r": _text(item.reason, 1000),
        },
    )


def ignored_page(
    conn: Connection, limit: int, before: int | None, code: str | None = None
) -> list[dict[str, Any]]:
    """Inbound mail not acted on, newest first."""
    conditions: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    if before is not None:
        conditions.append("id < :before")
        params["before"] = before
    if code is not None:
        conditions.append("code = :code")
        params["code"] = code
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = sql(
        conn,
        "SELECT id, received_at, mail_from, rcpt_to, from_address, subject, message_id, "
        f"customer_id, outbox_id, code, reason FROM inbound_ignored{where} "
        "ORDER BY id DESC LIMIT :limit",
        params,
    ).all()
    return [
        {
            "id": int(row.id),
            "received_at": iso(row.received_at),
            "mail_from": row.mail_from,
            "to": row.rcpt_to,
            "from": row.from_address,
            "subject": row.subject,
            "message_id": row.message_id,
            "customer": _customer(row.customer_id),
            "message": _message(row.outbox_id),
            "code": row.code,
            "reason": row.reason,
        }
        for row in rows
    ]


def _short(value: str | None, limit: int) -> str | None:
    """Text from outside as it may be stored: no NUL (PostgreSQL refuses it), bounded."""
    if value is None:
        return None
    return value.replace("\x00", "")[:limit] or None


def _text(value: str, limit: int) -> str:
    return _short(value, limit) or "-"


__all__ = [
    "BounceRule",
    "IgnoredMail",
    "after_failure",
    "bounce_history",
    "ignored_page",
    "is_suppressed",
    "lift",
    "page",
    "record_bounce",
    "record_ignored",
    "suppress",
]
