"""What other packages read of commerce: orders with their lines and refunds, shipments
with their scans, returns; as Structs (the admin API answers with them as they are)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import msgspec
from sqlalchemy import Column, Connection, Row, Table, case, exists, func, select

from parcours.commerce import statuses
from parcours.commerce.back_in_stock import StockRequest
from parcours.commerce.returns import DEFAULT_WINDOW_DAYS, SECTOR_WINDOW_DAYS, ReturnWindow
from parcours.commerce.tables import (
    commerce_order_lines,
    commerce_orders,
    commerce_products,
    commerce_refunds,
    commerce_returns,
    commerce_shipment_scans,
    commerce_shipments,
    commerce_stock_requests,
    commerce_variants,
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


def orders_of(conn: Connection, customer_id: int, limit: int | None = None) -> list[Order]:
    """A customer's orders, newest first (the `limit` most recent when given)."""
    query = (
        select(commerce_orders)
        .where(commerce_orders.c.customer_id == customer_id)
        .order_by(commerce_orders.c.placed_at.desc(), commerce_orders.c.order_id)
    )
    if limit is not None:
        query = query.limit(limit)
    return _orders(conn, conn.execute(query).all())


def first_order(conn: Connection, customer_id: int) -> str | None:
    """The id of the customer's earliest order (cancelled ones included), if any."""
    value = conn.execute(
        select(commerce_orders.c.order_id)
        .where(commerce_orders.c.customer_id == customer_id)
        .order_by(commerce_orders.c.placed_at, commerce_orders.c.order_id)
        .limit(1)
    ).scalar()
    return None if value is None else str(value)


def _is(order_id: str) -> Any:
    return commerce_orders.c.order_id == order_id


_T = TypeVar("_T")


def _by(
    conn: Connection,
    key: Column[Any],
    ids: list[str],
    order: tuple[Column[Any], ...],
    make: Callable[[Row[Any]], _T],
) -> defaultdict[str, list[_T]]:
    """The rows of `key`'s table whose `key` is one of `ids`, made into records and grouped
    by that key, in `order`: one query for a page's children (lines, refunds, scans)."""
    table = key.table
    assert isinstance(table, Table)
    found: defaultdict[str, list[_T]] = defaultdict(list)
    for row in conn.execute(select(table).where(key.in_(ids)).order_by(*order)):
        found[getattr(row, key.name)].append(make(row))
    return found


def _orders(conn: Connection, rows: Sequence[Row[Any]]) -> list[Order]:
    if not rows:
        return []
    ids = [row.order_id for row in rows]
    lines = _by(
        conn,
        commerce_order_lines.c.order_id,
        ids,
        (commerce_order_lines.c.order_id, commerce_order_lines.c.line),
        _line,
    )
    refunds = _by(
        conn,
        commerce_refunds.c.order_id,
        ids,
        (commerce_refunds.c.occurred_at, commerce_refunds.c.refund_id),
        _refund,
    )
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


