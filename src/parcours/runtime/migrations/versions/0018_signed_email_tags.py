"""one bounce per message, enforced; where signed email tags start

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-12 12:00:00.000000

(reserved; filled in by the change that uses it)
"""

from __future__ import annotations

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
