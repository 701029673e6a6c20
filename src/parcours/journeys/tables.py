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
    Column("edited_by", Text, nullable=False),  # the person (their admin key's name)
    Column("approved_by", Text, nullable=True),
    Column("edited_by_key", BigInteger, nullable=True),  # the admin key, when one was used
    Column("approved_by_key", BigInteger, nullable=True),
    Column("approved_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    # Who submitted it for review (never its approver), and what the approver approved:
    # the difference from the version live when they approved it (a unified diff).
    Column("submitted_by", Text, nullable=True),
    Column("submitted_at", BigInteger, nullable=True),
    Column("approved_diff", Text, nullable=True),
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
    # Held out as the control group by a split: measured, sent nothing.
    Column("control", Integer, nullable=False, server_default="0"),
    # The wait_for it last timed out of (its position and deadline): an event dated before
    # the deadline that arrives later still takes the event's path, until the run acts.
    Column("race_pc", Integer, nullable=True),
    Column("race_until", BigInteger, nullable=True),
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

# One row each time a run reaches a step (a visit), with what happened there (sent, held,
# waited, branched...): per-step counts without reading the event log.
journey_step_visits = Table(
    "journey_step_visits",
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
    "ix_journey_step_visits_step",
    journey_step_visits.c.journey_id,
    journey_step_visits.c.version,
    journey_step_visits.c.step_id,
)

# Entries refused (already entered, re-entry too soon, active run exists, journey paused,
# trigger too old...), counted per version and reason for the stats; `count` refusals of
# one customer for one reason in one reaction.
journey_refusals = Table(
    "journey_refusals",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("journey_id", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("customer_id", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("count", Integer, nullable=False, server_default="1"),
    Column("at", BigInteger, nullable=False),
)
Index(
    "ix_journey_refusals_version",
    journey_refusals.c.journey_id,
    journey_refusals.c.version,
    journey_refusals.c.reason,
)
