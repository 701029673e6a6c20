"""The tables the analytics package owns: counts of the log by hour, and how far it read."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, PrimaryKeyConstraint, Table, Text

from parcours.runtime.db import metadata

# One row per hour (UTC, since the epoch), event name, channel, detail (a held message's
# reason) and currency: how many events, and the sum of their revenue in 1/10,000 of the
# currency (exact for every currency's minor unit).
event_counts = Table(
    "event_counts",
    metadata,
    Column("hour", BigInteger, nullable=False),
    Column("name", Text, nullable=False),
    Column("channel", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("amount_e4", BigInteger, nullable=False),
    PrimaryKeyConstraint("hour", "name", "channel", "detail", "currency"),
)

# Where each reader of the log stopped (the `seq` of the last event it counted).
analytics_positions = Table(
    "analytics_positions",
    metadata,
    Column("name", Text, primary_key=True),
    Column("seq", BigInteger, nullable=False),
)
