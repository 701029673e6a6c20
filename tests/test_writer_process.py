"""The writer in a process of its own (what `parcours serve` runs): answers come once the
events are committed, a bad submission fails alone, a writer that dies is replaced."""

from __future__ import annotations

import os
import random
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select, text

from parcours.customers.tables import customers
from parcours.ingest.writer import WriterClosed
from parcours.ingest.writer_process import _BUFFER, RemoteWriter, _Frames, available
from parcours.log import Event
from parcours.log import events as events_table
from parcours.loyalty.referrals import JOB as REFERRAL_JOB
from parcours.runtime.clock import SystemClock
from parcours.runtime.db import Database, migrate
from parcours.runtime.queue import enqueue
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.conftest import make_event

pytestmark = pytest.mark.skipif(not available(), reason="the writer process needs POSIX")


@pytest.fixture
def remote(settings: Settings) -> Iterator[RemoteWriter]:
    db = Database(settings.resolved_database_url)
    migrate(db)
    db.dispose()
    writer = RemoteWriter(settings)
    writer.start()
    yield writer
    writer.close()


def count(settings: Settings, table: object = events_table) -> int:
    db = Database(settings.resolved_database_url)
    try:
        with db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]
    finally:
        db.dispose()


def shopper_events(prefix: str, number: int) -> list[Event]:
    return [
        make_event(
            "track",
            anonymousId=f"{prefix}-anon-{n // 4}",
            event="Product Viewed",
            messageId=f"{prefix}-{n}",
            properties={"product_id": f"p-{n}", "price": 12.5},
        )
        for n in range(number)
    ]


def test_an_answer_means_the_events_are_committed_and_projected(
    remote: RemoteWriter, settings: Settings
) -> None:
    result = remote.append_sync(shopper_events("a", 40))
    assert (result.stored, result.duplicates) == (40, 0)
    assert count(settings) == 40
    assert count(settings, customers) == 10  # four events per shopper

    again = remote.append_sync(shopper_events("a", 40))
    assert (again.stored, again.duplicates) == (0, 40)
    assert count(settings) == 40


def test_concurrent_submissions_are_each_answered(remote: RemoteWriter, settings: Settings) -> None:
    futures = [remote.submit(shopper_events(f"c{n}", 25)) for n in range(12)]
    results = [future.result(60) for future in futures]
    assert [r.stored for r in results] == [25] * 12
    assert count(settings) == 300


def test_a_bad_submission_fails_alone(remote: RemoteWriter, settings: Settings) -> None:
    good = shopper_events("good", 10)
    bad = make_event("track", userId="u-bad", event="Product Viewed", messageId="bad-1")
    # Not something the API lets through: a consent event whose properties are wrong.
    bad.name = "Consent Updated"
    bad.properties = {"channel": "carrier-pigeon"}
    futures = [remote.submit(good[:5]), remote.submit([bad]), remote.submit(good[5:])]
    assert futures[0].result(60).stored == 5
    with pytest.raises(RuntimeError, match="channel"):
        futures[1].result(60)
    assert futures[2].result(60).stored == 5
    assert count(settings) == 10


def test_an_integer_beyond_64_bits_is_carried_whole(
    remote: RemoteWriter, settings: Settings
) -> None:
    event = make_event(
        "track", userId="u-big", event="Product Viewed", properties={"n": 2**70}, messageId="big"
    )
    assert remote.append_sync([event]).stored == 1
    db = Database(settings.resolved_database_url)
    with db.read() as conn:
        payload = conn.execute(
            select(events_table.c.payload).where(events_table.c.message_id == "big")
        ).scalar_one()
    db.dispose()
    assert str(2**70) in payload


def test_a_writer_process_that_dies_is_replaced(remote: RemoteWriter, settings: Settings) -> None:
    assert remote.append_sync(shopper_events("before", 4)).stored == 4
    process = remote._process
    assert process is not None
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    deadline = time.monotonic() + 120
    while True:  # in flight while it died: refused, to be retried by the client
        try:
            result = remote.append_sync(shopper_events("after", 4))
            break
        except WriterClosed:
            assert time.monotonic() < deadline, "no new writer process"
            time.sleep(0.2)
    assert result.stored == 4
    assert remote._process is not process
    assert count(settings) == 8


