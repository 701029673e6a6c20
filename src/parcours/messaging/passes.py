"""Wallet passes issued to customers and the devices that registered them (Apple's pass
web service protocol), what a wallet "message" or new fields change on a pass, and the
requests that carry a change to the devices (APNs) and to Google Wallet; the same
registrations serve Wallet orders (messaging/wallet_orders.py)."""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass

import msgspec
from sqlalchemy import Connection, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from parcours.messaging import outbox_rows
from parcours.messaging.outbox import QUEUE
from parcours.messaging.tables import wallet_passes, wallet_registrations
from parcours.runtime.documents import JsonObject
from parcours.runtime.queue import enqueue

KINDS = ("loyalty", "coupon", "vip")
PUSH = "messaging.wallet_push"  # tell the devices holding a pass or an order it changed
GOOGLE_SYNC = "messaging.wallet_google"  # bring a pass's Google Wallet object in step
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


@dataclass(frozen=True)
class WalletPass:
    """A pass as it is stored: `fields` are the brand's own (the points of a loyalty card,
    a coupon's offer, the news `message`), `updated_at` the tag devices ask "changed
    since" about."""

    serial: str
    customer_id: int
    kind: str  # loyalty | coupon | vip
    auth_token: str  # what Apple's web service calls about it carry
    fields: JsonObject
    created_at: int
    updated_at: int
    google_object_id: str | None  # its Google Wallet generic object, when offered there

    def record(self) -> JsonObject:
        """The pass as channels/wallet.py builds pass.json and the Google card from it."""
        return dataclasses.asdict(self)


_PASS_COLUMNS = (
    wallet_passes.c.serial,
    wallet_passes.c.customer_id,
    wallet_passes.c.kind,
    wallet_passes.c.auth_token,
    wallet_passes.c.fields,
    wallet_passes.c.created_at,
    wallet_passes.c.updated_at,
    wallet_passes.c.google_object_id,
)


def issue(
    conn: Connection,
    customer_id: int,
    kind: str,
    fields: JsonObject,
    now: int,
    google_issuer_id: str | None = None,
) -> WalletPass:
    """A new pass; with `google_issuer_id`, the same card is also offered for Google
    Wallet as the generic object `<issuer>.<serial>`, kept in step from then on."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    serial = secrets.token_hex(12)
    issued = WalletPass(
        serial=serial,
        customer_id=customer_id,
        kind=kind,
        auth_token=secrets.token_urlsafe(24),
        fields=fields,
        created_at=now,
        updated_at=now,
        google_object_id=f"{google_issuer_id}.{serial}" if google_issuer_id else None,
    )
    conn.execute(
        wallet_passes.insert().values(
            serial=issued.serial,
            customer_id=issued.customer_id,
            kind=issued.kind,
            auth_token=issued.auth_token,
            fields=_encode(fields).decode(),
            created_at=issued.created_at,
            updated_at=issued.updated_at,
            google_object_id=issued.google_object_id,
        )
    )
    return issued


def get(conn: Connection, serial: str, *, lock: bool = False) -> WalletPass | None:
    """The pass; with `lock`, its row is locked until the transaction ends (PostgreSQL;
    SQLite has one writer, and SQLAlchemy writes no FOR UPDATE for it), for a read that
    an update follows."""
    query = select(*_PASS_COLUMNS).where(wallet_passes.c.serial == serial)
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        return None
    return WalletPass(
        serial=row.serial,
        customer_id=int(row.customer_id),
        kind=row.kind,
        auth_token=row.auth_token,
        fields=_decode(row.fields),
        created_at=int(row.created_at),
        updated_at=int(row.updated_at),
        google_object_id=row.google_object_id,
    )


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


def update_fields(conn: Connection, serial: str, fields: JsonObject, now: int) -> WalletPass | None:
    """New values for a pass's fields (the points on a loyalty card, a coupon's offer):
    the devices holding it are told through APNs, and Google Wallet is brought in step.
    The pass as saved, or None when there is no such pass."""
    record = get(conn, serial, lock=True)
    if record is None:
        return None
    updated = _save_fields(conn, record, fields, now)
    request_push(conn, serial, record.customer_id, now)
    return updated


def _save_fields(conn: Connection, record: WalletPass, changes: JsonObject, now: int) -> WalletPass:
    fields = {**record.fields, **changes}
    tag = next_tag(record.updated_at, now)
    conn.execute(
        update(wallet_passes)
        .where(wallet_passes.c.serial == record.serial)
        .values(fields=_encode(fields).decode(), updated_at=tag)
    )
    if record.google_object_id:
        enqueue(
            conn,
            GOOGLE_SYNC,
            {"serial": record.serial},
            run_at=now,
            now=now,
            queue=QUEUE,
            unique_key=f"wallet-google:{record.serial}",
            customer_id=record.customer_id,
        )
    return dataclasses.replace(record, fields=fields, updated_at=tag)


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
    registered = (wallet_registrations.c.device_id == device) & (
        wallet_registrations.c.serial == serial
    )
    known = conn.execute(select(1).select_from(wallet_registrations).where(registered)).first()
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(wallet_registrations).values(
        device_id=device,
        serial=serial,
        push_token=push_token,
        customer_id=customer_id,
        created_at=now,
    )
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[wallet_registrations.c.device_id, wallet_registrations.c.serial],
            set_={"push_token": statement.excluded.push_token},
        )
    )
    return known is None


def unregister(conn: Connection, device: str, serial: str) -> None:
    conn.execute(
        delete(wallet_registrations).where(
            wallet_registrations.c.device_id == device, wallet_registrations.c.serial == serial
        )
    )


def updated_for_device(conn: Connection, device: str, since: int | None) -> list[tuple[str, int]]:
    """(serial, updated_at) of the device's passes changed after `since`."""
    query = (
        select(wallet_passes.c.serial, wallet_passes.c.updated_at)
        .join_from(
            wallet_registrations,
            wallet_passes,
            wallet_passes.c.serial == wallet_registrations.c.serial,
        )
        .where(
            wallet_registrations.c.device_id == device,
            wallet_passes.c.updated_at > (since or 0),
        )
        .order_by(wallet_passes.c.serial)
    )
    return [(row.serial, int(row.updated_at)) for row in conn.execute(query)]


def installed(conn: Connection, customer_id: int) -> str | None:
    """The serial of the customer's newest pass that some device has added. Read at every
    Wallet message sent (outbox_rows.py)."""
    return outbox_rows.installed_pass(conn, customer_id)


def push_tokens(conn: Connection, serial: str) -> list[str]:
    """The APNs push tokens of the devices holding this pass (or order). Read at every
    Wallet message sent (outbox_rows.py)."""
    return outbox_rows.wallet_push_tokens(conn, serial)


def forget_push_tokens(conn: Connection, serial: str, tokens: list[str]) -> None:
    """APNs says these devices are gone: they no longer hold this pass (or order)."""
    for token in tokens:
        conn.execute(
            delete(wallet_registrations).where(
                wallet_registrations.c.serial == serial,
                wallet_registrations.c.push_token == token,
            )
        )


def reassign(conn: Connection, old: int, new: int) -> None:
    """Profiles merged: the merged customer's passes and devices are the survivor's."""
    for table in (wallet_passes, wallet_registrations):
        conn.execute(update(table).where(table.c.customer_id == old).values(customer_id=new))
