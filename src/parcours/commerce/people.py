"""Commerce's part when two profiles merge or a person is erased (customers.people): a
person's orders, their lines and refunds, shipments and their scans, returns, carts,
back-in-stock requests and reviews follow the person to the survivor, and go with them
when they are erased."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, delete, update

from parcours.commerce import replenishment
from parcours.commerce.recommendations import follow_merge as views_follow_merge
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
