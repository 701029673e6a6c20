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
from sqlalchemy import ColumnElement, Connection, and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from parcours.channels import HARD, SOFT, ConfigError, DeliveryFailure, PermanentFailure
from parcours.messaging import subscriptions
from parcours.messaging.tables import bounces, inbound_ignored, suppressions
from parcours.runtime.clock import iso

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
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(
        insert(suppressions)
        .values(
            channel=channel,
            address=address,
            reason=_text(reason, 1000),
            customer_id=customer_id,
            created_at=now,
            source=source,
            outbox_id=outbox_id,
        )
        .on_conflict_do_nothing(index_elements=[suppressions.c.channel, suppressions.c.address])
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
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    inserted = conn.execute(
        insert(bounces)
        .values(
            channel="email",
            address=address,
            customer_id=customer_id,
            outbox_id=outbox_id,
            kind=kind,
            reason=_text(reason, 1000),
            source=source,
            at=now,
        )
        .on_conflict_do_nothing(index_elements=[bounces.c.outbox_id])
    ).rowcount
    if not inserted:
        return None
    if kind == HARD:
        barred = reason
        suppress(
            conn, "email", address, reason, customer_id, now, source=source, outbox_id=outbox_id
        )
        return barred
    counted = (
        select(func.count())
        .select_from(bounces)
        .where(
            bounces.c.channel == "email",
            bounces.c.address == address,
            bounces.c.kind == SOFT,
            bounces.c.cleared_at.is_(None),
            bounces.c.at >= now - rule.soft_window_days * DAY_MS,
        )
    )
    count = int(conn.execute(counted).scalar_one())
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
    found = select(1).select_from(suppressions).where(_the(channel, address))
    return conn.execute(found).first() is not None


def _the(channel: str, address: str) -> ColumnElement[bool]:
    return and_(suppressions.c.channel == channel, suppressions.c.address == address)


def lift(conn: Connection, channel: str, address: str, now: int) -> Suppression | None:
    """Remove the suppression (the address may be written to again) and clear its soft
    bounces, so that counting starts again; what was lifted, or None if nothing was."""
    row = conn.execute(select(*_COLUMNS).where(_the(channel, address))).first()
    if row is None:
        return None
    conn.execute(delete(suppressions).where(_the(channel, address)))
    conn.execute(
        update(bounces)
        .where(
            bounces.c.channel == channel,
            bounces.c.address == address,
            bounces.c.cleared_at.is_(None),
        )
        .values(cleared_at=now)
    )
    return _view(row)


# ---- reading, for the admin API -----------------------------------------------------------


class Suppression(msgspec.Struct, frozen=True):
    channel: str
    address: str
    reason: str  # what the provider or the receiving server said
    source: str | None  # what said so: "smtp", "bounce message", "soft bounces", "postmark"...
    created_at: str  # ISO 8601 UTC
    customer: str | None  # cus_N
    message: str | None  # msg_N, the message it was about


class Bounce(msgspec.Struct, frozen=True):
    address: str
    kind: str  # hard | soft
    reason: str
    source: str
    at: str
    counted: bool  # a soft bounce that counts toward the limit now
    cleared_at: str | None  # when a lifted suppression cleared it
    customer: str | None
    message: str | None


class IgnoredMail(msgspec.Struct, frozen=True):
    id: int
    received_at: str
    mail_from: str | None  # the envelope sender
    to: str  # our address it came to
    # the From header's address (named `from` in the JSON)
    from_: str | None = msgspec.field(name="from")
    subject: str | None = None
    message_id: str | None = None
    customer: str | None = None
    message: str | None = None
    code: str = ""  # delay, auto_reply, spam, unknown_message, not_the_customer...
    reason: str = ""


_COLUMNS = (
    suppressions.c.channel,
    suppressions.c.address,
    suppressions.c.reason,
    suppressions.c.customer_id,
    suppressions.c.created_at,
    suppressions.c.source,
    suppressions.c.outbox_id,
)


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
) -> tuple[list[Suppression], str | None]:
    """Suppressions, newest first, and the cursor of the next page (None at the end)."""
    query = select(*_COLUMNS)
    if channel is not None:
        query = query.where(suppressions.c.channel == channel)
    if address is not None:
        query = query.where(suppressions.c.address == address)
    if customer_ids is not None:
        query = query.where(suppressions.c.customer_id.in_(customer_ids))
    if before is not None:
        at, before_channel, before_address = _read_cursor(before)
        created_at, channel_of, address_of = (
            suppressions.c.created_at,
            suppressions.c.channel,
            suppressions.c.address,
        )
        query = query.where(
            or_(
                created_at < at,
                and_(
                    created_at == at,
                    or_(
                        channel_of > before_channel,
                        and_(channel_of == before_channel, address_of > before_address),
                    ),
                ),
            )
        )
    rows = conn.execute(
        query.order_by(
            suppressions.c.created_at.desc(), suppressions.c.channel, suppressions.c.address
        ).limit(limit)
    ).all()
    cursor = None
    if len(rows) == limit:
        last = rows[-1]
        cursor = _cursor(int(last.created_at), last.channel, last.address)
    return [_view(row) for row in rows], cursor


