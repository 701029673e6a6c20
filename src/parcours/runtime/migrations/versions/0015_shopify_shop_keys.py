"""Shopify customer ids and order ids keyed by their shop

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-10 10:00:00.000000

Shopify's ids are now written `<shop>:<id>` (`brand.myshopify.com:207119551`), so that a
shop's webhooks change only what came from that shop. What was stored before is rewritten
with the shop each webhook named (`context.shop` of the stored events, from
X-Shopify-Shop-Domain): the `shopify_customer_id` identities, and the orders that a
Shopify `Order Completed` placed. An id no stored event ties to a shop stays as it was
(`shopify_customer_id:<id>` still finds it). Stored events themselves are not rewritten.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

KIND = "shopify_customer_id"
PAGE = 2000


def upgrade() -> None:
    conn = op.get_bind()
    unscoped = {
        row.value: row
        for row in conn.execute(
            sa.text("SELECT value, customer_id, created_at FROM identities WHERE kind = :k"),
            {"k": KIND},
        )
        if ":" not in row.value
    }
    id_shops: dict[str, set[str]] = defaultdict(set)
    order_shops: dict[str, str] = {}
    for name, document in _shopify_events(conn):
        context = document.get("context")
        if not isinstance(context, dict) or not isinstance(context.get("shop"), str):
            continue
        shop = context["shop"].strip().lower()
        if not shop:
            continue
        for item in context.get("externalIds") or []:
            if isinstance(item, dict) and str(item.get("type", "")).strip().lower() == KIND:
                value = str(item.get("id"))
                if value in unscoped:
                    id_shops[value].add(shop)
        properties = document.get("properties")
        if name == "Order Completed" and isinstance(properties, dict):
            order_id = properties.get("order_id")
            if order_id is not None and ":" not in str(order_id) and str(order_id).strip():
                order_shops.setdefault(str(order_id).strip(), shop)

    existing_ids = {
        value
        for (value,) in conn.execute(
            sa.text(
                "SELECT value FROM identities WHERE kind = :k AND value LIKE '%.myshopify.com:%'"
            ),
            {"k": KIND},
        )
    }
    inserted: list[dict[str, Any]] = []
    removed: list[dict[str, Any]] = []
    for value, shops in id_shops.items():
        row = unscoped[value]
        for shop in sorted(shops):
            scoped = f"{shop}:{value}"
            if scoped not in existing_ids:
                inserted.append({"k": KIND, "v": scoped, "c": row.customer_id, "t": row.created_at})
                existing_ids.add(scoped)
        removed.append({"k": KIND, "v": value})
    if inserted:
        conn.execute(
            sa.text(
                "INSERT INTO identities (kind, value, customer_id, created_at) "
                "VALUES (:k, :v, :c, :t)"
            ),
            inserted,
        )
    if removed:
        conn.execute(sa.text("DELETE FROM identities WHERE kind = :k AND value = :v"), removed)

    existing_orders = {
        order_id
        for (order_id,) in conn.execute(
            sa.text("SELECT order_id FROM customer_orders WHERE order_id LIKE '%.myshopify.com:%'")
        )
    }
    renamed = [
        {"old": order_id, "new": f"{shop}:{order_id}"}
        for order_id, shop in order_shops.items()
        if f"{shop}:{order_id}" not in existing_orders
    ]
    if renamed:
        conn.execute(
            sa.text("UPDATE customer_orders SET order_id = :new WHERE order_id = :old"), renamed
        )


def downgrade() -> None:
    conn = op.get_bind()
    kept: set[str] = set()
    rows = conn.execute(
        sa.text(
            "SELECT value FROM identities WHERE kind = :k AND value LIKE '%.myshopify.com:%' "
            "ORDER BY value"
        ),
        {"k": KIND},
    ).all()
    present = {
        value
        for (value,) in conn.execute(
            sa.text("SELECT value FROM identities WHERE kind = :k"), {"k": KIND}
        )
    }
    for (value,) in rows:
        bare = value.split(":", 1)[1]
        if bare in present or bare in kept:
            conn.execute(
                sa.text("DELETE FROM identities WHERE kind = :k AND value = :v"),
                {"k": KIND, "v": value},
            )
        else:
            conn.execute(
                sa.text("UPDATE identities SET value = :b WHERE kind = :k AND value = :v"),
                {"k": KIND, "v": value, "b": bare},
            )
            kept.add(bare)
    orders = {
        order_id for (order_id,) in conn.execute(sa.text("SELECT order_id FROM customer_orders"))
    }
    for order_id in sorted(o for o in orders if ".myshopify.com:" in o):
        bare = order_id.split(":", 1)[1]
        if bare not in orders:
            conn.execute(
                sa.text("UPDATE customer_orders SET order_id = :b WHERE order_id = :o"),
                {"o": order_id, "b": bare},
            )
            orders.add(bare)


def _shopify_events(conn: Any) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """(name, document) of every stored Shopify event, a page at a time."""
    last = 0
    while True:
        rows = conn.execute(
            sa.text(
                "SELECT seq, name, payload FROM events WHERE source = 'shopify' AND seq > :s "
                "ORDER BY seq LIMIT :n"
            ),
            {"s": last, "n": PAGE},
        ).all()
        if not rows:
            return
        last = rows[-1].seq
        for row in rows:
            try:
                document = json.loads(row.payload)
            except ValueError:
                continue
            if isinstance(document, dict):
                yield row.name, document
