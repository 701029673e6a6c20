"""wallet orders, device registrations per customer, Google Wallet objects

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "wallet_orders",
        sa.Column("identifier", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("auth_token", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("fulfillment_status", sa.Text(), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("identifier", name=op.f("pk_wallet_orders")),
        sa.UniqueConstraint("order_id", name=op.f("uq_wallet_orders_order_id")),
    )
    op.create_index("ix_wallet_orders_customer", "wallet_orders", ["customer_id"], unique=False)
    with op.batch_alter_table("wallet_passes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("google_object_id", sa.Text(), nullable=True))
    # Every registration names its customer: the pass's, for those made before.
    with op.batch_alter_table("wallet_registrations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("customer_id", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE wallet_registrations SET customer_id = (SELECT p.customer_id FROM wallet_passes p "
        "WHERE p.serial = wallet_registrations.serial)"
    )
    op.execute("DELETE FROM wallet_registrations WHERE customer_id IS NULL")
    with op.batch_alter_table("wallet_registrations", schema=None) as batch_op:
        batch_op.alter_column("customer_id", existing_type=sa.BigInteger(), nullable=False)
        batch_op.create_index("ix_wallet_registrations_customer", ["customer_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("wallet_registrations", schema=None) as batch_op:
        batch_op.drop_index("ix_wallet_registrations_customer")
        batch_op.drop_column("customer_id")
    with op.batch_alter_table("wallet_passes", schema=None) as batch_op:
        batch_op.drop_column("google_object_id")
    op.drop_index("ix_wallet_orders_customer", table_name="wallet_orders")
    op.drop_table("wallet_orders")
