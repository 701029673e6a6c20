"""push subscriptions say whether a verified user id made them

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-12 09:00:00.000000

A Web Push subscription records the brand's user id it was made with, once the identity
hash proved it (`verified_user_id`); NULL when it was made anonymously. With identity
verification set up, a customer who has a user id is pushed only through subscriptions
made with a verified user id (docs/security.md, Web Push).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("push_subscriptions", sa.Column("verified_user_id", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("push_subscriptions") as batch:
        batch.drop_column("verified_user_id")
