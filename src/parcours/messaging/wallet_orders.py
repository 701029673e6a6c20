"""Apple Wallet orders (order tracking): one per order of the shop, issued when the order
is placed. What it shows is read from commerce's face each time it is built
(`commerce.order`, `commerce.shipments_of_order`): the lines, total, refunds and
cancellation of the order, and each parcel's status, estimated delivery window, carrier
and tracking link, the same state as the tracking page and the post-purchase messages
(docs/commerce.md). This module keeps only what is Wallet's: the order's identifier and
token, the customer's language, and the tag devices ask "changed since" about, moved on
when what the order shows changed. channels/wallet.py turns a record into Apple's
order.json. The devices that added an order are in the registrations table the passes
use (messaging/passes.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite

from parcours import commerce
from parcours.commerce import statuses
from parcours.messaging.passes import next_tag
from parcours.messaging.tables import wallet_orders, wallet_registrations
from parcours.runtime.documents import JsonObject

PLACED = "Order Completed"
ORDER_EVENTS = frozenset({PLACED, "Order Updated", "Order Cancelled", "Order Refunded"})
SHIPMENT_PREFIX = "Shipment "  # commerce's `Shipment Stage Reached` included
# Commerce's shipment status taxonomy (commerce/statuses.py) as Apple's shipping
# fulfillment statuses; where Apple has no word of its own (a parcel waiting at a pickup
# point, sent back, not collected in time), the fulfillment's description in the
# customer's language says it (`wallet_order.shipment.<status>`).
APPLE_STATUSES: dict[str, str] = {
    statuses.INFO_RECEIVED: "processing",
    statuses.IN_TRANSIT: "onTheWay",
    statuses.OUT_FOR_DELIVERY: "outForDelivery",
    statuses.FAILED_ATTEMPT: "issue",
    statuses.AVAILABLE_FOR_PICKUP: "onTheWay",
    statuses.DELIVERED: "delivered",
    statuses.EXCEPTION: "issue",
    statuses.RETURNED_TO_SENDER: "issue",
    statuses.EXPIRED: "issue",
}
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


@dataclass(frozen=True)
class WalletOrder:
    """A Wallet order as order.json shows it: Wallet's own fields (identifier, token,
    tag), and `details` (locale, currency, total, refunded, placed_at, lines, shipments)
    read from commerce when the record is read, which channels/wallet.py turns into
    Apple's; `status` and `fulfillment_status` (the latest parcel's, Apple's word) too."""

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


@dataclass(frozen=True)
class _Shown:
    """What an order shows, read from commerce, and its digest (what devices were told)."""

    status: str
    fulfillment_status: str | None
    details: JsonObject
    digest: str


_COLUMNS = (
    wallet_orders.c.identifier,
    wallet_orders.c.order_id,
    wallet_orders.c.customer_id,
    wallet_orders.c.auth_token,
    wallet_orders.c.status,
    wallet_orders.c.details,
    wallet_orders.c.created_at,
    wallet_orders.c.updated_at,
)


def follows(name: str | None) -> bool:
    """Whether what a Wallet order shows may change with an event of this name."""
    return name is not None and (name in ORDER_EVENTS or name.startswith(SHIPMENT_PREFIX))


def issue(
    conn: Connection, customer_id: int, order_id: str, locale: str, now: int
) -> WalletOrder | None:
    """The Wallet order of a placed order, as commerce has it; None when it already has
    one (an order that two sources reported counts once) or commerce does not know the
    order."""
    shown = _shown(conn, order_id, locale)
    if shown is None:
        return None
    issued = WalletOrder(
        identifier=f"ord_{secrets.token_hex(12)}",
        order_id=order_id,
        customer_id=customer_id,
        auth_token=secrets.token_urlsafe(24),
        status=shown.status,
        fulfillment_status=shown.fulfillment_status,
        details=shown.details,
        created_at=now,
        updated_at=now,
    )
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    created = conn.execute(
        insert(wallet_orders)
        .values({**issued.record(), "details": _own(locale, shown.digest)})
        .on_conflict_do_nothing(index_elements=[wallet_orders.c.order_id])
    )
    return issued if created.rowcount else None


def get(conn: Connection, identifier: str) -> WalletOrder | None:
    row = conn.execute(select(*_COLUMNS).where(wallet_orders.c.identifier == identifier)).first()
    return None if row is None else _record(conn, row)


def by_order(conn: Connection, order_id: str) -> WalletOrder | None:
    """The Wallet order of the shop's order, showing what commerce has of it now."""
    row = conn.execute(select(*_COLUMNS).where(wallet_orders.c.order_id == order_id)).first()
    return None if row is None else _record(conn, row)


def refresh(conn: Connection, order_id: str, now: int) -> WalletOrder | None:
    """After order or shipment events: the Wallet order with its tag moved on when what
    it shows (read from commerce) changed since the devices were last told, or None when
    nothing changed (or the order has no Wallet order). Its row is locked until the
    transaction ends (PostgreSQL; SQLite has one writer), so two jobs about one order
    move the tag once per change."""
    query = select(*_COLUMNS).where(wallet_orders.c.order_id == order_id).with_for_update()
    row = conn.execute(query).first()
    if row is None:
        return None
    own = _decode(row.details)
    locale = str(own.get("locale") or "en")
    shown = _shown(conn, order_id, locale)
    if shown is None or shown.digest == own.get("shown"):
        return None  # unchanged, or not known to commerce (a row from before it: as it was)
    updated_at = next_tag(int(row.updated_at), now)
    conn.execute(
        update(wallet_orders)
        .where(wallet_orders.c.identifier == row.identifier)
        .values(
            status=shown.status,
            fulfillment_status=shown.fulfillment_status,
            details=_own(locale, shown.digest),
            updated_at=updated_at,
        )
    )
    return _made(row, shown, updated_at)


