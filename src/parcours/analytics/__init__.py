"""What Parcours measures: for now, counts of the log by hour (events by name, messages by
channel, held messages by reason, order revenue by currency), which the console's overview
reads; attribution and customer value come later (DESIGN.md, "analytics")."""

from parcours.analytics.counts import HOUR_MS, HourCount, catch_up, hourly, local_day

__all__ = ["HOUR_MS", "HourCount", "catch_up", "hourly", "local_day"]
