"""journey passes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 04:18:46.575156
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "journey_passes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("journey_id", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("step_id", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journey_passes")),
    )
    with op.batch_alter_table("journey_passes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_journey_passes_step", ["journey_id", "version", "step_id"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("journey_passes", schema=None) as batch_op:
        batch_op.drop_index("ix_journey_passes_step")

    op.drop_table("journey_passes")
