"""where each bulk import file stopped, kept in the database it imports into

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-10 09:00:00.000000

`parcours import events` used to keep its position in a file beside the imported one,
which then applied to whichever database the next run used.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "import_positions",
        sa.Column("file", sa.Text(), nullable=False),
        sa.Column("byte_offset", sa.BigInteger(), nullable=False),
        sa.Column("line", sa.BigInteger(), nullable=False),
        sa.Column("prefix_sha256", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("file", name=op.f("pk_import_positions")),
    )


def downgrade() -> None:
    op.drop_table("import_positions")
