"""commerce: each parcel's first estimated delivery, so that a later one is seen as a delay
before the first has passed

Revision ID: 0041
Revises: 0039
Create Date: 2026-12-07 07:30:00.000000

The Shipments page flagged a parcel delayed once its estimate had passed or a carrier said
so; a carrier moving the estimate later (`Shipment Delayed`, `estimate_slipped`) showed
only when the new estimate passed too, since only the latest was kept. Parcels stored
before this migration take their current estimate as their first (what was before is not
known). A partial index keeps the slipped parcels a lookup, not a scan of every parcel.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0041"
down_revision = "0039"
branch_labels = None
depends_on = None

_SLIPPED = sa.text("estimated_to > first_estimated_to")


def upgrade() -> None:
    op.add_column(
        "commerce_shipments", sa.Column("first_estimated_to", sa.BigInteger(), nullable=True)
    )
    op.execute("UPDATE commerce_shipments SET first_estimated_to = estimated_to")
    op.create_index(
        "ix_commerce_shipments_slipped",
        "commerce_shipments",
        ["estimated_to"],
        sqlite_where=_SLIPPED,
        postgresql_where=_SLIPPED,
    )


def downgrade() -> None:
    op.drop_index("ix_commerce_shipments_slipped", table_name="commerce_shipments")
    with op.batch_alter_table("commerce_shipments") as batch:
        batch.drop_column("first_estimated_to")
