"""Shopify customer ids and order ids keyed by their shop

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-10 10:00:00.000000

Reserved; the data rewrite follows.
"""

from __future__ import annotations

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