def _own(locale: str, digest: str) -> str:
    """What the row keeps in `details`: the customer's language and the digest of what
    the devices were last told."""
    return _encode({"locale": locale, "shown": digest}).decode()


def _record(conn: Connection, row: Any) -> WalletOrder:
    own = _decode(row.details)
    locale = str(own.get("locale") or "en")
    shown = _shown(conn, row.order_id, locale)
    if shown is None and "lines" in own:  # issued before commerce projected orders
        shown = _stored(locale, own, row.status == "cancelled")
    if shown is None:  # not known to commerce (erased since): nothing to show
        shown = _summary(locale, "USD", "0", "0", int(row.created_at), [], [], False)
    return _made(row, shown, int(row.updated_at))


def _made(row: Any, shown: _Shown, updated_at: int) -> WalletOrder:
    return WalletOrder(
        identifier=row.identifier,
        order_id=row.order_id,
        customer_id=int(row.customer_id),
        auth_token=row.auth_token,
        status=shown.status,
        fulfillment_status=shown.fulfillment_status,
        details=shown.details,
        created_at=int(row.created_at),
        updated_at=updated_at,
    )


def _shown(conn: Connection, order_id: str, locale: str) -> _Shown | None:
    """What the order shows, from commerce's face; None when commerce does not know it."""
    order = commerce.order(conn, order_id)
    if order is None:
        return None
    lines = [
        {
            "name": line.name or line.product_id or "",
            "quantity": max(1, line.quantity),
            "price": str(line.price),
            "sku": line.sku,
        }
        for line in order.lines
    ]
    shipments = [_shipment(parcel) for parcel in commerce.shipments_of_order(conn, order_id)]
    return _summary(
        locale,
        order.currency,
        str(order.total),
        str(order.refunded),
        order.placed_at,
        lines,
        shipments,
        order.status == "cancelled",
    )


def _shipment(parcel: commerce.Shipment) -> JsonObject:
    """A parcel as order.json shows it: commerce's status (`stage`) and Apple's word for
    it, its carrier and link, the estimated window, and when it left and arrived."""
    shipped = [  # the reports that moved it past `info_received`: it left the shop
        scan.occurred_at
        for scan in parcel.scans
        if scan.applied and scan.status is not None and statuses.RANKS.get(scan.status, 0) >= 1
    ]
    return {
        "id": parcel.shipment_id,
        "stage": parcel.status,
        "status": APPLE_STATUSES.get(parcel.status, "processing"),
        "status_at": parcel.status_at,
        "carrier": parcel.carrier,
        "tracking_number": parcel.tracking_number,
        "tracking_url": parcel.tracking_url,
        "estimated_from": parcel.estimated_from,
        "estimated_to": parcel.estimated_to,
        "shipped_at": min(shipped) if shipped else None,
        "delivered_at": parcel.delivered_at,
    }


def _summary(
    locale: str,
    currency: str,
    total: str,
    refunded: str,
    placed_at: int,
    lines: list[JsonObject],
    shipments: list[JsonObject],
    cancelled: bool,
) -> _Shown:
    if cancelled:
        status = "cancelled"
    elif shipments and all(s["stage"] == statuses.DELIVERED for s in shipments):
        status = "completed"
    else:
        status = "open"
    latest = max(shipments, key=lambda s: int(s["status_at"]), default=None)
    details: JsonObject = {
        "locale": locale,
        "currency": currency,
        "total": total,
        "refunded": refunded,
        "placed_at": placed_at,
        "lines": lines,
        "shipments": shipments,
    }
    fulfillment_status = latest["status"] if latest else None
    digest = hashlib.sha256(_encode([status, details])).hexdigest()
    return _Shown(status, fulfillment_status, details, digest)


def _stored(locale: str, own: JsonObject, cancelled: bool) -> _Shown:
    """A row issued before commerce projected orders, whose order commerce does not know:
    what it stored then, its shipments' words (docs/events.md) read through commerce's
    taxonomy. It changes no more."""
    shipments = []
    for kept in own.get("shipments") or []:
        stage = statuses.status_of(str(kept.get("status") or "")) or statuses.IN_TRANSIT
        estimated = kept.get("estimated_delivery_at")
        shipments.append(
            {
                "id": kept.get("id") or "",
                "stage": stage,
                "status": APPLE_STATUSES[stage],
                "status_at": int(kept.get("status_at") or 0),
                "carrier": kept.get("carrier"),
                "tracking_number": kept.get("tracking_number"),
                "tracking_url": kept.get("tracking_url"),
                "estimated_from": estimated,
                "estimated_to": estimated,
                "shipped_at": kept.get("shipped_at"),
                "delivered_at": kept.get("delivered_at"),
            }
        )
    return _summary(
        locale,
        str(own.get("currency") or "USD"),
        str(own.get("total") or "0"),
        str(own.get("refunded") or "0"),
        int(own.get("placed_at") or 0),
        list(own.get("lines") or []),
        shipments,
        cancelled,
    )


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
