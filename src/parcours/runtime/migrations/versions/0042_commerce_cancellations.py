"""commerce: an order's cancellation that came before the order, kept until it comes

Revision ID: 0042
Revises: 0041
Create Date: 2026-12-07 08:00:00.000000

Shops' webhooks come in any order: an `Order Cancelled` of an order not known yet was
dropped, and the order, when it came, stayed placed (counted in the customer's traits and
the recommendations). It is now kept here and applied when the order comes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0042"
down_revision = "0041"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "commerce_cancellations",
        sa.Column("order_id", sa.Text(), primary_key=True),
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("occurred_at", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_commerce_cancellations_customer", "commerce_cancellations", ["customer_id"])


def downgrade() -> None:
    op.drop_index("ix_commerce_cancellations_customer", table_name="commerce_cancellations")
    op.drop_table("commerce_cancellations")
