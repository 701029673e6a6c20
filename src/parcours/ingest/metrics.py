"""What ingestion counts for Prometheus: events accepted and rejected, and how long an
event waits from its receipt to its commit (docs/operations.md)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from parcours.runtime.metrics import LATENCY_BUCKETS

ACCEPTED = Counter(
    "parcours_events_accepted_total",
    "Events acknowledged, by source, and result: stored, or a duplicate of one already stored",
    ["source", "result"],
)
REJECTED = Counter(
    "parcours_events_rejected_total",
    "Events refused, by source and reason (unauthorized, too_large, malformed, invalid, "
    "not_configured, unknown_shop); "
    "a request refused whole counts as one",
    ["source", "reason"],
)
LAG = Histogram(
    "parcours_ingest_lag_seconds",
    "From an event's receipt to the commit of its group (the oldest event of each group)",
    buckets=LATENCY_BUCKETS,
)
# A request refused whole, by its status; any other: its body could not be read as it should.
_REASON_OF_STATUS = {401: "unauthorized", 413: "too_large", 503: "not_configured"}


def accepted(source: str, stored: int, duplicates: int) -> None:
    if stored:
        ACCEPTED.labels(source, "stored").inc(stored)
    if duplicates:
        ACCEPTED.labels(source, "duplicate").inc(duplicates)


def rejected(source: str, reason: str, count: int = 1) -> None:
    if count:
        REJECTED.labels(source, reason).inc(count)


def refused_request(source: str, status: int, events: int = 1) -> None:
    """A request refused whole, by its HTTP status."""
    rejected(source, _REASON_OF_STATUS.get(status, "malformed"), max(1, events))


def committed(oldest_received_at: int, now: int) -> None:
    LAG.observe(max(0, now - oldest_received_at) / 1000)
