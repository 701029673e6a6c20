"""The event log's table: append-only, one row per event, deduplicated by messageId."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Table, Text

from parcours.runtime.db import BigId, metadata

events = Table(
    "events",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("message_id", Text, nullable=False, unique=True),
    Column("customer_id", BigInteger, nullable=True),
    Column("type", Text, nullable=False),
    Column("name", Text, nullable=True),
    Column("user_id", Text, nullable=True),
    Column("anonymous_id", Text, nullable=True),
    # Times in milliseconds since the epoch; occurred_at is the corrected time.
    Column("occurred_at", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=True),
    Column("sent_at", BigInteger, nullable=True),
    Column("received_at", BigInteger, nullable=False),
    Column("source", Text, nullable=False),
    Column("payload", Text, nullable=False),
)
Index("ix_events_customer_seq", events.c.customer_id, events.c.seq)
