"""Several `parcours worker` processes on one PostgreSQL database, one of them killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text

from parcours.journeys import versions as journeys
from parcours.runtime.clock import SystemClock, iso
from parcours.runtime.db import Database
from parcours.runtime.settings import Settings
from parcours.services import Services
from parcours.tracking import parse_event
from tests.conftest import define_templates, truncate_all, wait_until

pytestmark = pytest.mark.processes
CUSTOMERS = 400
JOURNEY = """\
id: confirm
name: Confirmation
entry: {event: Order Completed, key: properties.order_id}
steps:
  - id: confirm
    send: {channel: email, template: order-confirmation, purpose: transactional}
  - wait: 2s
  - id: follow-up
    send: {channel: email, template: order-follow-up, purpose: transactional}
"""


def start_worker(url: str, data_dir: Path, **settings: str) -> subprocess.Popen[bytes]:
    """`parcours worker` in a process of its own; `settings` are more PARCOURS_ variables."""
    # A short lease: the messages the killed worker had claimed but not recorded are sent
    # again by the others after it (at the default five minutes, they would wait that long).
    env = {
        **os.environ,
        "PARCOURS_DATABASE_URL": url,
        "PARCOURS_LOG_LEVEL": "error",
        "PARCOURS_DELIVERY_LEASE_SECONDS": "3",
        **{f"PARCOURS_{name.upper()}": value for name, value in settings.items()},
    }
    command = [str(Path(sys.executable).parent / "parcours"), "worker", "--data-dir", str(data_dir)]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@contextmanager
def running_workers(
    url: str, data_dir: Path, number: int
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`number` worker processes, stopped with SIGTERM at the end, whatever happened (a
    worker still running 30 s later is killed, and fails the test)."""
    workers = [start_worker(url, data_dir) for _ in range(number)]
    try:
        yield workers
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        try:
            for worker in workers:
                worker.wait(30)
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()


def count_rows(db: Database, query: str) -> int:
    with db.read() as conn:
        return int(conn.execute(text(query)).scalar_one())


def states(db: Database) -> list[tuple[object, ...]]:
    """The outbox's steps and the queue's jobs, counted by state (a failure's explanation)."""
    with db.read() as conn:
        rows = conn.execute(
            text(
                "SELECT step_id, state, status, count(*) FROM outbox GROUP BY 1, 2, 3 "
                "UNION ALL SELECT kind, state, last_error, count(*) FROM jobs GROUP BY 1, 2, 3"
            )
        ).all()
    return [tuple(row) for row in rows]


def jobs_due(db: Database) -> int:
    with db.read() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM jobs WHERE state = 'available' AND run_at <= :now"),
                {"now": SystemClock().now_ms()},
            ).scalar_one()
        )


def sent_at_least(
    db: Database, expected: int, workers: list[subprocess.Popen[bytes]]
) -> Callable[[], bool]:
    """A condition for `wait_until`: `expected` messages were handed to their provider
    (each records `Message Sent` once; the sandbox's later feedback may fail a row that was
    sent, so the rows' state would never reach the count); fails the test at once if every
    worker has exited."""

    def all_sent() -> bool:
        handed = "SELECT count(*) FROM events WHERE name = 'Message Sent'"
        if count_rows(db, handed) >= expected:
            return True
        if all(worker.poll() is not None for worker in workers):
            errors = b"".join(w.stderr.read() for w in workers if w.stderr)
            pytest.fail(f"every worker exited:\n{errors.decode(errors='replace')[-3000:]}")
        return False

    return all_sent


def order_for_everyone(services: Services, customers: int) -> None:
    """`customers` people, each identified with an email address, then each placing an
    order (in groups of 50): the journey above enters them all."""
    now = services.clock.now_ms()
    contacts = [
        parse_event(
            f'{{"type": "identify", "userId": "w-{n}", "messageId": "wc-{n}", '
            f'"timestamp": "{iso(now - 1)}", '
            f'"traits": {{"email": "w-{n}@example.com"}}}}'.encode(),
            source="api",
            received_at=now,
        )
        for n in range(customers)
    ]
    services.writer.append_sync(contacts)
    events = [
        parse_event(
            f'{{"type": "track", "userId": "w-{n}", "event": "Order Completed", '
            f'"messageId": "wp-{n}", "timestamp": "{iso(now)}", '
            f'"properties": {{"order_id": "o-{n}"}}}}'.encode(),
            source="api",
            received_at=now,
        )
        for n in range(customers)
    ]
    for start in range(0, customers, 50):
        services.writer.append_sync(events[start : start + 50])


