"""What an operator sees: Prometheus metrics at /metrics, JSON log lines with a request or
job id and no secret, and /readyz naming the check that failed."""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from parcours.app import create_app
from parcours.messaging import templates
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.db import alembic_config, head_revision
from parcours.runtime.heartbeats import Heartbeat
from parcours.runtime.logs import configure_logging, remove_logging
from parcours.runtime.metrics import queue_health
from parcours.runtime.queue import Job, enqueue
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.conftest import WRITE_KEY, admin_headers, make_event, wait_until
from tests.peers import TwilioPeer
from tests.test_channels import CERTAIN, journey, outbox, publish
from tests.test_journeys_engine import advance, opt_in, track
from tests.test_sms import twilio as twilio_fixture
from tests.test_sms import wired as wired_fixture

TOKEN = "scrape-token-0123456789"
# Parcours with Twilio as its SMS provider, against the loopback peer (tests/test_sms.py).
twilio = twilio_fixture
wired = wired_fixture
BASIC = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient[Any]) -> Samples:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return _parse(response.text)


def exposed(services: Services) -> Samples:
    """What /metrics would show, read without a request."""
    return _parse(services.metrics().render().decode())


def _parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture
def ops(settings: Settings, clock: SimulatedClock) -> Iterator[tuple[Services, TestClient[Any]]]:
    services = Services.open(
        settings.with_overrides(metrics_token=TOKEN, channels={"sandbox": CERTAIN}), clock=clock
    )
    try:
        with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
            yield services, client
    finally:
        services.close()


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every log line, as the JSON a production process writes, at debug level."""
    stream = io.StringIO()
    handler = configure_logging("debug", "json", [], stream)
    yield stream
    remove_logging(handler)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


# ---- metrics --------------------------------------------------------------------------


def test_metrics_need_the_metrics_token(
    ops: tuple[Services, TestClient[Any]], client: TestClient[Any]
) -> None:
    _, with_token = ops
    assert with_token.get("/metrics").status_code == 401
    wrong = with_token.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "metrics_token" in wrong.text
    admin = with_token.get("/metrics", headers=admin_headers())
    assert admin.status_code == 401  # the admin key is not a scraper's
    assert (
        "parcours_events_accepted_total"
        in with_token.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    )
    # No token configured: no metrics for anyone.
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401


def test_events_accepted_and_rejected_are_counted_by_reason(
    ops: tuple[Services, TestClient[Any]],
) -> None:
    _, client = ops
    before = scrape(client)
    good = [
        {"type": "track", "userId": f"u{n}", "event": "E", "messageId": f"m{n}"} for n in (1, 2)
    ]
    bad = {"type": "track", "userId": "u3", "messageId": "m3"}  # no event name
    huge = {"type": "track", "userId": "u4", "event": "E", "properties": {"x": "y" * 40_000}}
    body = {"batch": [*good, bad, huge]}
    headers = BASIC
    assert client.post("/v1/batch", json=body, headers=headers).json()["stored"] == 2
    assert client.post("/v1/batch", json={"batch": good}, headers=headers).status_code == 200
    assert client.post("/v1/track", content=b"{not json", headers=headers).status_code == 400
    refused = client.post("/v1/batch", json={"batch": good})  # no write key
    assert refused.status_code == 401
    after = scrape(client)
    accepted = "parcours_events_accepted_total"
    assert grew(before, after, accepted, source="api", result="stored") == 2
    assert grew(before, after, accepted, source="api", result="duplicate") == 2
    rejected = "parcours_events_rejected_total"
    assert grew(before, after, rejected, source="api", reason="invalid") == 1
    assert grew(before, after, rejected, source="api", reason="too_large") == 1
    assert grew(before, after, rejected, source="api", reason="malformed") == 1
    assert grew(before, after, rejected, source="api", reason="unauthorized") == 2
    # Each committed group is one observation of the time from receipt to commit.
    assert grew(before, after, "parcours_ingest_lag_seconds_count") == 2


def test_queue_depth_and_the_oldest_due_job_are_read_from_the_database(
    ops: tuple[Services, TestClient[Any]], clock: SimulatedClock
) -> None:
    services, client = ops
    now = clock.now_ms()
    with services.db.write() as conn:
        for late_ms in (90_000, 5_000):
            enqueue(conn, "test.nothing", {}, run_at=now - late_ms, now=now, queue="default")
        enqueue(conn, "test.nothing", {}, run_at=now + 3_600_000, now=now, queue="default")
    samples = scrape(client)
    assert value(samples, "parcours_queue_jobs", queue="default", state="due") == 2
    assert value(samples, "parcours_queue_jobs", queue="default", state="failed") == 0
    assert value(samples, "parcours_queue_oldest_due_seconds", queue="default") == 90.0
    assert value(samples, "parcours_queue_oldest_due_seconds", queue="journeys") == 0.0
    clock.advance_ms(10_000)
    assert value(scrape(client), "parcours_queue_oldest_due_seconds", queue="default") == 100.0
    # A page counts up to a cap ("at least"); /metrics counts them all.
    with services.db.write() as conn:
        for n in range(3):
            enqueue(conn, "test.nothing", {"n": n}, run_at=now, now=now, queue="default")
        capped = queue_health(conn, ["default"], clock, 60_000, count_up_to=4)
        exact = queue_health(conn, ["default"], clock, 60_000, count_up_to=6)
    [figures] = capped.queues
    assert (figures.due, figures.due_at_least, figures.oldest_due_seconds) == (4, True, 100.0)
    assert (exact.queues[0].due, exact.queues[0].due_at_least) == (5, False)
    assert value(scrape(client), "parcours_queue_jobs", queue="default", state="due") == 5


def test_steps_sends_and_holds_are_counted(
    ops: tuple[Services, TestClient[Any]], clock: SimulatedClock
) -> None:
    services, client = ops
    publish(services, journey("{channel: email, template: t}"))
    before = scrape(client)
    opt_in(services, "ana")
    track(services, "ana", "Go")  # consent given: sent
    services.writer.append_sync(
        [_identify("bob", {"email": "bob@example.com"}, clock.now_ms() - 1)]
    )
    track(services, "bob", "Go")  # no marketing consent: held
    after = scrape(client)
    steps = grew(before, after, "parcours_journey_steps_total", journey="j")
    assert steps == 2  # one send step for each
    sent = "parcours_messages_sent_total"
    assert grew(before, after, sent, channel="email", provider="sandbox") == 1
    held = "parcours_messages_held_total"
    assert grew(before, after, held, channel="email", reason="consent") == 1


def test_the_journey_simulator_counts_for_nothing(
    ops: tuple[Services, TestClient[Any]],
) -> None:
    _, client = ops
    source = journey("{channel: email, template: order-confirmation}")
    before = scrape(client)
    answer = client.post(
        "/api/journeys/simulate",
        json={"journey": source, "script": [{"event": "Go"}]},
        headers=admin_headers(),
    )
    assert answer.status_code == 200, answer.text
    timeline = [entry["what"] for entry in answer.json()["timeline"]]
    assert timeline[1] == "held back order-confirmation: no email address (or it bounced)"
    after = scrape(client)  # the step ran, was held, its events were stored: none counted
    assert grew(before, after, "parcours_journey_steps_total", journey="j") == 0
    held = "parcours_messages_held_total"
    assert grew(before, after, held, channel="email", reason="unreachable") == 0
    accepted = "parcours_events_accepted_total"
    assert grew(before, after, accepted, source="simulator", result="stored") == 0


def test_request_latency_is_measured_by_route(ops: tuple[Services, TestClient[Any]]) -> None:
    _, client = ops
    before = scrape(client)
    for ref in ("someone@example.com", "cus_999"):
        assert client.get(f"/api/customers/{ref}", headers=admin_headers()).status_code == 404
    after = scrape(client)
    route = {"route": "/api/customers/{ref}", "method": "GET"}
    assert grew(before, after, "parcours_http_request_duration_seconds_count", **route) == 2
    assert grew(before, after, "parcours_http_requests_total", **route, status="404") == 2
    # The route's template, never the path: no email address in a label.
    assert not any("someone@example.com" in str(key) for key in after)


def test_provider_errors_are_counted_by_provider(
    wired: tuple[Services, str], twilio: TwilioPeer
) -> None:
    services, _ = wired
    publish(services, journey("{channel: sms, template: t}"))
    opt_in(services, "ana")
    twilio.errors[_phone("ana")] = (503, 20503, "Service unavailable")
    before = exposed(services)
    track(services, "ana", "Go")
    del twilio.errors[_phone("ana")]
    advance(services, services.clock, 10_000, step=1000)  # type: ignore[arg-type]
    after = exposed(services)
    errors = "parcours_provider_errors_total"
    assert grew(before, after, errors, provider="twilio", kind="transient") == 1
    sent = "parcours_messages_sent_total"
    assert grew(before, after, sent, channel="sms", provider="twilio") == 1


# ---- logs -----------------------------------------------------------------------------


def test_a_request_log_line_carries_its_request_id(
    ops: tuple[Services, TestClient[Any]], captured: io.StringIO
) -> None:
    _, client = ops
    given = client.get("/api/customers/cus_1", headers={**admin_headers(), "X-Request-Id": "rq-42"})
    assert given.headers["x-request-id"] == "rq-42"
    made = client.get("/healthz")
    made_id = made.headers["x-request-id"]
    assert len(made_id) == 32
    forged = client.get("/healthz", headers={"X-Request-Id": 'x" injected\nline'})
    assert forged.headers["x-request-id"] != 'x" injected\nline'
    by_id = {
        line.get("request_id"): line
        for line in lines(captured)
        if line["logger"] == "parcours.http"
    }
    line = by_id["rq-42"]
    assert line["level"] == "info" and line["time"].endswith("Z")
    assert line["route"] == "/api/customers/{ref}" and line["status"] == 404
    assert line["message"].startswith("GET /api/customers/{ref} 404")
    assert by_id[made_id]["route"] == "/healthz"


def test_a_job_log_line_carries_the_job(
    services: Services, captured: io.StringIO, clock: SimulatedClock
) -> None:
    def fails(_conn: Any, job: Job) -> None:
        raise RuntimeError(f"cannot do job {job.id}")

    services.worker.register("test.fails", fails)
    with services.db.write() as conn:
        enqueue(conn, "test.fails", {}, run_at=clock.now_ms(), now=clock.now_ms())
    services.worker.run_due()
    [line] = [line for line in lines(captured) if line["logger"] == "parcours.runtime.queue"]
    assert line["job_kind"] == "test.fails" and isinstance(line["job_id"], int)
    assert line["level"] == "warning" and "cannot do job" in line["message"]
    assert "request_id" not in line


def test_no_provider_secret_nor_message_body_in_the_logs_of_a_send(
    wired: tuple[Services, str], twilio: TwilioPeer
) -> None:
    services, _ = wired
    assert twilio.auth_token in services.settings.secrets()
    stream = io.StringIO()
    handler = configure_logging("debug", "json", services.settings.secrets(), stream)
    logging.getLogger().setLevel(logging.DEBUG)  # the libraries' debug lines too
    try:
        publish(services, journey("{channel: sms, template: t}"))
        with services.db.write() as conn:
            content = {"en": {"sms": {"text": "Your private code is 7731-KESTREL"}}}
            templates.save(conn, "t", content, "test", services.clock.now_ms())
        opt_in(services, "ana")
        opt_in(services, "bob")
        twilio.errors[_phone("bob")] = (500, 20500, "Internal error")
        track(services, "ana", "Go")
        track(services, "bob", "Go")
        [sent] = twilio.messages
        assert twilio.callback(sent, "delivered").status_code == 204
        # A line that would carry the secret, had anything logged it.
        logging.getLogger("parcours.test").warning("token is %s", twilio.auth_token)
    finally:
        remove_logging(handler)
        logging.getLogger().setLevel(logging.WARNING)
    assert sent["Body"] == "Your private code is 7731-KESTREL"  # what went out
    assert [m["state"] for m in outbox(services)] == ["sent", "pending"]
    text = stream.getvalue()
    assert len(text.splitlines()) > 5  # the send, the callback, the libraries' lines
    assert twilio.auth_token not in text
    assert "7731-KESTREL" not in text
    assert '"message":"token is [redacted]"' in text


def test_every_configured_secret_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("META_TOKEN", "meta-access-token-from-env")
    settings = Settings(
        data_dir=tmp_path,
        database_url="postgresql://parcours:db-password-9@db.example/parcours",
        write_key="write-key-abcdef",
        admin_key="admin-key-abcdef",
        shopify_webhook_secret="shopify-secret-1",
        metrics_token=TOKEN,
        channels={
            "sms": {"provider": "twilio", "account_sid": "AC123", "auth_token": "twilio-tok-1"},
            "whatsapp": {"access_token_env": "META_TOKEN", "app_secret": "meta-app-secret"},
            "email": {"host": "smtp.example", "password": "smtp-password-1", "port": 587},
        },
    )
    secrets = settings.secrets()
    assert {
        "db-password-9",
        "write-key-abcdef",
        "admin-key-abcdef",
        "shopify-secret-1",
        TOKEN,
        "twilio-tok-1",
        "meta-access-token-from-env",
        "meta-app-secret",
        "smtp-password-1",
    } <= secrets
    assert "smtp.example" not in secrets and "AC123" not in secrets
    stream = io.StringIO()
    handler = configure_logging("info", "text", secrets, stream)
    try:
        try:
            raise ValueError("connect to smtp.example with smtp-password-1 failed")
        except ValueError:
            logging.getLogger("parcours.test").exception("login %s", "twilio-tok-1")
    finally:
        remove_logging(handler)
    text = stream.getvalue()
    assert "smtp-password-1" not in text and "twilio-tok-1" not in text
    assert "login [redacted]" in text and "with [redacted] failed" in text


# ---- readiness ------------------------------------------------------------------------


def test_readyz_says_what_it_checked(client: TestClient[Any]) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    ready = response.json()
    assert ready["status"] == "ready" and ready["migration"] == head_revision()
    assert ready["worker"] == "none in this process"
    assert ready["workers"] == {"fresh": 0, "stale": 0, "required": 0}


def test_readyz_fails_when_this_process_worker_stops_beating(
    settings: Settings, clock: SimulatedClock
) -> None:
    services = Services.open(settings.with_overrides(worker_stale_seconds=30), clock=clock)
    release = threading.Event()
    started = threading.Event()

    def stuck(_conn: Any, _job: Job) -> None:
        started.set()
        release.wait(30)

    services.worker.register("test.stuck", stuck)
    try:
        with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
            services.start_worker()
            wait_until(lambda: services.heartbeat.last_beat_at is not None, 10, what="a beat")
            ready = client.get("/readyz").json()
            assert ready["status"] == "ready" and ready["worker"].startswith("beating")
            assert ready["workers"]["fresh"] == 1
            with services.db.write() as conn:
                enqueue(conn, "test.stuck", {}, run_at=clock.now_ms(), now=clock.now_ms())
            services.worker.wake.set()
            assert started.wait(10)  # the worker is stuck in its batch: no more beats
            clock.advance_ms(31_000)
            response = client.get("/readyz")
            assert response.status_code == 503
            body = response.json()
            assert body["failed"] == ["worker"]
            assert body["worker"] == (
                "this process's worker last beat 31 s ago (fresh: within 30 s)"
            )
            assert body["workers"]["stale"] == 1
    finally:
        release.set()
        services.close()


def test_readyz_can_require_workers_anywhere(settings: Settings, clock: SimulatedClock) -> None:
    services = Services.open(settings.with_overrides(ready_min_workers=1), clock=clock)
    try:
        with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
            missing = client.get("/readyz")
            assert missing.status_code == 503 and missing.json()["failed"] == ["workers"]
            elsewhere = Heartbeat(services.db, clock)  # a `parcours worker` process
            elsewhere.beat()
            assert client.get("/readyz").status_code == 200
            clock.advance_ms(31_000)
            stale = client.get("/readyz").json()
            assert stale["failed"] == ["workers"]
            assert stale["workers"] == {"fresh": 0, "stale": 1, "required": 1}
            elsewhere.beat()
            assert client.get("/readyz").status_code == 200
            elsewhere.remove()  # it stopped: gone, not stale
            assert client.get("/readyz").json()["workers"]["stale"] == 0
    finally:
        services.close()


def test_readyz_fails_when_migrations_are_behind(services: Services) -> None:
    from alembic import command

    with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
        command.stamp(alembic_config(services.db), "0008")
        try:
            response = client.get("/readyz")
        finally:
            command.stamp(alembic_config(services.db), "head")
    assert response.status_code == 503
    assert response.json()["failed"] == ["migrations"]
    assert response.json()["migrations"] == f"at 0008, expected {head_revision()}"


# ---- helpers --------------------------------------------------------------------------


def _identify(user: str, traits: dict[str, Any], at: int) -> Any:
    return make_event("identify", userId=user, at=at, traits=traits)


def _phone(user: str) -> str:
    from tests.test_journeys_engine import contact_traits

    return contact_traits(user)["phone"]
