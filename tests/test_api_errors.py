"""One error envelope for the whole HTTP API, whatever refused the call (a handler, a
definition's problems, Litestar's routing and parameters); and the API's values in one
form: times in ISO 8601 UTC, money as decimal strings with the currency's decimals."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from litestar.testing import TestClient

from parcours.customers import profiles as customers
from parcours.services import Services
from tests.conftest import START, WRITE_KEY, admin_headers
from tests.test_journeys_engine import publish, track

BASIC = {
    "Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode(),
    "Content-Type": "application/json",
}


def envelope(response: Any) -> dict[str, Any]:
    """The body, checked to be the one envelope: success, code, message, error."""
    body: dict[str, Any] = response.json()
    assert set(body) == {"success", "code", "message", "error"}, body
    assert body["success"] is False
    assert set(body["error"]) - {"problems"} == {"field", "message"}, body
    assert body["error"]["message"] == body["message"]
    return body


@pytest.mark.parametrize(
    ("method", "path", "content", "headers", "status", "code", "field"),
    [
        ("get", "/api/nowhere", b"", admin_headers(), 404, "not_found", ""),
        ("delete", "/api/customers/u", b"", admin_headers(), 405, "method_not_allowed", ""),
        (
            "get",
            "/api/customers/u/events?limit=many",
            b"",
            admin_headers(),
            400,
            "invalid_request",
            "limit",
        ),
        ("get", "/api/customers/u", b"", {}, 401, "unauthorized", "authorization"),
        ("get", "/api/customers/nobody", b"", admin_headers(), 404, "not_found", "id"),
        (
            "post",
            "/api/journeys",
            b"id: j\nentry: {event: E}\nsteps:\n  - wait: 1h\n",
            admin_headers(),
            400,
            "invalid_request",
            "name",
        ),
        (
            "post",
            "/api/customers/u/consents",
            b'{"channel": 1}',
            admin_headers(),
            400,
            "invalid_request",
            "channel",
        ),
        ("post", "/v1/track", b'{"userId": "u"}', BASIC, 400, "invalid_request", "event"),
        ("post", "/v1/track", b"{}", {}, 401, "unauthorized", "writeKey"),
        (
            "post",
            "/api/customers/u/consents",
            b"x" * (3 * 1024 * 1024),
            admin_headers(),
            413,
            "payload_too_large",
            "",
        ),
    ],
)
def test_every_refusal_has_the_one_envelope(
    client: TestClient[Any],
    method: str,
    path: str,
    content: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
    field: str,
) -> None:
    response = client.request(method.upper(), path, content=content or None, headers=headers)
    assert response.status_code == status, response.text
    body = envelope(response)
    assert (body["code"], body["error"]["field"]) == (code, field)


@pytest.mark.parametrize(
    ("path", "content", "said"),
    [
        ("/v1/batch", b'{"writeKey": "k", "batch": [{},]}', "not valid JSON"),
        ("/v1/batch", b"[]", "expected `object`, got `array`"),
        ("/chat/session", b'{"writeKey": "k", "token": 5,}', "the body is not JSON"),
        ("/chat/session", b"[]", "the body must be a JSON object"),
        ("/v1/push/subscribe", b"not json", "the body is not JSON"),
        ("/v1/push/subscribe", b"{}", None),
    ],
)
def test_a_body_that_cannot_be_read_is_a_400_before_its_key_is_looked_for(
    client: TestClient[Any], path: str, content: bytes, said: str | None
) -> None:
    """The routes that read the key from their body say what is wrong with a body they
    cannot read, rather than that no key was found in it; a readable body without a key
    is refused for its key."""
    response = client.post(path, content=content, headers={"Content-Type": "application/json"})
    body = envelope(response)
    if said is None:
        assert response.status_code == 401, response.text
        assert body["error"]["field"] == "writeKey"
    else:
        assert response.status_code == 400, response.text
        assert said in body["message"]


def test_a_definition_s_problems_come_in_the_envelope(client: TestClient[Any]) -> None:
    source = "id: j\nname: J\nentry: {event: E}\nsteps:\n  - wait: soon\n  - wait: later\n"
    body = envelope(client.post("/api/journeys", content=source, headers=admin_headers()))
    problems = body["error"]["problems"]
    assert [p["path"] for p in problems] == ["steps[0].wait", "steps[1].wait"]
    assert body["error"]["field"] == "steps[0].wait"
    assert (
        body["message"]
        == f"the journey is not valid: line 5: steps[0].wait: {problems[0]['message']} (and 1 more)"
    )


def post_event(client: TestClient[Any], path: str, body: dict[str, Any]) -> None:
    response = client.post(path, content=json.dumps(body).encode(), headers=BASIC)
    assert response.status_code == 200, response.text


def test_money_is_a_decimal_string_with_the_currency_s_decimals(
    client: TestClient[Any], services: Services
) -> None:
    for order_id, total, currency in (
        ("o1", 287.0, "EUR"),
        ("o2", 129, "EUR"),
        ("o3", "570", "JPY"),
        ("o4", 12.5, "KWD"),
    ):
        post_event(
            client,
            "/v1/track",
            {
                "userId": "ana",
                "event": "Order Completed",
                "properties": {"order_id": order_id, "total": total, "currency": currency},
            },
        )
    profile = client.get("/api/customers/ana", headers=admin_headers()).json()
    assert profile["computed"]["revenue"] == {
        "EUR": {"orders": 2, "total_spent": "416.00", "average_order_value": "208.00"},
        "JPY": {"orders": 1, "total_spent": "570", "average_order_value": "570"},
        "KWD": {"orders": 1, "total_spent": "12.500", "average_order_value": "12.500"},
    }
    exported = customers.export(services.db, services.people, "ana", "FR")
    assert [(o["order_id"], o["total"], o["refunded"]) for o in exported["orders"]] == [
        ("o1", "287.00", "0.00"),
        ("o2", "129.00", "0.00"),
        ("o3", "570", "0"),
        ("o4", "12.500", "0.000"),
    ]


WAITING = """\
id: waits
name: Waits
entry: {event: Checkout Started}
steps:
  - wait: 1h
"""


def test_times_are_iso_8601_everywhere_even_in_parcours_own_events(
    client: TestClient[Any], services: Services
) -> None:
    publish(services, WAITING)
    track(services, "ana", "Checkout Started")
    an_hour_later = "2026-09-21T15:13:20.000Z"
    assert START + 3_600_000 == 1_790_003_600_000
    page = client.get("/api/customers/ana/events", headers=admin_headers()).json()["events"]
    waiting = [e for e in page if e.get("event") == "Journey Waiting"]
    assert [e["properties"]["until"] for e in waiting] == [an_hour_later]
    trace = client.get("/api/customers/ana/journeys", headers=admin_headers()).json()
    waits = [h for h in trace["history"] if h["event"] == "Journey Waiting"]
    assert [h["properties"]["until"] for h in waits] == [an_hour_later]
    assert trace["runs"][0]["until"] == an_hour_later
