"""Webhook steps: a signed POST to a real HTTP server on loopback, retried until it works."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import text

from parcours.runtime.clock import SimulatedClock
from parcours.services import Services
from tests.test_journeys_engine import opt_in, publish, track

SECRET = "whsec-test"


class Receiver:
    """A brand's endpoint: fails the first `failures` calls, then accepts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append((dict(self.headers), body))
                status = 500 if len(receiver.calls) <= receiver.failures else 204
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(failures=1)
    yield server
    server.server.shutdown()


def test_a_webhook_step_posts_a_signed_body_and_retries(
    services: Services,
    clock: SimulatedClock,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    publish(
        services,
        f"""\
id: notify-crm
name: Notify the CRM
entry: {{event: Order Completed}}
steps:
  - webhook: {{url: "{receiver.url}", secret_env: HOOK_SECRET, body: {{source: parcours}}}}
""",
    )
    opt_in(services, "ola")
    track(services, "ola", "Order Completed", order_id="o-1")
    services.worker.run_due()
    assert len(receiver.calls) == 1  # answered 500: to be retried
    clock.advance_ms(5_000)
    services.worker.run_due()
    assert len(receiver.calls) == 2
    (first_headers, _), (headers, body) = receiver.calls
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Parcours-Signature"] == expected
    assert headers["X-Parcours-Delivery"] == first_headers["X-Parcours-Delivery"]
    document = json.loads(body)
    assert document["journey_id"] == "notify-crm" and document["source"] == "parcours"
    with services.db.read() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 0


def test_a_webhook_is_given_up_after_its_retries(services: Services, clock: SimulatedClock) -> None:
    receiver = Receiver(failures=100)
    try:
        publish(
            services,
            f"""\
id: notify-crm
name: Notify the CRM
entry: {{event: Order Completed}}
steps:
  - webhook: {{url: "{receiver.url}", retries: 2}}
""",
        )
        opt_in(services, "ola")
        track(services, "ola", "Order Completed", order_id="o-1")
        for _ in range(10):
            clock.advance_ms(60_000)
            services.worker.run_due()
        assert len(receiver.calls) == 3  # the first call and two retries
        with services.db.read() as conn:
            assert conn.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 0
    finally:
        receiver.server.shutdown()
