"""The segments module's tables: the definitions, and each customer's memberships."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, Table, Text, text

from parcours.runtime.db import BigId, metadata

segments = Table(
    "segments",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("source", Text, nullable=False),  # the YAML or JSON as written
    # One more at each change: a batch evaluation of an older generation stops.
    Column("generation", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("updated_by", Text, nullable=False),
    # When every customer had been evaluated on this generation (None while it runs).
    Column("evaluated_at", BigInteger, nullable=True),
)

# One row per stay in a segment: entered, and exited (None while the customer is in).
segment_memberships = Table(
    "segment_memberships",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("customer_id", BigInteger, nullable=False),
    Column("segment_id", Text, nullable=False),
    Column("entered_at", BigInteger, nullable=False),
    Column("exited_at", BigInteger, nullable=True),
    Column("exit_reason", Text, nullable=True),
    # Entered by the batch evaluation of a new or changed segment, not by what they did.
    Column("backfill", Integer, nullable=False, server_default="0"),
)
# At most one current stay per segment and customer; also the member list, in id order.
Index(
    "uq_segment_memberships_current",
    segment_memberships.c.segment_id,
    segment_memberships.c.customer_id,
    unique=True,
    sqlite_where=text("exited_at IS NULL"),
    postgresql_where=text("exited_at IS NULL"),
)
Index(
    "ix_segment_memberships_customer",
    segment_memberships.c.customer_id,
    segment_memberships.c.segment_id,
)
