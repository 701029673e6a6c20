"""commerce: a product deleted from the shop's catalog, kept as withdrawn

Revision ID: 0044
Revises: 0043
Create Date: 2026-12-08 10:00:00.000000

Shopify's `products/delete` (and Parcours' own `Product Deleted`) withdraws a product:
its row stays (orders, reviews and recommendations' counts name it), marked with when it
was deleted, and its variants' stock goes to 0, so that nothing recommends it nor tells
a shopper it is back. A later report of the product from the catalog brings it back.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0044"
down_revision = "0043"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("commerce_products", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deleted_at", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("commerce_products", schema=None) as batch_op:
        batch_op.drop_column("deleted_at")
