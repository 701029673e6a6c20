"""commerce: a review's moderation (published or hidden, by whom, when) and the indexes of
the console's Reviews page

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-06 21:45:00.000000

A marketer or an owner hides a review from the console, or publishes it again; every
review kept so far stays published (docs/commerce.md, "Reviews").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "commerce_reviews",
        sa.Column("status", sa.Text(), server_default="published", nullable=False),
    )
    op.add_column("commerce_reviews", sa.Column("moderated_by", sa.Text(), nullable=True))
    op.add_column("commerce_reviews", sa.Column("moderated_at", sa.BigInteger(), nullable=True))
    op.create_index("ix_commerce_reviews_submitted", "commerce_reviews", ["submitted_at"])
    op.create_index("ix_commerce_reviews_status", "commerce_reviews", ["status", "submitted_at"])


def downgrade() -> None:
    op.drop_index("ix_commerce_reviews_status", table_name="commerce_reviews")
    op.drop_index("ix_commerce_reviews_submitted", table_name="commerce_reviews")
    op.drop_column("commerce_reviews", "moderated_at")
    op.drop_column("commerce_reviews", "moderated_by")
    op.drop_column("commerce_reviews", "status")
