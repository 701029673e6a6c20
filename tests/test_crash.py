"""Durability: a server killed mid-stream loses no acknowledged batch, and a client's retry
of what was not acknowledged stores nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Row, func, select, text

from parcours.log import events
from parcours.runtime.db import Database
from tests.conftest import WRITE_KEY, free_port, wait_until, wait_until_serving

pytestmark = pytest.mark.processes
BATCHES = 300


def batch(number: int) -> dict[str, object]:
    return {
        "batch": [
            {
                "type": "track",
                "userId": f"user-{(number * 100 + n) % 997}",
                "event": "Product Viewed",
                "messageId": f"crash-{number}-{n}",
                "properties": {"product_id": f"p-{n}"},
            }
            for n in range(100)
        ]
    }


class Server:
    """`parcours serve` in a process of its own; `settings` are more PARCOURS_ variables."""

    def __init__(self, database_url: str, data_dir: Path, **settings: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PARCOURS_DATABASE_URL": database_url,
            "PARCOURS_WRITE_KEY": WRITE_KEY,
            "PARCOURS_ADMIN_KEY": "crash-admin",
            "PARCOURS_LOG_LEVEL": "warning",
            **{f"PARCOURS_{name.upper()}": value for name, value in settings.items()},
        }
        command = [
            str(Path(sys.executable).parent / "parcours"),
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(data_dir),
        ]
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until_serving(self.process, self.url, 30)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> int:
        """SIGTERM, and the exit status once it has stopped."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "data"


def stored_ids(database_url: str) -> list[str]:
    db = Database(database_url)
    try:
        with db.read() as conn:
            return list(conn.execute(select(events.c.message_id)).scalars())
    finally:
        db.dispose()


def test_killed_server_keeps_every_acknowledged_batch(database_url: str, data_dir: Path) -> None:
    server = Server(database_url, data_dir)
    acknowledged: set[int] = set()
    lock = threading.Lock()
    next_batch = iter(range(BATCHES))

    def sender() -> None:
        with httpx.Client(auth=(WRITE_KEY, ""), timeout=10) as client:
            for number in next_batch:
                try:
                    response = client.post(f"{server.url}/v1/batch", json=batch(number))
                except httpx.HTTPError:
                    return  # the server died under this request: not acknowledged
                if response.status_code == 200:
                    with lock:
                        acknowledged.add(number)

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(acknowledged) >= 30, 60, every=0.005, what="30 acknowledged batches")
    server.kill()  # mid-stream: other requests are in flight
    for thread in threads:
        thread.join(30)
    assert len(acknowledged) < BATCHES, "the stream finished before the kill"

    after_crash = set(stored_ids(database_url))
    for number in acknowledged:
        missing = {f"crash-{number}-{n}" for n in range(100)} - after_crash
        assert not missing, f"acknowledged batch {number} lost {len(missing)} events"

    # The client retries everything, acknowledged or not, against the restarted server,
    # from as many threads as it sent.
    server = Server(database_url, data_dir)
    retries = iter(range(BATCHES))
    answers: list[int] = []

    def retrier() -> None:
        with httpx.Client(auth=(WRITE_KEY, ""), timeout=30) as client:
            for number in retries:
                response = client.post(f"{server.url}/v1/batch", json=batch(number))
                answers.append(response.status_code)

    threads = [threading.Thread(target=retrier) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        server.stop()
    assert answers == [200] * BATCHES
    ids = stored_ids(database_url)
    assert len(ids) == len(set(ids)) == BATCHES * 100


def test_graceful_stop_commits_what_was_accepted(database_url: str, data_dir: Path) -> None:
    server = Server(database_url, data_dir)
    with httpx.Client(auth=(WRITE_KEY, ""), timeout=10) as client:
        for number in range(20):
            assert client.post(f"{server.url}/v1/batch", json=batch(number)).status_code == 200
    assert server.stop() == 0
    db = Database(database_url)
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar_one() == 2000
    db.dispose()


CONFIRMATION = """\
id: confirm
name: Confirmation
entry: {event: Order Completed}
steps:
  - id: confirm
    send: {channel: email, template: crash-confirm, purpose: transactional}
"""


def test_a_send_cut_by_a_kill_is_made_again_at_the_restart_not_after_the_lease(
    database_url: str, tmp_path: Path
) -> None:
    """A worker is killed while the SMTP server holds its message (the server has it, the
    worker never hears back). The lease is the default five minutes, yet the worker started
    next sees that the claim's worker is gone (its heartbeat's process is dead) and sends
    again at once, under the same Message-ID: the receiver gets the same message twice,
    the outbox records one send."""
    import json

    from parcours.journeys import versions as journeys
    from parcours.runtime.clock import SystemClock, iso
    from parcours.runtime.settings import Settings
    from parcours.services import Services
    from parcours.tracking import parse_event
    from tests.conftest import define_templates
    from tests.peers import RunningSmtp, SmtpPeer

    peer = SmtpPeer(dns={})
    peer.hold = threading.Event()
    with RunningSmtp(peer) as smtp:
        channels = {
            "email": {
                "provider": "smtp",
                "host": "127.0.0.1",
                "port": smtp.port,
                "security": "none",
                "from_address": "news@maison.example",
            }
        }
        data = tmp_path / "data"
        services = Services.open(
            Settings(data_dir=data, database_url=database_url, channels=channels),
            clock=SystemClock(),
        )  # ingest only: the sends are the worker processes'
        env = {
            **os.environ,
            "PARCOURS_DATABASE_URL": database_url,
            "PARCOURS_CHANNELS": json.dumps(channels),
            "PARCOURS_LOG_LEVEL": "error",
        }
        command = [str(Path(sys.executable).parent / "parcours"), "worker", "--data-dir", str(data)]

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )

        try:
            define_templates(services, CONFIRMATION)
            now = services.clock.now_ms()
            journeys.publish(services.db, CONFIRMATION, "ana", "ben", now)
            services.writer.append_sync(
                [
                    parse_event(
                        json.dumps(
                            {
                                "type": "track",
                                "userId": "ana",
                                "event": "Order Completed",
                                "timestamp": iso(now),
                                "context": {"traits": {"email": "ana@example.com"}},
                            }
                        ).encode(),
                        source="api",
                        received_at=now,
                    )
                ]
            )
            first = start()
            try:
                assert peer.data_started.wait(60), "the first worker never reached DATA"
            finally:  # killed there, or not left running if it never got there
                first.send_signal(signal.SIGKILL)
                first.wait()
            peer.hold.set()  # the server keeps the message of the dead worker
            peer.hold = None
            second = start()
            db = Database(database_url)

            def sent_message() -> Row[Any] | None:
                with db.read() as conn:
                    row = conn.execute(
                        text("SELECT state, attempt, idempotency_key FROM outbox")
                    ).one()
                return row if row.state == "sent" else None

            try:
                # A minute at most, where the lease would have made it five.
                row = wait_until(sent_message, 60, what="the message to be sent again")
                with db.read() as conn:
                    sent = conn.execute(
                        text("SELECT count(*) FROM events WHERE name = 'Message Sent'")
                    ).scalar_one()
            finally:
                db.dispose()
                second.send_signal(signal.SIGTERM)
                second.wait(30)
        finally:
            services.close()
    assert (row.state, row.attempt, sent) == ("sent", 2, 1)
    assert len(peer.received) == 2
    assert len({r.message["Message-ID"] for r in peer.received}) == 1  # the same message
