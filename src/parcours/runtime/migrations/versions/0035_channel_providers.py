"""channels: the providers set up in the console's Settings page

Revision ID: 0035
Revises: 0034
Create Date: 2026-12-07 01:20:00.000000

One row per channel whose provider an owner set up in the console: its settings as JSON,
its secrets sealed (AES-GCM, channels/stored.py), a version counted up at each save.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0035"
down_revision = "0034"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "channel_providers",
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("settings", sa.Text(), nullable=False),
        sa.Column("secrets", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_by", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("channel", name=op.f("pk_channel_providers")),
    )


def downgrade() -> None:
    op.drop_table("channel_providers")
