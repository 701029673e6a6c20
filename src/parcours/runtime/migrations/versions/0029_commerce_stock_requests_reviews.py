"""commerce: back-in-stock requests with their consent, reviews with ratings and photos

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-06 18:30:00.000000

The "notify me" requests of a product page, each notified once when its variant's stock
returns; one review per order, with a rating per product and an optional photo
(docs/commerce.md, "Back in stock" and "Reviews").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "commerce_stock_requests",
        sa.Column("request_id", _ID, autoincrement=True, nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("product_id", sa.Text(), nullable=False),
        sa.Column("variant_id", sa.Text(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("consent_wording", sa.Text(), nullable=False),
        sa.Column("consent_version", sa.Text(), nullable=True),
        sa.Column("page_url", sa.Text(), nullable=True),
        sa.Column("requested_at", sa.BigInteger(), nullable=False),
        sa.Column("notified_at", sa.BigInteger(), nullable=True),
        sa.Column("stock_returned", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_commerce_stock_requests")),
    )
    op.create_index(
        "ix_commerce_stock_requests_waiting",
        "commerce_stock_requests",
        ["variant_id", "status", "request_id"],
        unique=False,
    )
    op.create_index(
        "ix_commerce_stock_requests_customer",
        "commerce_stock_requests",
        ["customer_id", "variant_id"],
        unique=False,
    )
    op.create_table(
        "commerce_reviews",
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("locale", sa.Text(), nullable=False),
        sa.Column("photo_type", sa.Text(), nullable=True),
        sa.Column("photo_size", sa.Integer(), nullable=True),
        sa.Column("submissions", sa.Integer(), nullable=False),
        sa.Column("submitted_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_commerce_reviews")),
    )
    op.create_index(
        "ix_commerce_reviews_customer", "commerce_reviews", ["customer_id"], unique=False
    )
    op.create_table(
        "commerce_review_ratings",
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("product_id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", "product_id", name=op.f("pk_commerce_review_ratings")),
    )
    op.create_index(
        "ix_commerce_review_ratings_customer",
        "commerce_review_ratings",
        ["customer_id"],
        unique=False,
    )
    op.create_index(
        "ix_commerce_review_ratings_product",
        "commerce_review_ratings",
        ["product_id"],
        unique=False,
    )
    op.create_table(
        "commerce_review_photos",
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_commerce_review_photos")),
    )
    op.create_index(
        "ix_commerce_review_photos_customer",
        "commerce_review_photos",
        ["customer_id"],
        unique=False,
    )


def downgrade() -> None:
    for table in (
        "commerce_review_photos",
        "commerce_review_ratings",
        "commerce_reviews",
        "commerce_stock_requests",
    ):
        op.drop_table(table)
