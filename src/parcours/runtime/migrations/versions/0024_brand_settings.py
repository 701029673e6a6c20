"""the brand's settings made in the console, its logo, and the consent wording's versions

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-06 14:00:00.000000

The console's Settings page (docs/console.md, "Settings") keeps what the owner changed
over the configuration file's values: the brand's name, colours, sector, languages, time
zone, quiet hours and frequency caps; its logo; and each version of the words that ask
customers for consent.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "brand_settings",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_by", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_brand_settings")),
    )
    op.create_table(
        "brand_logo",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("media_type", sa.Text(), nullable=False),
        sa.Column("digest", sa.Text(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_brand_logo")),
    )
    op.create_table(
        "consent_wordings",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("texts", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_wordings")),
        sa.UniqueConstraint("version", name=op.f("uq_consent_wordings_version")),
    )


def downgrade() -> None:
    op.drop_table("consent_wordings")
    op.drop_table("brand_logo")
    op.drop_table("brand_settings")
