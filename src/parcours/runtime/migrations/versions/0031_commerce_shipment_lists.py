"""commerce: indexes for the console's lists of parcels (by status, by last report, by
estimate) and the carriers' "delayed" reports

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-06 19:15:00.000000

With a million parcels, the Shipments page's counts per status, its stalled, delayed and
latest lists each read the whole table without them (docs/commerce.md, "Console pages").
"""

from __future__ import annotations

from alembic import op

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_commerce_shipments_status_updated",
        "commerce_shipments",
        ["status", "updated_at"],
    )
    op.create_index("ix_commerce_shipments_updated", "commerce_shipments", ["updated_at"])
    op.create_index("ix_commerce_shipments_estimated", "commerce_shipments", ["estimated_to"])
    op.create_index(
        "ix_commerce_shipment_scans_reported",
        "commerce_shipment_scans",
        ["reported", "shipment_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_commerce_shipment_scans_reported", table_name="commerce_shipment_scans")
    op.drop_index("ix_commerce_shipments_estimated", table_name="commerce_shipments")
    op.drop_index("ix_commerce_shipments_updated", table_name="commerce_shipments")
    op.drop_index("ix_commerce_shipments_status_updated", table_name="commerce_shipments")
