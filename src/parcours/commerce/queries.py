"""What other packages read of commerce: orders with their lines and refunds, shipments
with their scans, returns; as Structs (the admin API answers with them as they are)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import Connection, Row, select

from parcours.commerce.tables import (
    commerce_order_lines,
    commerce_orders,
    commerce_refunds,
    commerce_returns,
    commerce_shipment_scans,
    commerce_shipments,
)


class OrderLine(msgspec.Struct, frozen=True):
    line: int
    product_id: str | None
    variant_id: str | None
    sku: str | None
    name: str | None
    image_url: str | None
    price: Decimal  # one unit's
    quantity: int
    refunded_quantity: int
    refunded_amount: Decimal


class RefundLine(msgspec.Struct, frozen=True):
    """What a refund named of a line (by its number, variant, product or SKU)."""

    quantity: int
    line: int | None = None
    product_id: str | None = None
    variant_id: str | None = None
    sku: str | None = None
    price: Decimal | None = None


class Refund(msgspec.Struct, frozen=True):
    refund_id: str
    order_id: str
    source: str
    reported: Decimal  # the amount its report gave
    amount: Decimal  # what it counted: never past what was left to refund
    currency: str | None
    applied: bool  # false while its order is unknown
    occurred_at: int
    lines: tuple[RefundLine, ...]


class Order(msgspec.Struct, frozen=True):
    order_id: str
    customer_id: int | None
    source: str  # site | shopify | import | admin
    number: str | None
    status: str  # placed | cancelled
    currency: str
    subtotal: Decimal | None
    discount: Decimal | None
    coupon: str | None
    shipping: Decimal | None
    tax: Decimal | None
    total: Decimal
    refunded: Decimal
    placed_at: int
    cancelled_at: int | None
    cancel_reason: str | None
    lines: tuple[OrderLine, ...]
    refunds: tuple[Refund, ...]

    @property
    def left_to_refund(self) -> Decimal:
        return self.total - self.refunded


class Scan(msgspec.Struct, frozen=True):
    reported: str  # the word as it came
    status: str | None  # in the taxonomy; None: it names no stage
    location: str | None
    source: str
    applied: bool  # whether it moved the shipment's status
    occurred_at: int
    recorded_at: int


class Shipment(msgspec.Struct, frozen=True):
    shipment_id: str
    order_id: str | None
    order_known: bool  # false while its order has not arrived
    customer_id: int | None
    carrier: str | None
    tracking_number: str | None
    tracking_url: str | None
    status: str
    status_at: int
    first_status: str
    estimated_from: int | None
    estimated_to: int | None
    delivered_at: int | None
    scans: tuple[Scan, ...]


class Return(msgspec.Struct, frozen=True):
    return_id: str
    order_id: str
    customer_id: int | None
    status: str  # requested | label_sent | received | refunded
    reason: str | None
    requested_at: int | None
    label_sent_at: int | None
    received_at: int | None
    refunded_at: int | None
    window_days: int | None
    within_window: bool | None  # None: not requested through Parcours' window, or no order


# ---- orders -------------------------------------------------------------------------------


def order(conn: Connection, order_id: str) -> Order | None:
    """The order with this id, its lines and refunds; None when it is not known."""
    found = _orders(conn, conn.execute(select(commerce_orders).where(_is(order_id))).all())
    return found[0] if found else None


def orders_of(conn: Connection, customer_id: int) -> list[Order]:
    """A customer's orders, newest first."""
    rows = conn.execute(
        select(commerce_orders)
        .where(commerce_orders.c.customer_id == customer_id)
        .order_by(commerce_orders.c.placed_at.desc(), commerce_orders.c.order_id)
    ).all()
    return _orders(conn, rows)


def _is(order_id: str) -> Any:
    return commerce_orders.c.order_id == order_id


def _orders(conn: Connection, rows: Sequence[Row[Any]]) -> list[Order]:
    if not rows:
        return []
    ids = [row.order_id for row in rows]
    lines: dict[str, list[OrderLine]] = defaultdict(list)
    for row in conn.execute(
        select(commerce_order_lines)
        .where(commerce_order_lines.c.order_id.in_(ids))
        .order_by(commerce_order_lines.c.order_id, commerce_order_lines.c.line)
    ):
        lines[row.order_id].append(
            OrderLine(
                line=row.line,
                product_id=row.product_id,
                variant_id=row.variant_id,
                sku=row.sku,
                name=row.name,
                image_url=row.image_url,
                price=Decimal(row.price),
                quantity=row.quantity,
                refunded_quantity=row.refunded_quantity,
                refunded_amount=Decimal(row.refunded_amount),
            )
        )
    refunds: dict[str, list[Refund]] = defaultdict(list)
    for row in conn.execute(
        select(commerce_refunds)
        .where(commerce_refunds.c.order_id.in_(ids))
        .order_by(commerce_refunds.c.occurred_at, commerce_refunds.c.refund_id)
    ):
        refunds[row.order_id].append(_refund(row))
    return [
        Order(
            order_id=row.order_id,
            customer_id=row.customer_id,
            source=row.source,
            number=row.number,
            status=row.status,
            currency=row.currency,
            subtotal=_decimal(row.subtotal),
            discount=_decimal(row.discount),
            coupon=row.coupon,
            shipping=_decimal(row.shipping),
            tax=_decimal(row.tax),
            total=Decimal(row.total),
            refunded=Decimal(row.refunded),
            placed_at=row.placed_at,
            cancelled_at=row.cancelled_at,
            cancel_reason=row.cancel_reason,
            lines=tuple(lines[row.order_id]),
            refunds=tuple(refunds[row.order_id]),
        )
        for row in rows
    ]


