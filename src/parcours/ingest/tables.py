"""The event log: append-only, one row per event, deduplicated by messageId."""

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

# Where a bulk import (`parcours import events FILE`) stopped: the file's absolute path, the
# byte and line after its last committed chunk, and a digest of the bytes before that point
# (a file replaced or rewritten since is read from its first line again).
import_positions = Table(
    "import_positions",
    metadata,
    Column("file", Text, primary_key=True),
    Column("byte_offset", BigInteger, nullable=False),
    Column("line", BigInteger, nullable=False),
    Column("prefix_sha256", Text, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)
