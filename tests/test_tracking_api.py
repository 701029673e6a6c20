"""The Segment-compatible tracking API and the customer read API, through HTTP."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import func, select

from parcours.log import events
from parcours.runtime.clock import SimulatedClock, iso
from parcours.services import Services
from tests.conftest import START, WRITE_KEY, admin_headers

BASIC = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}


def post(
    client: TestClient[Any], path: str, body: Any, headers: dict[str, str] | None = None
) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    auth = BASIC if headers is None else headers
    return client.post(path, content=content, headers={"Content-Type": "application/json", **auth})


def count(services: Services) -> int:
    with services.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(events)).scalar_one())


def history(client: TestClient[Any], ref: str, **query: Any) -> Any:
    return client.get(f"/api/customers/{ref}/events", params=query, headers=admin_headers())


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/track", {"userId": "u", "event": "Product Viewed", "properties": {"sku": "a"}}),
        ("/v1/identify", {"userId": "u", "traits": {"email": "u@example.com"}}),
        ("/v1/page", {"userId": "u", "name": "Home"}),
        ("/v1/screen", {"userId": "u", "name": "Cart"}),
        ("/v1/group", {"userId": "u", "groupId": "g-1"}),
        ("/v1/alias", {"userId": "u", "previousId": "anon"}),
    ],
)
def test_each_call_is_stored_and_readable(
    client: TestClient[Any], path: str, body: dict[str, Any]
) -> None:
    response = post(client, path, body | {"messageId": "m-1"})
    assert response.status_code == 200, response.text
    assert response.json()["messageId"] == "m-1"
    stored = history(client, "u").json()["events"]
    assert [e["messageId"] for e in stored] == ["m-1"]
    assert stored[0]["type"] == path.rsplit("/", 1)[1]


def test_write_key_in_the_body_works_and_is_never_stored(client: TestClient[Any]) -> None:
    response = post(
        client, "/v1/track", {"writeKey": WRITE_KEY, "userId": "u", "event": "E"}, headers={}
    )
    assert response.status_code == 200
    assert "writeKey" not in history(client, "u").json()["events"][0]
    batch = post(
        client,
        "/v1/batch",
        {"writeKey": WRITE_KEY, "batch": [{"type": "track", "userId": "u", "event": "F"}]},
        headers={},
    )
    assert batch.json()["stored"] == 1


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Basic " + base64.b64encode(b"nope:").decode()}]
)
def test_a_missing_or_unknown_write_key_is_refused(
    client: TestClient[Any], services: Services, headers: dict[str, str]
) -> None:
    response = post(client, "/v1/track", {"userId": "u", "event": "E"}, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["field"] == "writeKey"
    assert count(services) == 0


def test_gzip_bodies_are_accepted_and_bad_gzip_is_named(client: TestClient[Any]) -> None:
    body = gzip.compress(
        json.dumps(
            {"batch": [{"type": "track", "userId": "u", "event": "E", "messageId": "g"}]}
        ).encode()
    )
    ok = post(client, "/v1/batch", body, headers=BASIC | {"Content-Encoding": "gzip"})
    assert ok.json()["stored"] == 1
    bad = post(client, "/v1/batch", b"not gzip", headers=BASIC | {"Content-Encoding": "gzip"})
    assert bad.status_code == 400 and "gzip" in bad.json()["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event": "E"}, "userId"),
        ({"userId": "u"}, "event"),
        ({"userId": "u", "event": "E", "properties": [1, 2]}, "properties"),
        ({"userId": ["u"], "event": "E"}, "userId"),
        ({"userId": "u", "event": "E", "timestamp": "yesterday"}, "timestamp"),
        ({"userId": "u", "event": "E", "context": {"externalIds": "x"}}, "context.externalIds"),
    ],
)
def test_a_bad_event_is_refused_naming_the_field(
    client: TestClient[Any], services: Services, body: dict[str, Any], field: str
) -> None:
    response = post(client, "/v1/track", body)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field
    assert count(services) == 0


def test_bad_json_is_named(client: TestClient[Any]) -> None:
    response = post(client, "/v1/track", b'{"userId": "u",')
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["message"]


def test_size_limits(client: TestClient[Any], services: Services) -> None:
    big = {"userId": "u", "event": "E", "properties": {"blob": "x" * 33_000}}
    assert post(client, "/v1/track", big).status_code == 413
    in_batch = post(
        client, "/v1/batch", {"batch": [big, {"type": "track", "userId": "u", "event": "small"}]}
    )
    assert in_batch.status_code == 200
    assert in_batch.json()["rejected"][0]["index"] == 0
    assert "more than the limit of 32768" in in_batch.json()["rejected"][0]["message"]
    huge = {
        "batch": [
            {"type": "track", "userId": "u", "event": "E", "properties": {"blob": "x" * 30_000}}
        ]
        * 18
    }
    assert post(client, "/v1/batch", huge).status_code == 413
    many = {"batch": [{"type": "track", "userId": "u", "event": "E"}] * 2501}
    too_many = post(client, "/v1/batch", many)
    assert too_many.status_code == 400 and too_many.json()["error"]["field"] == "batch"
    assert count(services) == 1


def test_a_batch_keeps_the_good_events_and_names_each_bad_one(
    client: TestClient[Any], services: Services
) -> None:
    response = post(
        client,
        "/v1/batch",
        {
            "batch": [
                {"type": "track", "userId": "u", "event": "Good", "messageId": "a"},
                {"type": "track", "userId": "u", "messageId": "b"},
                {"type": "teleport", "userId": "u"},
                {"type": "identify", "anonymousId": "x", "messageId": "c"},
                "not an object",
            ]
        },
    )
    body = response.json()
    assert response.status_code == 200
    assert (body["accepted"], body["stored"]) == (2, 2)
    assert [(r["index"], r["field"], r["messageId"]) for r in body["rejected"]] == [
        (1, "event", "b"),
        (2, "type", None),
        (4, "", None),
    ]
    assert count(services) == 2


def test_a_resent_event_or_batch_changes_nothing_and_still_succeeds(
    client: TestClient[Any], services: Services
) -> None:
    batch = {
        "batch": [
            {"type": "track", "userId": "u", "event": "E", "messageId": f"r{n}"} for n in range(5)
        ]
    }
    assert post(client, "/v1/batch", batch).json()["stored"] == 5
    again = post(client, "/v1/batch", batch).json()
    assert (again["success"], again["stored"], again["duplicates"]) == (True, 0, 5)
    single = {"userId": "u", "event": "E", "messageId": "r0"}
    assert post(client, "/v1/track", single).json()["duplicate"] is True
    assert count(services) == 5


def test_times_are_corrected_by_the_client_clock_offset(
    client: TestClient[Any], clock: SimulatedClock
) -> None:
    received = START
    # The client's clock is 10 minutes fast: it says it sent at R+10min.
    post(
        client,
        "/v1/track",
        {
            "userId": "u",
            "event": "A",
            "messageId": "skewed",
            "timestamp": iso(received + 540_000),
            "sentAt": iso(received + 600_000),
        },
    )
    post(
        client,
        "/v1/track",
        {"userId": "u", "event": "B", "messageId": "plain", "timestamp": iso(received - 5_000)},
    )
    post(client, "/v1/track", {"userId": "u", "event": "C", "messageId": "none"})
    by_id = {e["messageId"]: e for e in history(client, "u").json()["events"]}
    assert by_id["skewed"]["occurredAt"] == iso(received - 60_000)
    assert by_id["plain"]["occurredAt"] == iso(received - 5_000)
    assert by_id["none"]["occurredAt"] == iso(received)
    assert by_id["none"]["receivedAt"] == iso(received)


def test_a_numeric_user_id_is_text(client: TestClient[Any]) -> None:
    post(client, "/v1/identify", {"userId": 12345})
    assert client.get("/api/customers/12345", headers=admin_headers()).status_code == 200


def test_admin_api_needs_an_admin_key(client: TestClient[Any]) -> None:
    assert client.get("/api/customers/u").status_code == 401
    write_key_is_not_admin = {"Authorization": f"Bearer {WRITE_KEY}"}
    assert client.get("/api/customers/u", headers=write_key_is_not_admin).status_code == 401
    missing = client.get("/api/customers/ghost", headers=admin_headers())
    assert missing.status_code == 404 and "ghost" in missing.json()["message"]


def test_lookup_by_any_id(client: TestClient[Any]) -> None:
    post(
        client,
        "/v1/identify",
        {
            "userId": "u-7",
            "anonymousId": "a-7",
            "traits": {"email": "Kim@Example.com", "phone": "06 70 00 00 07"},
        },
    )
    ids = {
        client.get(f"/api/customers/{ref}", headers=admin_headers()).json()["id"]
        for ref in (
            "u-7",
            "a-7",
            "kim@example.com",
            "KIM@example.COM",
            "0670000007",
            "+33670000007",
        )
    }
    assert len(ids) == 1
    (customer_id,) = ids
    assert (
        client.get(f"/api/customers/{customer_id}", headers=admin_headers()).json()["id"]
        == customer_id
    )


def test_event_pages_are_newest_first_without_gaps(client: TestClient[Any]) -> None:
    post(
        client,
        "/v1/batch",
        {
            "batch": [
                {"type": "track", "userId": "p", "event": f"E{n}", "messageId": f"p{n}"}
                for n in range(7)
            ]
        },
    )
    seen: list[str] = []
    before = None
    while True:
        query = {"limit": 3} | ({"before": before} if before else {})
        page = history(client, "p", **query).json()
        seen += [e["messageId"] for e in page["events"]]
        before = page["next_before"]
        if before is None:
            break
    assert seen == [f"p{n}" for n in reversed(range(7))]
    assert history(client, "p", limit=0).status_code == 400


def test_consent_endpoint_records_and_checks(client: TestClient[Any]) -> None:
    post(client, "/v1/identify", {"userId": "c"})
    url = "/api/customers/c/consents"
    grant = {
        "channel": "sms",
        "purpose": "marketing",
        "status": "granted",
        "source": "support call",
        "wording": "OK for texts",
        "occurred_at": "2026-09-21T10:00:00Z",
    }
    created = client.post(url, json=grant, headers=admin_headers())
    assert created.status_code == 201
    assert created.json()["consents"] == [
        {
            "channel": "sms",
            "purpose": "marketing",
            "status": "granted",
            "at": "2026-09-21T10:00:00.000Z",
        }
    ]
    bad = client.post(url, json=grant | {"channel": "fax"}, headers=admin_headers())
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "channel"
    older_withdrawal = grant | {"status": "withdrawn", "occurred_at": "2026-09-20T10:00:00Z"}
    client.post(url, json=older_withdrawal, headers=admin_headers())
    same_time_withdrawal = grant | {"status": "withdrawn"}
    after = client.post(url, json=same_time_withdrawal, headers=admin_headers()).json()
    assert after["consents"][0]["status"] == "withdrawn"


def test_health_and_readiness(client: TestClient[Any]) -> None:
    assert client.get("/healthz").json() == {"status": "alive"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["migration"]


def test_a_stopped_writer_answers_503_so_that_clients_retry(
    client: TestClient[Any], services: Services
) -> None:
    services.writer.close()
    single = post(client, "/v1/track", {"userId": "u", "event": "Product Viewed"})
    batch = post(client, "/v1/batch", {"batch": [{"type": "track", "userId": "u", "event": "E"}]})
    for response in (single, batch):
        assert response.status_code == 503
        assert response.json()["code"] == "unavailable"
    assert count(services) == 0
