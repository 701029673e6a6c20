"""loyalty: referral codes and the referrals they converted

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 09:19:01.595738
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "referral_codes",
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("issued_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_referral_codes")),
    )
    op.create_index("ix_referral_codes_customer", "referral_codes", ["customer_id"], unique=False)
    op.create_table(
        "referral_conversions",
        sa.Column("referee_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("referrer_id", sa.BigInteger(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("reward_code", sa.Text(), nullable=False),
        sa.Column("converted_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("referee_id", name=op.f("pk_referral_conversions")),
        sa.UniqueConstraint("reward_code", name=op.f("uq_referral_conversions_reward_code")),
    )
    op.create_index(
        "ix_referral_conversions_referrer", "referral_conversions", ["referrer_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_referral_conversions_referrer", table_name="referral_conversions")
    op.drop_table("referral_conversions")
    op.drop_index("ix_referral_codes_customer", table_name="referral_codes")
    op.drop_table("referral_codes")
