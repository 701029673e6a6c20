"""commerce: carts and checkouts with their abandonment, products and variants with stock

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-10 10:00:00.000000

Carts projected from the shopper's events, announced once as `Cart Abandoned` after a
time without activity, closed by an order; the catalog's products and variants with their
images, prices per currency and stock (docs/commerce.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "commerce_carts",
        sa.Column("cart_key", sa.Text(), nullable=False),
        sa.Column("cart_id", sa.Text(), nullable=True),
        sa.Column("checkout_id", sa.Text(), nullable=True),
        sa.Column("order_id", sa.Text(), nullable=True),
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("items", sa.Text(), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("recovery_url", sa.Text(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("last_activity_at", sa.BigInteger(), nullable=False),
        sa.Column("checkout_started_at", sa.BigInteger(), nullable=True),
        sa.Column("abandoned_at", sa.BigInteger(), nullable=True),
        sa.Column("ordered_at", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("cart_key", name=op.f("pk_commerce_carts")),
    )
    op.create_index("ix_commerce_carts_cart_id", "commerce_carts", ["cart_id"], unique=False)
    op.create_index(
        "ix_commerce_carts_checkout_id", "commerce_carts", ["checkout_id"], unique=False
    )
    op.create_index("ix_commerce_carts_order_id", "commerce_carts", ["order_id"], unique=False)
    op.create_index(
        "ix_commerce_carts_customer", "commerce_carts", ["customer_id", "status"], unique=False
    )
    op.create_table(
        "commerce_products",
        sa.Column("product_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("category", sa.Text(), nullable=True),
        sa.Column("brand", sa.Text(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("image_url", sa.Text(), nullable=True),
        sa.Column("images", sa.Text(), nullable=False),
        sa.Column("consumable", sa.Boolean(), nullable=False),
        sa.Column("usage_days", sa.Integer(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("product_id", name=op.f("pk_commerce_products")),
    )
    op.create_table(
        "commerce_variants",
        sa.Column("variant_id", sa.Text(), nullable=False),
        sa.Column("product_id", sa.Text(), nullable=False),
        sa.Column("sku", sa.Text(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("image_url", sa.Text(), nullable=True),
        sa.Column("prices", sa.Text(), nullable=False),
        sa.Column("stock", sa.Integer(), nullable=True),
        sa.Column("stock_locations", sa.Text(), nullable=True),
        sa.Column("inventory_item_id", sa.Text(), nullable=True),
        sa.Column("stock_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("variant_id", name=op.f("pk_commerce_variants")),
    )
    op.create_index(
        "ix_commerce_variants_product", "commerce_variants", ["product_id"], unique=False
    )
    op.create_index("ix_commerce_variants_sku", "commerce_variants", ["sku"], unique=False)
    op.create_index(
        "ix_commerce_variants_inventory_item",
        "commerce_variants",
        ["inventory_item_id"],
        unique=False,
    )


def downgrade() -> None:
    for table in ("commerce_variants", "commerce_products", "commerce_carts"):
        op.drop_table(table)
