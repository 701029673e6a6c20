"""counts of the log by hour, for the console's overview

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06 13:00:00.000000

The analytics package counts the log by hour, name, channel, reason and currency
(analytics/counts.py), following it from behind by `seq`. The counts start empty; the
first catch-up after this migration counts the whole log once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_counts",
        sa.Column("hour", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("amount_e4", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "hour", "name", "channel", "detail", "currency", name=op.f("pk_event_counts")
        ),
    )
    op.create_table(
        "analytics_positions",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_analytics_positions")),
    )


def downgrade() -> None:
    op.drop_table("analytics_positions")
    op.drop_table("event_counts")
