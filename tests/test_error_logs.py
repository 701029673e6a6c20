"""An unexpected error is one JSON log record carrying its traceback and the request's id
(the HTTP handlers and the writer thread alike), and the answer names that id."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import get
from litestar.testing import TestClient

from parcours.app import create_app
from parcours.runtime.logs import configure_logging, remove_logging
from parcours.services import Services
from tests.conftest import make_event


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = configure_logging("info", "json", [], stream=stream)
    try:
        yield stream
    finally:
        remove_logging(handler)


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@get("/test/broken", sync_to_thread=False)
def broken() -> None:
    raise RuntimeError("the disk is on fire")


def test_an_unexpected_error_is_one_json_record_with_its_traceback_and_request_id(
    services: Services, json_log: io.StringIO
) -> None:
    app = create_app(services, close_on_shutdown=False)
    app.register(broken)
    with TestClient(app=app) as client:
        response = client.get("/test/broken", headers={"X-Request-Id": "req-42"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "req-42"
    assert response.json() == {
        "success": False,
        "code": "internal_error",
        "message": "an unexpected error happened; it is logged (request id req-42)",
        "error": {
            "field": "",
            "message": "an unexpected error happened; it is logged (request id req-42)",
        },
    }
    errors = [r for r in records(json_log) if r["level"] == "error"]
    assert len(errors) == 1
    error = errors[0]
    assert error["request_id"] == "req-42"
    assert error["message"] == "unexpected error answering GET /test/broken: RuntimeError"
    assert (error["route"], error["status"]) == ("/test/broken", 500)
    assert error["exception"].startswith("Traceback (most recent call last):")
    assert error["exception"].endswith("RuntimeError: the disk is on fire")
    access = [r for r in records(json_log) if r.get("route") == "/test/broken" and r is not error]
    assert [r["status"] for r in access if r["level"] == "info"] == [500]


def test_a_failed_append_is_one_json_record_with_its_traceback(
    services: Services, json_log: io.StringIO
) -> None:
    bad = make_event("track", userId="u-bad", event="Product Viewed", messageId="bad-1")
    bad.name = "Consent Updated"  # not something the API lets through
    bad.properties = {"channel": "carrier-pigeon"}
    with pytest.raises(Exception, match="channel"):
        services.writer.submit([bad]).result(60)
    failures = [r for r in records(json_log) if r["message"] == "append failed"]
    assert len(failures) == 1
    assert failures[0]["level"] == "error" and failures[0]["logger"] == "parcours.ingest.writer"
    assert "Traceback (most recent call last):" in failures[0]["exception"]
    assert "carrier-pigeon" in failures[0]["exception"]
