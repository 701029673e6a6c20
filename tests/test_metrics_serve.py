"""`/metrics` of the default `parcours serve` (SQLite, one process) shows every metric
docs/operations.md lists: those of the HTTP handlers (requests, rejections) as well as
those of the writer and the worker (events stored, steps, sends)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from parcours.journeys import versions as journeys
from parcours.messaging import templates
from parcours.runtime.clock import SystemClock
from parcours.runtime.db import Database, migrate
from parcours.runtime.queue import enqueue
from tests.conftest import WRITE_KEY, free_port, wait_until, wait_until_serving

pytestmark = pytest.mark.processes
ROOT = Path(__file__).resolve().parent.parent
TOKEN = "metrics-serve-token"
JOURNEY = """\
id: metered
name: Every kind of send
entry: {event: Go}
steps:
  - send: {channel: sms, template: metered-sms, purpose: transactional}
  - send: {channel: push, template: metered-push, purpose: marketing, if_held: drop}
  - send: {channel: email, template: metered-email, purpose: transactional}
"""


def documented_metrics() -> list[str]:
    """The names in docs/operations.md's table of metrics."""
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    return re.findall(r"^\| `(parcours_[a-z_]+)` \|", text, re.M)


def test_the_documented_list_is_read() -> None:
    names = documented_metrics()
    assert "parcours_http_requests_total" in names and "parcours_events_rejected_total" in names
    assert len(names) == len(set(names)) >= 13


def prepare(data_dir: Path) -> None:
    """The database the server will open: a live journey whose three sends are sent (SMS,
    sandbox), held (push, no consent) and refused by the provider (email: an SMTP server
    that is not there), and a job of a kind no handler knows (it fails)."""
    data_dir.mkdir(parents=True)
    db = Database(f"sqlite:///{data_dir / 'parcours.db'}")
    try:
        migrate(db)
        now = SystemClock().now_ms()
        with db.write() as conn:
            for name, content in {
                "metered-sms": {"sms": {"text": "Hello"}},
                "metered-push": {"push": {"title": "Hello", "body": "Hello"}},
                "metered-email": {"email": {"subject": "Hello", "text": "Hello"}},
            }.items():
                templates.save(conn, name, {"en": content}, "test", now)
            enqueue(conn, "test.nobody-handles-this", {}, run_at=now, now=now, max_attempts=1)
        journeys.publish(db, JOURNEY, "ana", "ben", now)
    finally:
        db.dispose()


def test_default_serve_exposes_every_documented_metric(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    prepare(data_dir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("PARCOURS_") and name != "PROMETHEUS_MULTIPROC_DIR"
    }
    env |= {
        "PARCOURS_WRITE_KEY": WRITE_KEY,
        "PARCOURS_METRICS_TOKEN": TOKEN,
        "PARCOURS_LOG_LEVEL": "warning",
        "PARCOURS_CHANNELS": json.dumps(
            {
                "email": {
                    "provider": "smtp",
                    "host": "127.0.0.1",
                    "port": free_port(),  # nothing listens there
                    "security": "none",
                    "from_address": "shop@example.com",
                    "timeout": 2,
                }
            }
        ),
    }
    command = [str(Path(sys.executable).parent / "parcours"), "serve", "--port", str(port)]
    command += ["--data-dir", str(data_dir)]
    server = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_until_serving(server, url)
        with httpx.Client(base_url=url, timeout=10) as client:
            identify = {
                "type": "identify",
                "userId": "ana",
                "traits": {"email": "ana@example.com", "phone": "+33612345678"},
            }
            assert client.post("/v1/identify", json=identify, auth=(WRITE_KEY, "")).is_success
            go = {"type": "track", "userId": "ana", "event": "Go"}
            assert client.post("/v1/track", json=go, auth=(WRITE_KEY, "")).is_success
            # Refused in the HTTP process: a wrong write key, an event without a name.
            assert client.post("/v1/track", json=go, auth=("wrong", "")).status_code == 401
            nameless = {"type": "track", "userId": "ana"}
            assert client.post("/v1/track", json=nameless, auth=(WRITE_KEY, "")).status_code == 400
            wanted = set(documented_metrics())
            shown: set[str] = set()

            def all_shown() -> bool:
                nonlocal shown
                assert server.poll() is None, "the server exited"
                shown = _shown(client, wanted)
                return shown == wanted

            # The writer and the worker record in their own time: scrape until all show.
            wait_until(all_shown, 60, every=0.2, what=lambda: f"{sorted(wanted - shown)} to show")
    finally:
        server.send_signal(signal.SIGTERM)
        status = server.wait(60)
        errors = server.stderr.read().decode(errors="replace") if server.stderr else ""
    assert status == 0, errors[-3000:]


def _shown(client: httpx.Client, wanted: set[str]) -> set[str]:
    """Those of `wanted` that /metrics shows a sample of."""
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    names = {
        sample.name
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    return {n for n in wanted if names & {n, f"{n}_bucket", f"{n}_count", f"{n}_sum"}}
