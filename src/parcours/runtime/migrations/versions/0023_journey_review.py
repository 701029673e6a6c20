"""journey versions record who submitted them and what their approver approved

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06 13:30:00.000000

A version submitted by one person is approved by another (never its editor nor its
submitter), and the approval keeps the difference from the version live then
(docs/console.md, "Journeys").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("journey_versions", sa.Column("submitted_by", sa.Text(), nullable=True))
    op.add_column("journey_versions", sa.Column("submitted_at", sa.BigInteger(), nullable=True))
    op.add_column("journey_versions", sa.Column("approved_diff", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("journey_versions", "approved_diff")
    op.drop_column("journey_versions", "submitted_at")
    op.drop_column("journey_versions", "submitted_by")
