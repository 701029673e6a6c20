"""customers: no copy of the orders of their own; commerce keeps the only one

Revision ID: 0043
Revises: 0042
Create Date: 2026-12-08 09:00:00.000000

`customer_orders` was the customers' copy of the orders, older than commerce; the order
traits were counted from it, then counted again by commerce from `commerce_orders`. The
customers package now asks commerce (docs/commerce.md, "One copy of the orders"). An
order only the old table holds (a database from before commerce, migration 0027, which
did not replay the events already stored) is copied into `commerce_orders` first, with
what the old table knew: its customer, currency, total, refunded amount, status and
time; its source is `shopify` when its id carries a shop, else `site`; its lines stay
in its events. Then the table goes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0043"
down_revision = "0042"
branch_labels = None
depends_on = None

_SHOP_MARK = "%.myshopify.com:%"


def upgrade() -> None:
    op.execute(
        sa.text(
            "INSERT INTO commerce_orders (order_id, customer_id, source, status, currency, "
            "total, refunded, placed_at, cancelled_at, updated_at) "
            "SELECT o.order_id, o.customer_id, "
            "CASE WHEN o.order_id LIKE :shop THEN 'shopify' ELSE 'site' END, "
            "o.status, o.currency, o.total, o.refunded, o.occurred_at, "
            "CASE WHEN o.status = 'cancelled' THEN o.occurred_at END, o.occurred_at "
            "FROM customer_orders o WHERE NOT EXISTS "
            "(SELECT 1 FROM commerce_orders c WHERE c.order_id = o.order_id)"
        ).bindparams(shop=_SHOP_MARK)
    )
    missing = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT count(*) FROM customer_orders o WHERE NOT EXISTS "
                "(SELECT 1 FROM commerce_orders c WHERE c.order_id = o.order_id)"
            )
        )
        .scalar_one()
    )
    if missing:  # the copy above failed to hold one: keep the table rather than lose it
        raise RuntimeError(f"{missing} orders of customer_orders are not in commerce_orders")
    with op.batch_alter_table("customer_orders", schema=None) as batch_op:
        batch_op.drop_index("ix_customer_orders_customer")
    op.drop_table("customer_orders")


def downgrade() -> None:
    op.create_table(
        "customer_orders",
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("total", sa.Text(), nullable=False),
        sa.Column("refunded", sa.Text(), server_default="0", nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("occurred_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_customer_orders")),
    )
    op.create_index("ix_customer_orders_customer", "customer_orders", ["customer_id"])
    op.execute(
        "INSERT INTO customer_orders (order_id, customer_id, currency, total, refunded, "
        "status, occurred_at) SELECT order_id, customer_id, currency, total, refunded, "
        "status, placed_at FROM commerce_orders WHERE customer_id IS NOT NULL"
    )
