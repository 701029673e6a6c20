"""outbox rows say when delivery last checked that the message was still wanted

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 08:00:00.000000

`checked_at`: the moment delivery, claiming a message to hand it to its provider, last
checked that it was still wanted (its journey run's goals and exits read in the log):
an order stored before it stops the message, one stored after does not take it back
(docs/journeys.md, "Nothing goes out after an order").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("checked_at", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("checked_at")