def _line(row: Row[Any]) -> OrderLine:
    return OrderLine(
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


def _scan(row: Row[Any]) -> Scan:
    return Scan(
        reported=row.reported,
        status=row.status,
        location=row.location,
        source=row.source,
        applied=bool(row.applied),
        occurred_at=row.occurred_at,
        recorded_at=row.recorded_at,
    )


def _shipments(conn: Connection, rows: Sequence[Row[Any]]) -> list[Shipment]:
    if not rows:
        return []
    ids = [row.shipment_id for row in rows]
    scans = _by(
        conn,
        commerce_shipment_scans.c.shipment_id,
        ids,
        (commerce_shipment_scans.c.id,),
        _scan,
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
    return [_return(row) for row in rows]


def _return(row: Row[Any]) -> Return:
    return Return(
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


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


# ---- the console's lists (issue 21: shipments, returns) --------------------------------------

_OPEN = commerce_shipments.c.status.not_in(sorted(statuses.FINAL))
_LATE_WORD = "delayed"  # a carrier's report that the parcel is late (it moves nothing)


class ShipmentLine(msgspec.Struct, frozen=True):
    """A shipment as a list shows it, without its scans: when its last report was
    recorded (`last_report_at`), and whether a carrier reported it late."""

    shipment_id: str
    order_id: str | None
    customer_id: int | None
    carrier: str | None
    tracking_number: str | None
    status: str
    status_at: int
    estimated_from: int | None
    estimated_to: int | None
    first_estimated_to: int | None  # the first estimate's end: a later one is a delay
    delivered_at: int | None
    first_seen_at: int
    last_report_at: int
    reported_late: bool

    @property
    def slipped(self) -> bool:
        """Whether its estimate moved later than the first one recorded."""
        first, now = self.first_estimated_to, self.estimated_to
        return first is not None and now is not None and now > first


def _lines_query() -> Any:
    s = commerce_shipments.c
    late = exists(
        select(commerce_shipment_scans.c.id).where(
            commerce_shipment_scans.c.shipment_id == s.shipment_id,
            commerce_shipment_scans.c.reported == _LATE_WORD,
        )
    ).label("reported_late")
    return select(
        s.shipment_id,
        s.order_id,
        s.customer_id,
        s.carrier,
        s.tracking_number,
        s.status,
        s.status_at,
        s.estimated_from,
        s.estimated_to,
        s.first_estimated_to,
        s.delivered_at,
        s.created_at,
        s.updated_at,
        late,
    )


def _shipment_lines(conn: Connection, query: Any) -> list[ShipmentLine]:
    return [
        ShipmentLine(
            shipment_id=row.shipment_id,
            order_id=row.order_id,
            customer_id=row.customer_id,
            carrier=row.carrier,
            tracking_number=row.tracking_number,
            status=row.status,
            status_at=row.status_at,
            estimated_from=row.estimated_from,
            estimated_to=row.estimated_to,
            first_estimated_to=row.first_estimated_to,
            delivered_at=row.delivered_at,
            first_seen_at=row.created_at,
            last_report_at=row.updated_at,
            reported_late=bool(row.reported_late),
        )
        for row in conn.execute(query)
    ]


def shipments_stalled(
    conn: Connection, reported_before: int, status: str | None = None, limit: int = 50
) -> list[ShipmentLine]:
    """Parcels still on their way (not delivered nor returned) whose last report was
    recorded before `reported_before`, the longest silent first."""
    c = commerce_shipments.c
    query = _lines_query().where(_OPEN, c.updated_at < reported_before)
    if status:
        query = query.where(c.status == status)
    return _shipment_lines(conn, query.order_by(c.updated_at, c.shipment_id).limit(limit))


def shipments_delayed(
    conn: Connection, now: int, status: str | None = None, limit: int = 50
) -> list[ShipmentLine]:
    """Parcels still on their way whose estimated delivery has passed, whose estimate
    moved later than the first, or that a carrier reported late (`delayed`); the earliest
    expected first, each once."""
    c = commerce_shipments.c
    query = _lines_query().where(_OPEN)
    if status:
        query = query.where(c.status == status)
    # Three lookups by index, not a test of every parcel: the earliest estimates passed
    # (in the estimate's order), the parcels whose estimate slipped (a partial index) and
    # the few a carrier said were late, those two whose estimate has not passed or is
    # unknown; merged here.
    passed = query.where(c.estimated_to < now).order_by(c.estimated_to, c.shipment_id)
    slipped = query.where(c.estimated_to > c.first_estimated_to, c.estimated_to >= now)
    late = select(commerce_shipment_scans.c.shipment_id).where(
        commerce_shipment_scans.c.reported == _LATE_WORD
    )
    reported = query.where(
        c.shipment_id.in_(late), c.estimated_to.is_(None) | (c.estimated_to >= now)
    )
    found: dict[str, ShipmentLine] = {}
    for part in (
        passed.limit(limit),
        slipped.order_by(c.estimated_to, c.shipment_id).limit(limit),
        reported.order_by(c.shipment_id).limit(limit),
    ):
        for line in _shipment_lines(conn, part):
            found.setdefault(line.shipment_id, line)
    ordered = sorted(
        found.values(),
        key=lambda s: (s.estimated_to is None, s.estimated_to or 0, s.shipment_id),
    )
    return ordered[:limit]


def shipments_latest(
    conn: Connection, status: str | None = None, limit: int = 50, offset: int = 0
) -> list[ShipmentLine]:
    """Parcels by their last report, the latest first (of one status when given)."""
    c = commerce_shipments.c
    query = _lines_query()
    if status:
        query = query.where(c.status == status)
    query = query.order_by(c.updated_at.desc(), c.shipment_id).limit(limit).offset(offset)
    return _shipment_lines(conn, query)


def shipment_counts(conn: Connection) -> dict[str, int]:
    """How many parcels are at each status."""
    c = commerce_shipments.c
    return {
        row.status: int(row.n)
        for row in conn.execute(select(c.status, func.count().label("n")).group_by(c.status))
    }


def shipments_of_orders(conn: Connection, order_ids: Sequence[str]) -> dict[str, list[Shipment]]:
    """The parcels of several orders with their scans, by order (first seen first)."""
    if not order_ids:
        return {}
    rows = conn.execute(
        select(commerce_shipments)
        .where(commerce_shipments.c.order_id.in_(list(order_ids)))
        .order_by(commerce_shipments.c.created_at, commerce_shipments.c.shipment_id)
    ).all()
    found: dict[str, list[Shipment]] = defaultdict(list)
    for shipment_ in _shipments(conn, rows):
        assert shipment_.order_id is not None
        found[shipment_.order_id].append(shipment_)
    return dict(found)


def returns_of_orders(conn: Connection, order_ids: Sequence[str]) -> dict[str, list[Return]]:
    """The returns of several orders, by order (first requested first)."""
    if not order_ids:
        return {}
    return dict(
        _by(
            conn,
            commerce_returns.c.order_id,
            list(order_ids),
            (commerce_returns.c.updated_at, commerce_returns.c.return_id),
            _return,
        )
    )


def returns_list(
    conn: Connection,
    status: str | None = None,
    within_window: bool | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Return]:
    """Returns, the latest changed first; of one stage, within the window or not, when
    asked."""
    c = commerce_returns.c
    query = select(commerce_returns)
    if status:
        query = query.where(c.status == status)
    if within_window is not None:
        query = query.where(c.within_window == within_window)
    query = query.order_by(c.updated_at.desc(), c.return_id).limit(limit).offset(offset)
    return [_return(row) for row in conn.execute(query)]


def return_counts(conn: Connection) -> dict[str, int]:
    """How many returns are at each stage."""
    c = commerce_returns.c
    return {
        row.status: int(row.n)
        for row in conn.execute(select(c.status, func.count().label("n")).group_by(c.status))
    }


def return_window_of(setting_days: int, sector: str) -> ReturnWindow:
    """The return window a brand of `sector` gives (the setting when set), without the
    database: what the tracking page's preview shows for a sector picked on it."""
    if setting_days > 0:
        return ReturnWindow(setting_days, "setting", sector)
    if sector in SECTOR_WINDOW_DAYS:
        return ReturnWindow(SECTOR_WINDOW_DAYS[sector], "sector", sector)
    return ReturnWindow(DEFAULT_WINDOW_DAYS, "default", sector)


# ---- back-in-stock requests per variant (the console's Back in stock page) ----------------


class VariantRequests(msgspec.Struct, frozen=True):
    """A variant's back-in-stock requests: how many wait and how many were notified, its
    stock now (None: unknown or never reported), its names, and its first requests
    (waiting first, each status in the order they came)."""

    variant_id: str
    product_id: str
    product_name: str | None
    variant_name: str | None
    sku: str | None
    stock: int | None
    stock_at: int | None
    waiting: int
    notified: int
    requests: tuple[StockRequest, ...]


def stock_requests_by_variant(
    conn: Connection,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
    per_variant: int = 20,
) -> list[VariantRequests]:
    """Variants with requests, the most waiting first (then the latest asked), each with
    its counts, stock and `per_variant` requests; only variants with requests of
    `status`, and only those requests, when asked (three queries: the counts grouped by
    variant, the catalog's variants, the requests numbered per variant)."""
    c = commerce_stock_requests.c
    waiting = func.sum(case((c.status == "waiting", 1), else_=0))
    notified = func.sum(case((c.status == "notified", 1), else_=0))
    grouped = (
        select(
            c.variant_id,
            func.min(c.product_id).label("product_id"),
            waiting.label("waiting"),
            notified.label("notified"),
            func.max(c.requested_at).label("last_asked"),
        )
        .group_by(c.variant_id)
        .order_by(waiting.desc(), func.max(c.requested_at).desc(), c.variant_id)
        .limit(limit)
        .offset(offset)
    )
    if status is not None:
        grouped = grouped.having(func.sum(case((c.status == status, 1), else_=0)) > 0)
    counted = conn.execute(grouped).all()
    ids = [row.variant_id for row in counted]
    if not ids:
        return []
    v, p = commerce_variants.c, commerce_products.c
    known = {
        row.variant_id: row
        for row in conn.execute(
            select(v.variant_id, v.sku, v.name, v.stock, v.stock_at, p.name.label("product"))
            .select_from(
                commerce_variants.outerjoin(commerce_products, p.product_id == v.product_id)
            )
            .where(v.variant_id.in_(ids))
        )
    }
    place = (
        func.row_number()
        .over(
            partition_by=c.variant_id,
            order_by=(case((c.status == "waiting", 0), else_=1), c.request_id),
        )
        .label("place")
    )
    numbered = select(commerce_stock_requests, place).where(c.variant_id.in_(ids))
    if status is not None:
        numbered = numbered.where(c.status == status)
    inner = numbered.subquery()
    listed: dict[str, list[StockRequest]] = {variant_id: [] for variant_id in ids}
    fields = StockRequest.__struct_fields__
    for row in conn.execute(
        select(inner)
        .where(inner.c.place <= per_variant)
        .order_by(inner.c.variant_id, inner.c.place)
    ):
        listed[row.variant_id].append(StockRequest(**{name: getattr(row, name) for name in fields}))
    found: list[VariantRequests] = []
    for row in counted:
        variant = known.get(row.variant_id)
        found.append(
            VariantRequests(
                variant_id=row.variant_id,
                product_id=row.product_id,
                product_name=variant.product if variant is not None else None,
                variant_name=variant.name if variant is not None else None,
                sku=variant.sku if variant is not None else None,
                stock=variant.stock if variant is not None else None,
                stock_at=variant.stock_at if variant is not None else None,
                waiting=int(row.waiting or 0),
                notified=int(row.notified or 0),
                requests=tuple(listed[row.variant_id]),
            )
        )
    return found


def stock_request_counts(conn: Connection) -> dict[str, int]:
    """How many requests wait and how many were notified."""
    c = commerce_stock_requests.c
    query = select(c.status, func.count().label("n")).group_by(c.status)
    return {row.status: int(row.n) for row in conn.execute(query)}
