"""an admin key is one named person; journey versions record which key edited and approved

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 08:00:00.000000

Live admin keys that shared a name are told apart by their number, and the name of a live
admin key is unique from now on: the name is the person who holds it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    keys = sa.table(
        "api_keys",
        sa.column("id", sa.BigInteger),
        sa.column("kind", sa.Text),
        sa.column("name", sa.Text),
        sa.column("revoked_at", sa.BigInteger),
    )
    seen: set[str] = set()
    live_admins = conn.execute(
        sa.select(keys.c.id, keys.c.name)
        .where(keys.c.kind == "admin", keys.c.revoked_at.is_(None))
        .order_by(keys.c.id)
    ).all()
    for key_id, name in live_admins:
        if name.lower() in seen:
            conn.execute(
                sa.update(keys).where(keys.c.id == key_id).values(name=f"{name} (key {key_id})")
            )
        seen.add(name.lower())
    op.create_index(
        "uq_api_keys_live_admin_name",
        "api_keys",
        [sa.text("lower(name)")],
        unique=True,
        sqlite_where=sa.text("kind = 'admin' AND revoked_at IS NULL"),
        postgresql_where=sa.text("kind = 'admin' AND revoked_at IS NULL"),
    )
    with op.batch_alter_table("journey_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("edited_by_key", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("approved_by_key", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("journey_versions", schema=None) as batch_op:
        batch_op.drop_column("approved_by_key")
        batch_op.drop_column("edited_by_key")
    op.drop_index("uq_api_keys_live_admin_name", table_name="api_keys")