def test_closing_commits_what_was_submitted_and_stops_the_child(
    settings: Settings,
) -> None:
    db = Database(settings.resolved_database_url)
    migrate(db)
    db.dispose()
    writer = RemoteWriter(settings)
    writer.start()
    futures = [writer.submit(shopper_events(f"z{n}", 20)) for n in range(10)]
    writer.close()
    assert [f.result(0).stored for f in futures] == [20] * 10
    assert writer._process is not None and writer._process.poll() is not None
    assert count(settings) == 200
    with pytest.raises(WriterClosed):
        writer.append_sync(shopper_events("late", 1))


def _wait_for(settings: Settings, sql: str, expected: int, seconds: float = 15) -> int:
    """Poll `sql` (a count) until it gives `expected` or `seconds` pass; the last count."""
    db = Database(settings.resolved_database_url)
    deadline = time.monotonic() + seconds
    try:
        while True:
            with db.read() as conn:
                found = int(conn.execute(text(sql)).scalar_one())
            if found == expected or time.monotonic() > deadline:
                return found
            time.sleep(0.05)
    finally:
        db.dispose()


def test_the_writer_process_runs_the_worker_woken_by_its_own_commits(
    settings: Settings, services: Services
) -> None:
    from tests.test_journeys_engine import CART, publish

    publish(services, CART)  # a live journey: checkouts start runs
    services.worker.run_due()  # what publishing left to do
    # The worker's poll is a minute: only the commit's wake-up can start the run in time.
    patient = settings.with_overrides(worker_poll_seconds=60)
    writer = RemoteWriter(patient, run_worker=True)
    writer.start()
    try:
        now = SystemClock().now_ms()
        checkout = make_event(
            "track",
            at=now,
            received_at=now,
            userId="u-cart",
            event="Checkout Started",
            properties={"checkout_id": "co-1", "total": 80},
        )
        assert writer.append_sync([checkout]).stored == 1
        assert _wait_for(settings, "SELECT count(*) FROM journey_runs", 1) == 1
    finally:
        writer.close()


def test_a_job_the_http_process_schedules_wakes_the_writer_process_worker(
    settings: Settings,
) -> None:
    patient = settings.with_overrides(worker_poll_seconds=60)
    services = Services.open(patient, writer_process=True)
    try:
        assert services.worker_in_writer
        services.start_worker()  # the writer process runs it: nothing starts here
        deadline = time.monotonic() + 30
        while not (readiness := services.readiness()).ready:
            assert time.monotonic() < deadline, readiness.report
            time.sleep(0.1)
        assert readiness.report["worker"].startswith("in the writer process")
        now = services.clock.now_ms()
        with services.db.write() as conn:  # as an admin call scheduling work would
            enqueue(conn, REFERRAL_JOB, {"orders": []}, run_at=now, now=now)
        # Claimed and done by the child's worker long before its next poll.
        assert _wait_for(settings, "SELECT count(*) FROM jobs", 0) == 0
    finally:
        services.close()


def test_frames_come_out_whole_and_in_order_however_the_socket_splits_them() -> None:
    """The child's reader: frames cut across reads at every size, one larger than its
    buffer, and the end of input after the last."""
    rng = random.Random(3)
    bodies = [bytes([n % 251]) * rng.choice((1, 7, 300, 70_000)) for n in range(300)]
    bodies.insert(150, b"y" * (_BUFFER + 123_457))
    stream = b"".join(struct.pack("!I", len(body)) + body for body in bodies)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    def send() -> None:
        position = 0
        while position < len(stream):
            size = rng.choice((1, 3, 1000, 65_536, 1_000_000))
            theirs.sendall(stream[position : position + size])
            position += size
        theirs.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send)
    sender.start()
    frames = _Frames(ours)
    received: list[bytes] = []
    while (frame := frames.next(block=rng.random() < 0.5)) is not None or not frames._ended:
        if frame is not None:
            received.append(frame)
    sender.join()
    ours.close()
    theirs.close()
    assert received == bodies
