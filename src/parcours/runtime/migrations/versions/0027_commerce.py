"""commerce: orders with their lines and refunds, shipments with their scans, returns

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-09 10:00:00.000000

The commerce domain's own tables, projected from the event log (docs/commerce.md): an
order counted once whatever reported it, its lines and refunds; several parcels per
order with one status taxonomy and the history of their scans; returns.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "commerce_orders",
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("number", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("subtotal", sa.Text(), nullable=True),
        sa.Column("discount", sa.Text(), nullable=True),
        sa.Column("coupon", sa.Text(), nullable=True),
        sa.Column("shipping", sa.Text(), nullable=True),
        sa.Column("tax", sa.Text(), nullable=True),
        sa.Column("total", sa.Text(), nullable=False),
        sa.Column("refunded", sa.Text(), nullable=False),
        sa.Column("placed_at", sa.BigInteger(), nullable=False),
        sa.Column("cancelled_at", sa.BigInteger(), nullable=True),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_commerce_orders")),
    )
    op.create_index(
        "ix_commerce_orders_customer", "commerce_orders", ["customer_id", "placed_at"], unique=False
    )
    op.create_table(
        "commerce_order_lines",
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("line", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        sa.Column("product_id", sa.Text(), nullable=True),
        sa.Column("variant_id", sa.Text(), nullable=True),
        sa.Column("sku", sa.Text(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("image_url", sa.Text(), nullable=True),
        sa.Column("price", sa.Text(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("refunded_quantity", sa.Integer(), nullable=False),
        sa.Column("refunded_amount", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", "line", name=op.f("pk_commerce_order_lines")),
    )
    op.create_index(
        "ix_commerce_order_lines_customer", "commerce_order_lines", ["customer_id"], unique=False
    )
    op.create_table(
        "commerce_refunds",
        sa.Column("refund_id", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("reported", sa.Text(), nullable=False),
        sa.Column("amount", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("lines", sa.Text(), nullable=False),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.Column("occurred_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("refund_id", name=op.f("pk_commerce_refunds")),
    )
    op.create_index("ix_commerce_refunds_order", "commerce_refunds", ["order_id"], unique=False)
    op.create_index(
        "ix_commerce_refunds_customer", "commerce_refunds", ["customer_id"], unique=False
    )
    op.create_table(
        "commerce_shipments",
        sa.Column("shipment_id", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=True),
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        sa.Column("carrier", sa.Text(), nullable=True),
        sa.Column("tracking_number", sa.Text(), nullable=True),
        sa.Column("tracking_url", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("status_at", sa.BigInteger(), nullable=False),
        sa.Column("first_status", sa.Text(), nullable=False),
        sa.Column("estimated_from", sa.BigInteger(), nullable=True),
        sa.Column("estimated_to", sa.BigInteger(), nullable=True),
        sa.Column("estimate_at", sa.BigInteger(), nullable=True),
        sa.Column("delivered_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("shipment_id", name=op.f("pk_commerce_shipments")),
    )
    op.create_index("ix_commerce_shipments_order", "commerce_shipments", ["order_id"], unique=False)
    op.create_index(
        "ix_commerce_shipments_customer", "commerce_shipments", ["customer_id"], unique=False
    )
    op.create_table(
        "commerce_shipment_scans",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("shipment_id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("reported", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=True),
        sa.Column("location", sa.Text(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.Column("occurred_at", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commerce_shipment_scans")),
    )
    op.create_index(
        "ix_commerce_shipment_scans_shipment",
        "commerce_shipment_scans",
        ["shipment_id"],
        unique=False,
    )
    op.create_index(
        "ix_commerce_shipment_scans_customer",
        "commerce_shipment_scans",
        ["customer_id"],
        unique=False,
    )
    op.create_table(
        "commerce_returns",
        sa.Column("return_id", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("requested_at", sa.BigInteger(), nullable=True),
        sa.Column("label_sent_at", sa.BigInteger(), nullable=True),
        sa.Column("received_at", sa.BigInteger(), nullable=True),
        sa.Column("refunded_at", sa.BigInteger(), nullable=True),
        sa.Column("window_days", sa.Integer(), nullable=True),
        sa.Column("within_window", sa.Boolean(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("return_id", name=op.f("pk_commerce_returns")),
    )
    op.create_index("ix_commerce_returns_order", "commerce_returns", ["order_id"], unique=False)
    op.create_index(
        "ix_commerce_returns_customer", "commerce_returns", ["customer_id"], unique=False
    )


def downgrade() -> None:
    for table in (
        "commerce_returns",
        "commerce_shipment_scans",
        "commerce_shipments",
        "commerce_refunds",
        "commerce_order_lines",
        "commerce_orders",
    ):
        op.drop_table(table)
