"""The journeys module's tables: versions of each journey, and the runs of customers."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, Table, Text, UniqueConstraint, text

from parcours.runtime.db import BigId, metadata

journey_versions = Table(
    "journey_versions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("journey_id", Text, nullable=False),
    Column("version", Integer, nullable=False),
    # draft | in_review | approved | live | paused | archived | superseded
    Column("status", Text, nullable=False),
    Column("source", Text, nullable=False),  # the YAML as written
    Column("edited_by", Text, nullable=False),
    Column("approved_by", Text, nullable=True),
    Column("approved_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("journey_id", "version", name="uq_journey_versions_version"),
)

journey_runs = Table(
    "journey_runs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("journey_id", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("customer_id", BigInteger, nullable=False),
    Column("run_key", Text, nullable=False),  # the entry key's value, '' without a key
    Column("state", Text, nullable=False),  # active | ended
    Column("pc", Integer, nullable=False),
    Column("waiting", Text, nullable=True),  # timer | event
    Column("wait_event", Text, nullable=True),
    Column("wait_key", Text, nullable=True),
    Column("due_at", BigInteger, nullable=True),
    Column("entered_at", BigInteger, nullable=False),
    Column("entry_message_id", Text, nullable=False),
    Column("entry_event", Text, nullable=False),
    Column("ended_at", BigInteger, nullable=True),
    Column("end_reason", Text, nullable=True),
    Column("converted", Integer, nullable=False, server_default="0"),
    Column("consumed_seq", BigInteger, nullable=True),
)
# At most one active run per customer, journey and key.
Index(
    "uq_journey_runs_active",
    journey_runs.c.journey_id,
    journey_runs.c.customer_id,
    journey_runs.c.run_key,
    unique=True,
    sqlite_where=text("state = 'active'"),
    postgresql_where=text("state = 'active'"),
)
Index("ix_journey_runs_customer", journey_runs.c.customer_id, journey_runs.c.state)
Index("ix_journey_runs_entry", journey_runs.c.journey_id, journey_runs.c.entry_message_id)

# One row each time a run passes a step, with what happened there (sent, held, waited,
# branched...): per-step counts without reading the event log.
journey_passes = Table(
    "journey_passes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("journey_id", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("step_id", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("run_id", BigInteger, nullable=False),
    Column("at", BigInteger, nullable=False),
)
Index(
    "ix_journey_passes_step",
    journey_passes.c.journey_id,
    journey_passes.c.version,
    journey_passes.c.step_id,
)
