"""journey runs measured: control group, event-time races, refused entries

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-10 11:00:00.000000

A run records whether its customer was held out as the control group (both groups'
conversions are measured over the goals' window), and the wait-for step it timed out of
with that step's deadline (an event dated before the deadline that arrives later still
takes the event's path). Refused entries are counted per journey version and reason.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("journey_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("control", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("race_pc", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("race_until", sa.BigInteger(), nullable=True))
    op.create_table(
        "journey_refusals",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("journey_id", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("count", sa.Integer(), server_default="1", nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journey_refusals")),
    )
    with op.batch_alter_table("journey_refusals", schema=None) as batch_op:
        batch_op.create_index(
            "ix_journey_refusals_version", ["journey_id", "version", "reason"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("journey_refusals", schema=None) as batch_op:
        batch_op.drop_index("ix_journey_refusals_version")
    op.drop_table("journey_refusals")
    with op.batch_alter_table("journey_runs", schema=None) as batch_op:
        batch_op.drop_column("race_until")
        batch_op.drop_column("race_pc")
        batch_op.drop_column("control")
