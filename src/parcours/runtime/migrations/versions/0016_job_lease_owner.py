"""jobs carry the worker that holds their lease

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-11 09:00:00.000000

A job put back for the end of a lease while its worker makes a call (a send, a webhook)
names that worker (`lease_owner`, its heartbeat id). When that worker is gone (its process
is dead, or its heartbeat stale), another worker brings the job forward at once instead
of waiting for the lease to run out (runtime/heartbeats.py, docs/queue.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("lease_owner", sa.Text(), nullable=True))
    op.create_index(
        "ix_jobs_lease_owner",
        "jobs",
        ["lease_owner"],
        sqlite_where=sa.text("lease_owner IS NOT NULL"),
        postgresql_where=sa.text("lease_owner IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_lease_owner", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("lease_owner")
