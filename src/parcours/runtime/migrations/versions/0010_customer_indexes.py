"""indexes that keep per-customer reads independent of the number of customers

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 16:00:00.000000

Without statistics, SQLite preferred the identities primary key (kind, value) for
`kind = ... AND customer_id IN (...)` and read every identity of that kind; the customer
index now covers the kind as well. Suppressions were read by customer with no index.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_identities_customer", table_name="identities")
    op.create_index("ix_identities_customer", "identities", ["customer_id", "kind"])
    op.create_index("ix_suppressions_customer", "suppressions", ["customer_id"])


def downgrade() -> None:
    op.drop_index("ix_suppressions_customer", table_name="suppressions")
    op.drop_index("ix_identities_customer", table_name="identities")
    op.create_index("ix_identities_customer", "identities", ["customer_id"])
