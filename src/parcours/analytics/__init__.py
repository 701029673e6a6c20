"""What Parcours measures: for now, counts of the log by hour (events by name, messages by
channel, held messages by reason, order revenue by currency), which the console's overview
reads; attribution and customer value come later (DESIGN.md, "analytics")."""

from parcours.analytics.counts import (
    BACKFILL,
    HOUR_MS,
    PAGE_LIMIT,
    HourCount,
    KeepUp,
    catch_up,
    hourly,
    local_day,
    segment_changes,
)

__all__ = [
    "BACKFILL",
    "HOUR_MS",
    "PAGE_LIMIT",
    "HourCount",
    "KeepUp",
    "catch_up",
    "hourly",
    "local_day",
    "segment_changes",
]