def _refund(row: Row[Any]) -> Refund:
    return Refund(
        refund_id=row.refund_id,
        order_id=row.order_id,
        source=row.source,
        reported=Decimal(row.reported),
        amount=Decimal(row.amount),
        currency=row.currency,
        applied=bool(row.applied),
        occurred_at=row.occurred_at,
        lines=tuple(
            RefundLine(
                quantity=int(line["quantity"]),
                line=line.get("line"),
                product_id=line.get("product_id"),
                variant_id=line.get("variant_id"),
                sku=line.get("sku"),
                price=_decimal(line.get("price")),
            )
            for line in json.loads(row.lines)
        ),
    )


# ---- shipments ----------------------------------------------------------------------------


def shipment(conn: Connection, shipment_id: str) -> Shipment | None:
    """The shipment with this id and its scans in the order they arrived; None if unknown."""
    found = _shipments(
        conn,
        conn.execute(
            select(commerce_shipments).where(commerce_shipments.c.shipment_id == shipment_id)
        ).all(),
    )
    return found[0] if found else None


def shipments_of_order(conn: Connection, order_id: str) -> list[Shipment]:
    """The parcels of an order (those seen before it arrived too), first seen first."""
    return _shipments(
        conn,
        conn.execute(
            select(commerce_shipments)
            .where(commerce_shipments.c.order_id == order_id)
            .order_by(commerce_shipments.c.created_at, commerce_shipments.c.shipment_id)
        ).all(),
    )


def _shipments(conn: Connection, rows: Sequence[Row[Any]]) -> list[Shipment]:
    if not rows:
        return []
    ids = [row.shipment_id for row in rows]
    scans: dict[str, list[Scan]] = defaultdict(list)
    for scan in conn.execute(
        select(commerce_shipment_scans)
        .where(commerce_shipment_scans.c.shipment_id.in_(ids))
        .order_by(commerce_shipment_scans.c.id)
    ):
        scans[scan.shipment_id].append(
            Scan(
                reported=scan.reported,
                status=scan.status,
                location=scan.location,
                source=scan.source,
                applied=bool(scan.applied),
                occurred_at=scan.occurred_at,
                recorded_at=scan.recorded_at,
            )
        )
    orders = {row.order_id for row in rows if row.order_id}
    known = (
        set(
            conn.execute(
                select(commerce_orders.c.order_id).where(commerce_orders.c.order_id.in_(orders))
            ).scalars()
        )
        if orders
        else set()
    )
    return [
        Shipment(
            shipment_id=row.shipment_id,
            order_id=row.order_id,
            order_known=row.order_id in known,
            customer_id=row.customer_id,
            carrier=row.carrier,
            tracking_number=row.tracking_number,
            tracking_url=row.tracking_url,
            status=row.status,
            status_at=row.status_at,
            first_status=row.first_status,
            estimated_from=row.estimated_from,
            estimated_to=row.estimated_to,
            delivered_at=row.delivered_at,
            scans=tuple(scans[row.shipment_id]),
        )
        for row in rows
    ]


# ---- returns ------------------------------------------------------------------------------


def returns_of_order(conn: Connection, order_id: str) -> list[Return]:
    """An order's returns, first requested first."""
    rows = conn.execute(
        select(commerce_returns)
        .where(commerce_returns.c.order_id == order_id)
        .order_by(commerce_returns.c.updated_at, commerce_returns.c.return_id)
    )
    return [
        Return(
            return_id=row.return_id,
            order_id=row.order_id,
            customer_id=row.customer_id,
            status=row.status,
            reason=row.reason,
            requested_at=row.requested_at,
            label_sent_at=row.label_sent_at,
            received_at=row.received_at,
            refunded_at=row.refunded_at,
            window_days=row.window_days,
            within_window=None if row.within_window is None else bool(row.within_window),
        )
        for row in rows
    ]


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))