def bounce_history(
    conn: Connection, address: str | None, customer_ids: list[int] | None, limit: int
) -> list[Bounce]:
    """An address's (or customers') email bounces, newest first."""
    query = select(
        bounces.c.id,
        bounces.c.address,
        bounces.c.customer_id,
        bounces.c.outbox_id,
        bounces.c.kind,
        bounces.c.reason,
        bounces.c.source,
        bounces.c.at,
        bounces.c.cleared_at,
    ).where(bounces.c.channel == "email")
    if address is not None:
        query = query.where(bounces.c.address == address)
    if customer_ids is not None:
        query = query.where(bounces.c.customer_id.in_(customer_ids))
    rows = conn.execute(query.order_by(bounces.c.at.desc(), bounces.c.id.desc()).limit(limit)).all()
    return [
        Bounce(
            address=row.address,
            kind=row.kind,
            reason=row.reason,
            source=row.source,
            at=_at(row.at),
            counted=row.kind == SOFT and row.cleared_at is None,
            cleared_at=iso(row.cleared_at) if row.cleared_at is not None else None,
            customer=_customer(row.customer_id),
            message=_message(row.outbox_id),
        )
        for row in rows
    ]


def _view(row: Any) -> Suppression:
    return Suppression(
        channel=row.channel,
        address=row.address,
        reason=row.reason,
        source=row.source,
        created_at=_at(row.created_at),
        customer=_customer(row.customer_id),
        message=_message(row.outbox_id),
    )


def _at(ms: int) -> str:
    """A time of a NOT NULL column, as the API shows it."""
    return iso(ms) or ""


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
class NotActedOn:
    """Inbound mail that changed nothing, as it is kept (what an admin reads of it is an
    `IgnoredMail`)."""

    rcpt_to: str
    mail_from: str | None
    from_address: str | None
    subject: str | None
    message_id: str | None
    code: str
    reason: str
    customer_id: int | None = None
    outbox_id: int | None = None


def record_ignored(conn: Connection, item: NotActedOn, now: int) -> None:
    """Keep it, with why, for IGNORED_KEPT_DAYS (older ones are deleted as new come)."""
    conn.execute(
        delete(inbound_ignored).where(
            inbound_ignored.c.received_at < now - IGNORED_KEPT_DAYS * DAY_MS
        )
    )
    conn.execute(
        inbound_ignored.insert().values(
            received_at=now,
            mail_from=_short(item.mail_from, 320),
            rcpt_to=_short(item.rcpt_to, 320) or "",
            from_address=_short(item.from_address, 320),
            subject=_short(item.subject, 300),
            message_id=_short(item.message_id, 300),
            customer_id=item.customer_id,
            outbox_id=item.outbox_id,
            code=item.code,
            reason=_text(item.reason, 1000),
        )
    )


def ignored_page(
    conn: Connection, limit: int, before: int | None, code: str | None = None
) -> list[IgnoredMail]:
    """Inbound mail not acted on, newest first."""
    query = select(
        inbound_ignored.c.id,
        inbound_ignored.c.received_at,
        inbound_ignored.c.mail_from,
        inbound_ignored.c.rcpt_to,
        inbound_ignored.c.from_address,
        inbound_ignored.c.subject,
        inbound_ignored.c.message_id,
        inbound_ignored.c.customer_id,
        inbound_ignored.c.outbox_id,
        inbound_ignored.c.code,
        inbound_ignored.c.reason,
    )
    if before is not None:
        query = query.where(inbound_ignored.c.id < before)
    if code is not None:
        query = query.where(inbound_ignored.c.code == code)
    rows = conn.execute(query.order_by(inbound_ignored.c.id.desc()).limit(limit)).all()
    return [
        IgnoredMail(
            id=int(row.id),
            received_at=_at(row.received_at),
            mail_from=row.mail_from,
            to=row.rcpt_to,
            from_=row.from_address,
            subject=row.subject,
            message_id=row.message_id,
            customer=_customer(row.customer_id),
            message=_message(row.outbox_id),
            code=row.code,
            reason=row.reason,
        )
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
    "Bounce",
    "BounceRule",
    "IgnoredMail",
    "NotActedOn",
    "Suppression",
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
