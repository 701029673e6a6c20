"""commerce: replenishment per customer and product, product views per day, what sells together

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-06 18:30:00.000000

The expected depletion of each consumable a customer bought (from its usage days or their
own pace), the products they viewed per day, and the counts recommendations read: orders
holding two products together, orders and units per product (docs/commerce.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "commerce_replenishments",
        sa.Column("customer_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("product_id", sa.Text(), nullable=False),
        sa.Column("last_order_id", sa.Text(), nullable=False),
        sa.Column("last_ordered_at", sa.BigInteger(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.Column("basis", sa.Text(), nullable=False),
        sa.Column("pace_ms", sa.BigInteger(), nullable=True),
        sa.Column("depletes_at", sa.BigInteger(), nullable=True),
        sa.Column("due_at", sa.BigInteger(), nullable=True),
        sa.Column("announced_at", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "customer_id", "product_id", name=op.f("pk_commerce_replenishments")
        ),
    )
    op.create_table(
        "commerce_product_views",
        sa.Column("customer_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("product_id", sa.Text(), nullable=False),
        sa.Column("day", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("views", sa.Integer(), nullable=False),
        sa.Column("last_viewed_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "customer_id", "product_id", "day", name=op.f("pk_commerce_product_views")
        ),
    )
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
    op.create_index(
        "ix_commerce_products_category", "commerce_products", ["category"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_commerce_products_category", table_name="commerce_products")
    for table in (
        "commerce_product_sales",
        "commerce_bought_together",
        "commerce_product_views",
        "commerce_replenishments",
    ):
        op.drop_table(table)
