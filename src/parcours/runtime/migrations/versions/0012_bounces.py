"""bounces counted per address, where a suppression came from, inbound mail not acted on

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-10 10:00:00.000000

Soft bounces are counted per address (several within a window bar it), every suppression
says where it came from and which message, and inbound mail that changed nothing is kept
with the reason, for an admin to read.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("suppressions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("outbox_id", sa.BigInteger(), nullable=True))
    op.create_table(
        "bounces",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        sa.Column("outbox_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("cleared_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bounces")),
    )
    op.create_index("ix_bounces_address", "bounces", ["channel", "address", "at"], unique=False)
    op.create_index("ix_bounces_customer", "bounces", ["customer_id"], unique=False)
    op.create_table(
        "inbound_ignored",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.Column("mail_from", sa.Text(), nullable=True),
        sa.Column("rcpt_to", sa.Text(), nullable=False),
        sa.Column("from_address", sa.Text(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        sa.Column("outbox_id", sa.BigInteger(), nullable=True),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_ignored")),
    )
    op.create_index("ix_inbound_ignored_received", "inbound_ignored", ["received_at"], unique=False)
    op.create_index("ix_inbound_ignored_customer", "inbound_ignored", ["customer_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_inbound_ignored_customer", table_name="inbound_ignored")
    op.drop_index("ix_inbound_ignored_received", table_name="inbound_ignored")
    op.drop_table("inbound_ignored")
    op.drop_index("ix_bounces_customer", table_name="bounces")
    op.drop_index("ix_bounces_address", table_name="bounces")
    op.drop_table("bounces")
    with op.batch_alter_table("suppressions", schema=None) as batch_op:
        batch_op.drop_column("outbox_id")
        batch_op.drop_column("source")
