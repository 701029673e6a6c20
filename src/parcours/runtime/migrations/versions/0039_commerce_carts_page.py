"""commerce: indexes for the console's page of carts (the latest active, of all or of a
status, a page at a time) and its summary (the carts abandoned over a period)

Revision ID: 0039
Revises: 0038
Create Date: 2026-12-07 01:45:00.000000

Without them, with a million carts, each page of the Carts page and its 30 days' figures
read the whole table (docs/commerce.md, "Console pages").
"""

from __future__ import annotations

from alembic import op

revision = "0039"
down_revision = "0038"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_commerce_carts_activity", "commerce_carts", ["last_activity_at", "cart_key"]
    )
    op.create_index(
        "ix_commerce_carts_status_activity",
        "commerce_carts",
        ["status", "last_activity_at", "cart_key"],
    )
    op.create_index("ix_commerce_carts_abandoned", "commerce_carts", ["status", "abandoned_at"])


def downgrade() -> None:
    op.drop_index("ix_commerce_carts_abandoned", table_name="commerce_carts")
    op.drop_index("ix_commerce_carts_status_activity", table_name="commerce_carts")
    op.drop_index("ix_commerce_carts_activity", table_name="commerce_carts")
