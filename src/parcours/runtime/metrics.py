"""Prometheus metrics: the exposition of what this process (or every process of one
`parcours serve`) counted, plus figures read from the database when scraped: queue depth,
the oldest due job, worker heartbeats (docs/operations.md)."""

from __future__ import annotations

import hmac
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, func, literal, select

from parcours.runtime.clock import Clock
from parcours.runtime.db import Database
from parcours.runtime.heartbeats import WorkerCounts, beat_clock, worker_counts
from parcours.runtime.queue import jobs

# Latency buckets, in seconds, for requests and ingestion alike.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def metrics_allowed(token: str, authorization: str) -> bool:
    """The scraper showed `Authorization: Bearer <metrics_token>`; never when no token is set."""
    scheme, _, given = authorization.partition(" ")
    if not token or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


@dataclass(frozen=True)
class QueueFigures:
    queue: str
    due: int  # jobs to run now
    failed: int  # jobs failed for good
    oldest_due_seconds: float  # how long the oldest due job has waited (0: none due)
    # Counted up to a cap they reached (`queue_health`'s `count_up_to`): at least so many.
    due_at_least: bool = False
    failed_at_least: bool = False


@dataclass(frozen=True)
class QueueHealth:
    """How the background work stands, the same whichever process asks: per queue, and
    the workers whose heartbeat is fresh or stale (/metrics, the console's overview)."""

    queues: list[QueueFigures]
    workers: WorkerCounts


def queue_health(
    conn: Connection,
    queues: Iterable[str],
    clock: Clock,
    stale_ms: int,
    *,
    count_up_to: int | None = None,
) -> QueueHealth:
    """`count_up_to`: the due and failed jobs are counted up to this many (a page asks
    this: a backlog of a million jobs took 300 ms to count on PostgreSQL, measured), the
    figure then saying "at least" (`due_at_least`, `failed_at_least`)."""
    now = clock.now_ms()  # the jobs'; the heartbeats have a clock of their own
    figures: list[QueueFigures] = []

    def count(*where: Any) -> int:
        found = select(literal(1)).select_from(jobs).where(*where)
        if count_up_to is not None:
            found = found.limit(count_up_to)
        return int(conn.execute(select(func.count()).select_from(found.subquery())).scalar_one())

    for queue in queues:
        # Index lookups on (state, queue, run_at, id): the first due time, then the range
        # of due jobs only. Jobs scheduled for later are not counted: a million waiting
        # timers took 0.7 s to count at each scrape (measured).
        available = (jobs.c.state == "available") & (jobs.c.queue == queue)
        first = conn.execute(select(func.min(jobs.c.run_at)).where(available)).scalar()
        due, late = 0, 0.0
        if first is not None and first <= now:
            due = count(available, jobs.c.run_at <= now)
            late = (now - first) / 1000 if due else 0.0
        failed = count(jobs.c.state == "failed", jobs.c.queue == queue)
        figures.append(
            QueueFigures(queue, due, failed, late, due == count_up_to, failed == count_up_to)
        )
    return QueueHealth(figures, worker_counts(conn, beat_clock(clock).now_ms(), stale_ms))


class DatabaseFigures(Collector):
    """Read when scraped, the same whichever process answers: per queue, jobs due now and
    failed, and how late the oldest due job is; workers whose heartbeat is fresh or stale."""

    def __init__(self, db: Database, clock: Clock, queues: Iterable[str], stale_ms: int) -> None:
        self.db = db
        self.clock = clock
        self.queues = tuple(queues)
        self.stale_ms = stale_ms

    def collect(self) -> Iterator[Metric]:
        queued = GaugeMetricFamily(
            "parcours_queue_jobs",
            "Jobs in the queue: due (to run now), failed (for good)",
            labels=["queue", "state"],
        )
        oldest = GaugeMetricFamily(
            "parcours_queue_oldest_due_seconds",
            "How long the oldest due job of the queue has been due (0: none due)",
            labels=["queue"],
        )
        workers = GaugeMetricFamily(
            "parcours_workers",
            "Worker loops whose heartbeat is fresh (within worker_stale_seconds) or stale",
            labels=["state"],
        )
        with self.db.read() as conn:
            health = queue_health(conn, self.queues, self.clock, self.stale_ms)
        for figures in health.queues:
            queued.add_metric([figures.queue, "due"], figures.due)
            queued.add_metric([figures.queue, "failed"], figures.failed)
            oldest.add_metric([figures.queue], figures.oldest_due_seconds)
        workers.add_metric(["fresh"], health.workers.fresh)
        workers.add_metric(["stale"], health.workers.stale)
        yield from (queued, oldest, workers)


class _ThisProcess(Collector):
    """Everything this process counted (the default registry), for a registry of our own."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


class Exposition:
    """The text Prometheus scrapes: this process's counters (each `parcours serve` and
    each `parcours worker` is one target), and the database's figures when given."""

    def __init__(self, figures: Collector | None = None) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_ThisProcess())
        if figures is not None:
            self.registry.register(figures)

    content_type = CONTENT_TYPE_LATEST

    def render(self) -> bytes:
        return generate_latest(self.registry)


def serve_metrics(host: str, port: int, token: str, exposition: Exposition) -> ThreadingHTTPServer:
    """`GET /metrics` on a port of its own, in a background thread (`parcours worker`,
    which has no HTTP server otherwise); the same bearer token as the main server's."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.partition("?")[0] != "/metrics":
                return self._answer(404, b"not found: the metrics are at /metrics\n")
            if not metrics_allowed(token, self.headers.get("Authorization", "")):
                return self._answer(401, _REFUSED.encode())
            self._answer(200, exposition.render(), exposition.content_type)

        def _answer(self, status: int, body: bytes, kind: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            return None

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="parcours-metrics", daemon=True).start()
    return server


_REFUSED = (
    "metrics need Authorization: Bearer <metrics_token> (setting metrics_token; "
    "no metrics are served while it is empty)\n"
)
REFUSED = _REFUSED.strip()

__all__ = [
    "LATENCY_BUCKETS",
    "REFUSED",
    "DatabaseFigures",
    "Exposition",
    "metrics_allowed",
    "serve_metrics",
]
