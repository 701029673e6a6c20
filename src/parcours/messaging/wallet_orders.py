"""Apple Wallet orders (order tracking): one per order of the shop, issued when the order
is placed and kept in step with what happens to it (its shipments, a cancellation, a
refund), in Parcours' own words (docs/events.md); channels/wallet.py turns a record into
Apple's order.json. The devices that added an order are in the registrations table the
passes use (messaging/passes.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite

from parcours.customers import decimal_of, order_total
from parcours.messaging.passes import next_tag
from parcours.messaging.tables import wallet_orders, wallet_registrations
from parcours.runtime.clock import parse_iso
from parcours.runtime.documents import JsonObject

PLACED = "Order Completed"
ORDER_EVENTS = frozenset({PLACED, "Order Cancelled", "Order Refunded"})
SHIPMENT_PREFIX = "Shipment "
# The shipment status words (docs/events.md, "Shipment events").
SHIPMENT_WORDS = frozenset(
    {
        "created",
        "label_created",
        "confirmed",
        "ready_for_pickup",
        "picked_up",
        "in_transit",
        "out_for_delivery",
        "delivery_attempted",
        "delayed",
        "delivered",
        "failed",
    }
)
_TRACKING = ("carrier", "tracking_number", "tracking_url")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


@dataclass(frozen=True)
class WalletOrder:
    """A Wallet order as it is stored. `details` is what order.json shows, in Parcours'
    words (locale, currency, total, refunded, placed_at, lines, shipments), which
    channels/wallet.py turns into Apple's; `updated_at` is the tag devices ask "changed
    since" about."""

    identifier: str  # Apple's orderIdentifier (random)
    order_id: str  # the shop's
    customer_id: int
    auth_token: str  # what Apple's web service calls about it carry
    status: str  # open | completed | cancelled
    fulfillment_status: str | None  # the latest shipment's, Apple's word
    details: JsonObject
    created_at: int
    updated_at: int

    def record(self) -> JsonObject:
        """The order as channels/wallet.py builds order.json from it."""
        return dataclasses.asdict(self)


_COLUMNS = (
    wallet_orders.c.identifier,
    wallet_orders.c.order_id,
    wallet_orders.c.customer_id,
    wallet_orders.c.auth_token,
    wallet_orders.c.status,
    wallet_orders.c.fulfillment_status,
    wallet_orders.c.details,
    wallet_orders.c.created_at,
    wallet_orders.c.updated_at,
)


def follows(name: str | None) -> bool:
    """Whether a Wallet order changes with an event of this name."""
    return name is not None and (name in ORDER_EVENTS or name.startswith(SHIPMENT_PREFIX))


def issue(
    conn: Connection,
    customer_id: int,
    order_id: str,
    properties: JsonObject,
    placed_at: int,
    locale: str,
    now: int,
) -> WalletOrder | None:
    """The Wallet order of a placed order; None when it already has one (an order that
    two sources reported counts once)."""
    lines = [
        {
            "name": str(product.get("name") or product.get("product_id") or ""),
            "quantity": _quantity(product.get("quantity")),
            "price": _text_amount(product.get("price")),
            "sku": product.get("sku") if isinstance(product.get("sku"), str) else None,
        }
        for product in properties.get("products") or []
        if isinstance(product, dict)
    ]
    details = {
        "locale": locale,
        "currency": str(properties.get("currency") or "USD").upper(),
        "total": str(order_total(properties)),
        "refunded": "0",
        "placed_at": placed_at,
        "lines": lines,
        "shipments": [],
    }
    issued = WalletOrder(
        identifier=f"ord_{secrets.token_hex(12)}",
        order_id=order_id,
        customer_id=customer_id,
        auth_token=secrets.token_urlsafe(24),
        status="open",
        fulfillment_status=None,
        details=details,
        created_at=now,
        updated_at=now,
    )
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    created = conn.execute(
        insert(wallet_orders)
        .values({**issued.record(), "details": _encode(details).decode()})
        .on_conflict_do_nothing(index_elements=[wallet_orders.c.order_id])
    )
    return issued if created.rowcount else None


def get(conn: Connection, identifier: str) -> WalletOrder | None:
    row = conn.execute(select(*_COLUMNS).where(wallet_orders.c.identifier == identifier)).first()
    return None if row is None else _record(row)


def by_order(conn: Connection, order_id: str, *, lock: bool = False) -> WalletOrder | None:
    """The Wallet order of the shop's order; with `lock`, its row is locked until the
    transaction ends (PostgreSQL; SQLite has one writer, and SQLAlchemy writes no FOR
    UPDATE for it), for a read an update follows."""
    query = select(*_COLUMNS).where(wallet_orders.c.order_id == order_id)
    row = conn.execute(query.with_for_update() if lock else query).first()
    return None if row is None else _record(row)


def _record(row: Any) -> WalletOrder:
    return WalletOrder(
        identifier=row.identifier,
        order_id=row.order_id,
        customer_id=int(row.customer_id),
        auth_token=row.auth_token,
        status=row.status,
        fulfillment_status=row.fulfillment_status,
        details=_decode(row.details),
        created_at=int(row.created_at),
        updated_at=int(row.updated_at),
    )


