"""The outbox: message intents written by journeys, each once, keyed by its idempotency key."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Table, Text

from parcours.runtime.db import BigId, metadata

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("idempotency_key", Text, nullable=False, unique=True),
    Column("customer_id", BigInteger, nullable=False),
    Column("journey_id", Text, nullable=True),
    Column("run_id", BigInteger, nullable=True),
    Column("step_id", Text, nullable=True),
    Column("channel", Text, nullable=False),
    Column("template", Text, nullable=False),
    Column("purpose", Text, nullable=False),
    Column("state", Text, nullable=False),  # pending | sent | held | failed
    Column("created_at", BigInteger, nullable=False),
    Column("detail", Text, nullable=False, server_default="{}"),
)
Index("ix_outbox_customer", outbox.c.customer_id, outbox.c.created_at)
