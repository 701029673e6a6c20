"""Commerce's part when two profiles merge or a person is erased (customers.people): a
person's orders, their lines and refunds, shipments and their scans, returns, carts,
back-in-stock requests and reviews follow the person to the survivor, and go with them
when they are erased. Commerce keeps the only copy of the orders: what the customers
package asks of them (`customers.people.OrderBook`) is answered here."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, delete, select, update

from parcours.commerce import replenishment
from parcours.commerce.queries import orders_of
from parcours.commerce.recommendations import follow_merge as views_follow_merge
from parcours.commerce.recommendations import uncount_orders
from parcours.commerce.tables import (
    commerce_cancellations,
    commerce_carts,
    commerce_order_lines,
    commerce_orders,
    commerce_product_views,
    commerce_refunds,
    commerce_replenishments,
    commerce_returns,
    commerce_review_photos,
    commerce_review_ratings,
    commerce_reviews,
    commerce_shipment_scans,
    commerce_shipments,
    commerce_stock_requests,
)
from parcours.runtime.clock import iso
from parcours.runtime.db import chunks
from parcours.runtime.documents import JsonObject
from parcours.runtime.presentation import money_text
from parcours.runtime.queue import enqueue

REFRESH_JOB = "commerce.refresh_customer"  # Commerce.refresh_customer

_TABLES = (
    commerce_orders,
    commerce_order_lines,
    commerce_refunds,
    commerce_cancellations,
    commerce_shipments,
    commerce_shipment_scans,
    commerce_returns,
    commerce_carts,
    commerce_stock_requests,
    commerce_reviews,
    commerce_review_ratings,
    commerce_review_photos,
)
# Kept per customer and product: merged by adding up or counting again, not moved.
_PER_PRODUCT = (commerce_replenishments, commerce_product_views)
TABLES = tuple(table.name for table in (*_TABLES, *_PER_PRODUCT))


def follow_merge(conn: Connection, merged_id: int, survivor_id: int, now: int) -> None:
    """Profiles merged: the merged customer's orders (and all that hangs on them) are the
    survivor's."""
    for table in _TABLES:
        conn.execute(
            update(table).where(table.c.customer_id == merged_id).values(customer_id=survivor_id)
        )
    # Views add up; the replenishments and order traits are counted again from the
    # orders now the survivor's, by commerce's job (it knows the brand's settings).
    views_follow_merge(conn, merged_id, survivor_id)
    replenishment.forget(conn, [merged_id])
    enqueue(
        conn,
        REFRESH_JOB,
        {"customer": survivor_id},
        run_at=now,
        now=now,
        unique_key=f"commerce:refresh:{survivor_id}",
        customer_id=survivor_id,
    )


def erase(conn: Connection, customer_ids: Sequence[int]) -> dict[str, int]:
    """A person erased: their orders, lines, refunds, shipments, scans and returns."""
    ids = list(customer_ids)
    return {
        table.name: conn.execute(delete(table).where(table.c.customer_id.in_(ids))).rowcount
        for table in (*_TABLES, *_PER_PRODUCT)
    }


def order_ids_of(conn: Connection, customer_id: int) -> list[str]:
    """The ids of the customer's orders, cancelled ones included, oldest first."""
    return list(
        conn.execute(
            select(commerce_orders.c.order_id)
            .where(commerce_orders.c.customer_id == customer_id)
            .order_by(commerce_orders.c.placed_at, commerce_orders.c.order_id)
        ).scalars()
    )


# What hangs on an order, by its order id (the shipments' scans by their shipments').
_BY_ORDER = (
    commerce_order_lines,
    commerce_refunds,
    commerce_cancellations,
    commerce_returns,
    commerce_reviews,
    commerce_review_ratings,
    commerce_review_photos,
)


def take_away(conn: Connection, customer_id: int, order_ids: Sequence[str]) -> int:
    """Delete these orders of the customer, with their lines, refunds, cancellation,
    shipments and scans, returns and review, and what recommendations counted of them
    (one origin's part of a person taken away: customers/origins.py); how many orders
    went. The order traits and replenishments are counted again by the caller."""
    owned = [
        order_id
        for part in chunks(sorted(set(order_ids)))
        for order_id in conn.execute(
            select(commerce_orders.c.order_id).where(
                commerce_orders.c.customer_id == customer_id,
                commerce_orders.c.order_id.in_(part),
            )
        ).scalars()
    ]
    if not owned:
        return 0
    uncount_orders(conn, owned)
    for part in chunks(owned):
        shipments = select(commerce_shipments.c.shipment_id).where(
            commerce_shipments.c.order_id.in_(part)
        )
        conn.execute(
            delete(commerce_shipment_scans).where(
                commerce_shipment_scans.c.shipment_id.in_(shipments)
            )
        )
        conn.execute(delete(commerce_shipments).where(commerce_shipments.c.order_id.in_(part)))
        for table in _BY_ORDER:
            conn.execute(delete(table).where(table.c.order_id.in_(part)))
        conn.execute(delete(commerce_orders).where(commerce_orders.c.order_id.in_(part)))
    return len(owned)


def exported(conn: Connection, customer_id: int) -> list[JsonObject]:
    """The customer's orders as a person's export shows them, oldest first: money as
    decimal text with the currency's decimals (their lines, shipments and returns follow
    among the export's other tables)."""
    found = sorted(orders_of(conn, customer_id), key=lambda o: (o.placed_at, o.order_id))
    return [
        {
            "order_id": order.order_id,
            "number": order.number,
            "source": order.source,
            "currency": order.currency,
            "total": money_text(order.total, order.currency),
            "refunded": money_text(order.refunded, order.currency),
            "status": order.status,
            "at": iso(order.placed_at),
        }
        for order in found
    ]
