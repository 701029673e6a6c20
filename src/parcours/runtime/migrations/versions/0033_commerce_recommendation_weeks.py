"""commerce: recommendation counts per week of the orders' placing, and the orders counted

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-06 22:30:00.000000

Best sellers and bought together read the orders of the last 12 weeks, and a cancelled
order's counts are taken back (docs/commerce.md, "Recommendations"). The counts kept so
far have no date: they are counted again from the orders of the last 12 weeks not
cancelled (older ones are read no more), each kept in `commerce_counted_orders`.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from itertools import permutations
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0033"
down_revision = "0032"
branch_labels = None
depends_on = None

WEEK = 7 * 86_400_000
WEEKS = 12  # as commerce/recommendations.py (SALES_WEEKS) counted at this migration
PAIRS_PER_ORDER = 20


def upgrade() -> None:
    op.drop_table("commerce_product_sales")
    op.drop_table("commerce_bought_together")
    op.create_table(
        "commerce_bought_together",
        sa.Column("product_id", sa.Text(), nullable=False),
        sa.Column("week", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("other_id", sa.Text(), nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "product_id", "week", "other_id", name=op.f("pk_commerce_bought_together")
        ),
    )
    op.create_index("ix_commerce_bought_together_week", "commerce_bought_together", ["week"])
    op.create_table(
        "commerce_product_sales",
        sa.Column("product_id", sa.Text(), nullable=False),
        sa.Column("week", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.Column("units", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("product_id", "week", name=op.f("pk_commerce_product_sales")),
    )
    op.create_index("ix_commerce_product_sales_week", "commerce_product_sales", ["week"])
    op.create_table(
        "commerce_counted_orders",
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("week", sa.Integer(), nullable=False),
        sa.Column("products", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_commerce_counted_orders")),
    )
    op.create_index("ix_commerce_counted_orders_week", "commerce_counted_orders", ["week"])
    _recount(int(time.time() * 1000) // WEEK - (WEEKS - 1))


def _recount(oldest: int) -> None:
    """The orders of weeks from `oldest` on, placed (not cancelled), of a known customer
    (as the projection counts them), counted as `count_orders` does."""
    conn = op.get_bind()
    orders = sa.table(
        "commerce_orders",
        sa.column("order_id", sa.Text()),
        sa.column("customer_id", sa.BigInteger()),
        sa.column("status", sa.Text()),
        sa.column("placed_at", sa.BigInteger()),
    )
    lines = sa.table(
        "commerce_order_lines",
        sa.column("order_id", sa.Text()),
        sa.column("line", sa.Integer()),
        sa.column("product_id", sa.Text()),
        sa.column("quantity", sa.Integer()),
    )
    rows = conn.execute(
        sa.select(orders.c.order_id, orders.c.placed_at, lines.c.product_id, lines.c.quantity)
        .join(lines, lines.c.order_id == orders.c.order_id)
        .where(
            orders.c.placed_at >= oldest * WEEK,
            orders.c.status == "placed",
            orders.c.customer_id.is_not(None),
            lines.c.product_id.is_not(None),
        )
        .order_by(orders.c.order_id, lines.c.line)
    )
    per_order: dict[str, dict[str, int]] = defaultdict(dict)
    weeks: dict[str, int] = {}
    for row in rows:
        found = per_order[row.order_id]
        found[row.product_id] = found.get(row.product_id, 0) + int(row.quantity)
        weeks[row.order_id] = int(row.placed_at) // WEEK
    sales: dict[tuple[str, int], list[int]] = {}
    pairs: dict[tuple[str, int, str], int] = defaultdict(int)
    counted: list[dict[str, Any]] = []
    for order_id, products in per_order.items():
        week = weeks[order_id]
        counted.append(
            {
                "order_id": order_id,
                "week": week,
                "products": json.dumps([[p, u] for p, u in products.items()]),
            }
        )
        for product_id, units in products.items():
            total = sales.setdefault((product_id, week), [0, 0])
            total[0] += 1
            total[1] += units
        for a, b in permutations(list(products)[:PAIRS_PER_ORDER], 2):
            pairs[(a, week, b)] += 1
    _insert(conn, "commerce_counted_orders", counted)
    _insert(
        conn,
        "commerce_product_sales",
        [
            {"product_id": p, "week": w, "orders": o, "units": u}
            for (p, w), (o, u) in sorted(sales.items())
        ],
    )
    _insert(
        conn,
        "commerce_bought_together",
        [
            {"product_id": a, "week": w, "other_id": b, "orders": n}
            for (a, w, b), n in sorted(pairs.items())
        ],
    )


def _insert(conn: Any, name: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    table = sa.table(name, *(sa.column(c) for c in rows[0]))
    for start in range(0, len(rows), 5000):
        conn.execute(sa.insert(table), rows[start : start + 5000])


def downgrade() -> None:
    """Back to one all-time count per product and pair: the weeks kept, added up."""
    conn = op.get_bind()
    sales = [
        {"product_id": r.product_id, "orders": int(r.orders), "units": int(r.units)}
        for r in conn.execute(
            sa.text(
                "SELECT product_id, SUM(orders) AS orders, SUM(units) AS units"
                " FROM commerce_product_sales GROUP BY product_id"
            )
        )
    ]
    pairs = [
        {"product_id": r.product_id, "other_id": r.other_id, "orders": int(r.orders)}
        for r in conn.execute(
            sa.text(
                "SELECT product_id, other_id, SUM(orders) AS orders"
                " FROM commerce_bought_together GROUP BY product_id, other_id"
            )
        )
    ]
    op.drop_index("ix_commerce_counted_orders_week", table_name="commerce_counted_orders")
    op.drop_table("commerce_counted_orders")
    op.drop_index("ix_commerce_product_sales_week", table_name="commerce_product_sales")
    op.drop_table("commerce_product_sales")
    op.drop_index("ix_commerce_bought_together_week", table_name="commerce_bought_together")
    op.drop_table("commerce_bought_together")
    op.create_table(
        "commerce_bought_together",
        sa.Column("product_id", sa.Text(), nullable=False),
        sa.Column("other_id", sa.Text(), nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("product_id", "other_id", name=op.f("pk_commerce_bought_together")),
    )
    op.create_table(
        "commerce_product_sales",
        sa.Column("product_id", sa.Text(), nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.Column("units", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("product_id", name=op.f("pk_commerce_product_sales")),
    )
    _insert(conn, "commerce_product_sales", sales)
    _insert(conn, "commerce_bought_together", pairs)