def test_worker_processes_share_the_work_and_survive_a_kill(
    postgres_url: str, tmp_path: Path
) -> None:
    truncate_all(postgres_url)
    settings = Settings(data_dir=tmp_path, database_url=postgres_url)
    services = Services.open(settings, clock=SystemClock())  # ingest only: no worker thread
    try:
        define_templates(services, JOURNEY)
        journeys.publish(services.db, JOURNEY, "ana", "ben", services.clock.now_ms())
        db = Database(postgres_url)
        with running_workers(postgres_url, tmp_path, 3) as workers:
            order_for_everyone(services, CUSTOMERS)
            # Mid-work: the workers have sent some messages, far from all.
            wait_until(sent_at_least(db, 10, workers), 120, what="the first sends")
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait()
            wait_until(
                sent_at_least(db, 2 * CUSTOMERS, workers[1:]),
                180,  # a bound for a busy machine: it goes on as soon as all are sent
                what=lambda: f"every send, with outbox and jobs at {states(db)}",
            )
        seen = states(db)
        with db.read() as conn:
            keys = conn.execute(text("SELECT idempotency_key FROM outbox")).scalars().all()
            sent = conn.execute(
                text("SELECT count(*) FROM events WHERE name = 'Message Sent'")
            ).scalar_one()
            left = conn.execute(
                text("SELECT count(*) FROM journey_runs WHERE state = 'active'")
            ).scalar_one()
        db.dispose()
    finally:
        services.close()
    assert len(keys) == len(set(keys)) == 2 * CUSTOMERS, seen  # every step once, none twice
    assert sent == 2 * CUSTOMERS  # every message handed to its provider and recorded once
    assert left == 0


SEGMENT = """\
id: regulars
name: Two orders or more
conditions:
  - events: {name: Order Completed, count: {gte: 2}}
"""
REGULARS_JOURNEY = """\
id: regulars-thanks
name: Thanks, regular
entry: {segment: regulars, on: enter}
steps:
  - id: thanks
    send: {channel: email, template: regulars-thanks, purpose: transactional}
"""


def test_worker_processes_record_each_segment_entry_once(postgres_url: str, tmp_path: Path) -> None:
    from parcours.segments import catalog as segments

    truncate_all(postgres_url)
    settings = Settings(data_dir=tmp_path, database_url=postgres_url)
    services = Services.open(settings, clock=SystemClock())  # ingest only: no worker thread
    count = 150
    try:
        segments.save(services.db, SEGMENT, "ana", services.clock.now_ms(), mode="create")
        define_templates(services, REGULARS_JOURNEY)
        journeys.publish(services.db, REGULARS_JOURNEY, "ana", "ben", services.clock.now_ms())
        now = services.clock.now_ms()

        def order(n: int, k: int) -> bytes:
            return (
                f'{{"type": "track", "userId": "r-{n}", "event": "Order Completed", '
                f'"messageId": "ro-{n}-{k}", "timestamp": "{iso(now)}", '
                f'"context": {{"traits": {{"email": "r-{n}@example.com"}}}}, '
                f'"properties": {{"order_id": "ro-{n}-{k}"}}}}'
            ).encode()

        db = Database(postgres_url)
        with running_workers(postgres_url, tmp_path, 3) as workers:
            # Each customer's orders in separate groups, so that their evaluations race.
            for k in range(3):
                for start in range(0, count, 25):
                    services.writer.append_sync(
                        [
                            parse_event(order(n, k), source="api", received_at=now)
                            for n in range(start, start + 25)
                        ]
                    )
            wait_until(sent_at_least(db, count, workers), 180, what="every send")
            # Anything still racing shows once no job is due: a job being run is still
            # seen (its claim, a delete, is not committed), the jobs its commit made due
            # are too.
            wait_until(lambda: jobs_due(db) == 0, 30, what="no job due")
        with db.read() as conn:
            memberships = conn.execute(
                text("SELECT count(*), count(DISTINCT customer_id) FROM segment_memberships")
            ).one()
            entered = conn.execute(
                text("SELECT count(*) FROM events WHERE name = 'Segment Entered'")
            ).scalar_one()
            sends = conn.execute(text("SELECT count(*) FROM outbox")).scalar_one()
            failed = conn.execute(
                text("SELECT kind, last_error FROM jobs WHERE state = 'failed'")
            ).all()
        db.dispose()
    finally:
        services.close()
    assert failed == []
    assert tuple(memberships) == (count, count)  # one stay per customer, none twice
    assert entered == count
    assert sends == count  # the journey entered once per customer
