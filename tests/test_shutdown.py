"""Real processes stopped with SIGTERM: `parcours serve` commits every event it accepted,
`parcours worker` loses no job, both exit 0 in bounded time."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from parcours.journeys import versions as journeys
from parcours.runtime.clock import SystemClock
from parcours.runtime.db import Database
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.conftest import WRITE_KEY, define_templates, free_port, wait_until
from tests.test_crash import Server, batch, stored_ids
from tests.test_worker_processes import JOURNEY, order_for_everyone, start_worker

pytestmark = pytest.mark.processes
SHUTDOWN_SECONDS = 10
# Requests in flight get the shutdown time, then the worker's batch gets it again.
BOUND = 2 * SHUTDOWN_SECONDS + 5
TOKEN = "shutdown-metrics-token"
# Every message taken, no feedback that fails one: the counts below are exact.
CERTAIN = json.dumps({"sandbox": {"fail_rate": 0.0, "delivered_rate": 1.0, "open_rate": 0.0}})


def test_sigterm_commits_every_event_accepted_before_it(database_url: str, tmp_path: Path) -> None:
    server = Server(database_url, tmp_path / "data", shutdown_timeout_seconds=str(SHUTDOWN_SECONDS))
    acknowledged: set[int] = set()
    refused_after_stop = threading.Event()
    lock = threading.Lock()
    next_batch = iter(range(10_000))

    def sender() -> None:
        with httpx.Client(auth=(WRITE_KEY, ""), timeout=30) as client:
            for number in next_batch:
                try:
                    response = client.post(f"{server.url}/v1/batch", json=batch(number))
                except httpx.HTTPError:
                    refused_after_stop.set()  # the server no longer takes connections
                    return
                if response.status_code == 200:
                    with lock:
                        acknowledged.add(number)

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(acknowledged) >= 20, 60, every=0.005, what="20 acknowledged batches")
    stopped_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)  # mid-stream: requests are in flight
    status = server.process.wait(BOUND)
    took = time.monotonic() - stopped_at
    for thread in threads:
        thread.join(30)
    assert status == 0
    assert took < BOUND
    assert refused_after_stop.is_set()
    stored = set(stored_ids(database_url))
    for number in acknowledged:
        missing = {f"crash-{number}-{n}" for n in range(100)} - stored
        assert not missing, f"acknowledged batch {number} lost {len(missing)} events"


CUSTOMERS = 300
LEASE_SECONDS = "120"


def test_sigterm_during_work_loses_no_job(database_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=database_url)
    services = Services.open(settings, clock=SystemClock())  # ingest only: no worker thread
    db = Database(database_url)
    try:
        define_templates(services, JOURNEY)
        journeys.publish(services.db, JOURNEY, "ana", "ben", services.clock.now_ms())
        # A lease longer than any batch: this worker stops gracefully, leaving nothing
        # claimed, so no lease has to run out; the 3 s lease of start_worker (made for the
        # kill -9 tests) ran out under a loaded machine while a batch was still sending,
        # and the message was sent again, with the same idempotency key, as designed.
        worker = start_worker(
            database_url,
            tmp_path,
            shutdown_timeout_seconds=str(SHUTDOWN_SECONDS),
            channels=CERTAIN,
            delivery_lease_seconds=LEASE_SECONDS,
        )
        order_for_everyone(services, CUSTOMERS)
        _wait_until(db, "SELECT count(*) FROM outbox WHERE state = 'sent'", at_least=30)
        stopped_at = time.monotonic()
        worker.send_signal(signal.SIGTERM)  # in the middle of its work
        status = worker.wait(BOUND)
        took = time.monotonic() - stopped_at
        errors = worker.stderr.read().decode(errors="replace") if worker.stderr else ""
        assert status == 0, errors[-3000:]
        assert took < BOUND
        with db.read() as conn:
            # The batch it was running ended: its sends were made and recorded; nothing
            # is left claimed, waiting for a lease to run out.
            sending = conn.execute(
                text("SELECT count(*) FROM outbox WHERE state = 'sending'")
            ).scalar_one()
            sent = conn.execute(
                text("SELECT count(*) FROM outbox WHERE state = 'sent'")
            ).scalar_one()
            beats = conn.execute(text("SELECT count(*) FROM worker_heartbeats")).scalar_one()
        assert sending == 0
        assert sent < 2 * CUSTOMERS, "the work was over before the stop"
        assert beats == 0  # a stopped worker removes its heartbeat

        port = free_port()
        again = start_worker(
            database_url,
            tmp_path,
            metrics_port=str(port),
            metrics_token=TOKEN,
            channels=CERTAIN,
            delivery_lease_seconds=LEASE_SECONDS,
        )
        try:
            _wait_until(
                db, "SELECT count(*) FROM outbox WHERE state = 'sent'", at_least=2 * CUSTOMERS
            )
            scraped = httpx.get(
                f"http://127.0.0.1:{port}/metrics",
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=10,
            )
        finally:
            again.send_signal(signal.SIGTERM)
            assert again.wait(BOUND) == 0
        with db.read() as conn:
            keys = conn.execute(text("SELECT idempotency_key FROM outbox")).scalars().all()
            recorded = conn.execute(
                text("SELECT count(*) FROM events WHERE name = 'Message Sent'")
            ).scalar_one()
            left = conn.execute(
                text("SELECT count(*) FROM journey_runs WHERE state = 'active'")
            ).scalar_one()
            failed = conn.execute(
                text("SELECT count(*) FROM jobs WHERE state = 'failed'")
            ).scalar_one()
    finally:
        db.dispose()
        services.close()
    assert len(keys) == len(set(keys)) == 2 * CUSTOMERS  # every step once, none twice
    assert recorded == 2 * CUSTOMERS
    assert left == 0 and failed == 0
    # The second worker's own counters, on its own port (the database's figures are
    # served by `parcours serve`).
    assert scraped.status_code == 200
    samples = _samples(scraped.text)
    # Its sends, not its steps: waits count from the orders' own times, so the first worker
    # may have run every step before it stopped, leaving only deliveries to the second.
    sent_by_it = samples[
        ("parcours_messages_sent_total", (("channel", "email"), ("provider", "sandbox")))
    ]
    assert 0 < sent_by_it <= 2 * CUSTOMERS - sent
    assert not any(name == "parcours_queue_jobs" for name, _ in samples)


def _samples(exposition: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def _wait_until(db: Database, query: str, *, at_least: int, seconds: float = 120) -> None:
    def reached() -> bool:
        with db.read() as conn:
            return int(conn.execute(text(query)).scalar_one()) >= at_least

    wait_until(reached, seconds, what=f"{query} >= {at_least}")