def apply(
    conn: Connection, name: str, properties: JsonObject, occurred_at: int, now: int
) -> WalletOrder | None:
    """What an order or shipment event changes on the order's Wallet order: the record
    as saved, with its tag moved on, or None when there is nothing to change."""
    order_id = properties.get("order_id")
    record = by_order(conn, str(order_id), lock=True) if order_id is not None else None
    if record is None:
        return None
    changed = changed_record(record, name, properties, occurred_at)
    if changed is None:
        return None
    changed = dataclasses.replace(changed, updated_at=next_tag(record.updated_at, now))
    conn.execute(
        update(wallet_orders)
        .where(wallet_orders.c.identifier == changed.identifier)
        .values(
            status=changed.status,
            fulfillment_status=changed.fulfillment_status,
            details=_encode(changed.details).decode(),
            updated_at=changed.updated_at,
        )
    )
    return changed


def changed_record(
    record: WalletOrder, name: str, properties: JsonObject, occurred_at: int
) -> WalletOrder | None:
    """The record after this event, or None when the event changes nothing on it. An
    older shipment status than the one shown (events arriving out of order) is not
    taken; its tracking details are."""
    details = _decode(_encode(record.details))  # a deep copy
    status = record.status
    if name == "Order Cancelled":
        status = "cancelled"
    elif name == "Order Refunded":
        refunded = decimal_of(details["refunded"]) or Decimal(0)
        details["refunded"] = str(refunded + (decimal_of(properties.get("total")) or Decimal(0)))
    elif name.startswith(SHIPMENT_PREFIX):
        _apply_shipment(details, name, properties, occurred_at)
    shipments = details["shipments"]
    if status != "cancelled" and shipments:
        delivered = all(s["status"] == "delivered" for s in shipments)
        status = "completed" if delivered else "open"
    latest = max(shipments, key=lambda s: s["status_at"], default=None)
    fulfillment_status = latest["status"] if latest else None
    same = (status, fulfillment_status, details) == (
        record.status,
        record.fulfillment_status,
        record.details,
    )
    if same:
        return None
    return dataclasses.replace(
        record, status=status, fulfillment_status=fulfillment_status, details=details
    )


def _apply_shipment(
    details: JsonObject, name: str, properties: JsonObject, occurred_at: int
) -> None:
    word = str(properties.get("status") or "")
    if word not in SHIPMENT_WORDS:
        word = name.removeprefix(SHIPMENT_PREFIX).strip().lower().replace(" ", "_")
    shipment_id = str(properties.get("shipment_id") or "")
    shipments: list[dict[str, Any]] = details["shipments"]
    shipment = next((s for s in shipments if s["id"] == shipment_id), None)
    if shipment is None and len(shipments) == 1 and not (shipment_id and shipments[0]["id"]):
        shipment = shipments[0]  # the one shipment, named on one event and not another
    if shipment is None:
        shipment = {"id": shipment_id, "status": "created", "status_at": 0}
        shipments.append(shipment)
    for field in _TRACKING:
        value = properties.get(field)
        if isinstance(value, str) and value.strip():
            shipment[field] = value.strip()
    estimated = properties.get("estimated_delivery_at")
    if isinstance(estimated, str):
        with contextlib.suppress(ValueError):  # not a time: the estimate shown stays
            shipment["estimated_delivery_at"] = parse_iso(estimated)
    if word in SHIPMENT_WORDS and occurred_at >= int(shipment["status_at"]):
        shipment["status"] = word
        shipment["status_at"] = occurred_at
        if word in ("picked_up", "in_transit", "out_for_delivery"):
            shipment.setdefault("shipped_at", occurred_at)
        if word == "delivered":
            shipment["delivered_at"] = occurred_at


def updated_for_device(conn: Connection, device: str, since: int | None) -> list[tuple[str, int]]:
    """(identifier, updated_at) of the device's orders changed after `since`."""
    query = (
        select(wallet_orders.c.identifier, wallet_orders.c.updated_at)
        .join_from(
            wallet_registrations,
            wallet_orders,
            wallet_orders.c.identifier == wallet_registrations.c.serial,
        )
        .where(
            wallet_registrations.c.device_id == device,
            wallet_orders.c.updated_at > (since or 0),
        )
        .order_by(wallet_orders.c.identifier)
    )
    return [(row.identifier, int(row.updated_at)) for row in conn.execute(query)]


def reassign(conn: Connection, old: int, new: int) -> None:
    """Profiles merged: the merged customer's Wallet orders are the survivor's."""
    conn.execute(
        update(wallet_orders).where(wallet_orders.c.customer_id == old).values(customer_id=new)
    )


def _quantity(value: Any) -> int:
    number = decimal_of(value)
    return int(number) if number is not None and number >= 1 else 1


def _text_amount(value: Any) -> str | None:
    number = decimal_of(value)
    return None if number is None else str(number)
