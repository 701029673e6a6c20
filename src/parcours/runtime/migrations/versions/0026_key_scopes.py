"""an admin key may be limited to scopes of the admin API

Revision ID: 0026
Revises: 0024
Create Date: 2026-12-08 10:00:00.000000

The scopes an admin key is limited to, space-separated (`journeys:read segments:write`);
NULL for a key limited by none (every key made before, and any made without a choice):
it reaches every route its user's role allows, as before (docs/console.md, "API keys").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("scopes", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("api_keys", "scopes")
