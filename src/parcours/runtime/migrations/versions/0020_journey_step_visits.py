"""journey_passes becomes journey_step_visits

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 10:30:00.000000

"Pass" meant two things: a run passing a journey step, and an Apple Wallet pass. The
table of a run's visits to the steps (one row each time a run reaches a step, with what
happened there) is named for what it holds (docs/architecture.md, glossary).
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    _rename("journey_passes", "journey_step_visits")


def downgrade() -> None:
    _rename("journey_step_visits", "journey_passes")


def _rename(old: str, new: str) -> None:
    op.drop_index(f"ix_{old}_step", table_name=old)
    op.rename_table(old, new)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE {new} RENAME CONSTRAINT pk_{old} TO pk_{new}")
        op.execute(f"ALTER SEQUENCE {old}_id_seq RENAME TO {new}_id_seq")
    op.create_index(f"ix_{new}_step", new, ["journey_id", "version", "step_id"])
