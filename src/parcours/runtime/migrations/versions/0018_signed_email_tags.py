"""one bounce per message, enforced; where signed email tags start

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-12 12:00:00.000000

A message counts at most one bounce: a unique index on `bounces.outbox_id` makes it so
even when two reports about one message are recorded at the same moment (PostgreSQL), and
the duplicates such a race may have left are removed first (the first bounce stays).

The per-message addresses bounces and replies come back to, and the Message-ID, are now
signed (channels/email_tags.py). The messages sent before carry unsigned ones: the first
outbox id to come is kept as `email-tags-signed-from`, so that an unsigned tag is only
ever read for a message numbered below it (docs/security.md, "Inbound email").
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "DELETE FROM bounces WHERE outbox_id IS NOT NULL AND id NOT IN "
        "(SELECT min(id) FROM bounces WHERE outbox_id IS NOT NULL GROUP BY outbox_id)"
    )
    op.create_index("uq_bounces_outbox", "bounces", ["outbox_id"], unique=True)
    op.get_bind().execute(
        sa.text(
            "INSERT INTO instance_secrets (name, value, created_at) "
            "SELECT 'email-tags-signed-from', CAST(COALESCE(max(id), 0) + 1 AS TEXT), :now "
            "FROM outbox"
        ),
        {"now": int(time.time() * 1000)},
    )


def downgrade() -> None:
    op.execute("DELETE FROM instance_secrets WHERE name = 'email-tags-signed-from'")
    op.drop_index("uq_bounces_outbox", table_name="bounces")
