"""What the admin API writes can be read back: a journey and each of its versions (the YAML
as written, the status, the review), and one customer's messages in the outbox."""

from __future__ import annotations

from typing import Any

from litestar.testing import TestClient

from parcours.runtime.keys import create_key
from parcours.services import Services
from tests.conftest import admin_headers, define_templates
from tests.test_channels import journey, publish
from tests.test_journeys_engine import opt_in, track

YAML = {"Content-Type": "application/yaml"}
FIRST = journey("{channel: sms, template: t, purpose: transactional}")
SECOND = FIRST.replace("name: j", "name: j, second")


def test_a_journey_and_its_versions_read_back(client: TestClient[Any], services: Services) -> None:
    define_templates(services, FIRST)
    reviewer = create_key(services.db, "admin", "reviewer")
    assert (
        client.post("/api/journeys", content=FIRST, headers=YAML | admin_headers()).json()[
            "version"
        ]
        == 1
    )
    for move, key in (("submit", None), ("approve", reviewer), ("go_live", reviewer)):
        headers = {"Authorization": f"Bearer {key}"} if key else admin_headers()
        answer = client.post(f"/api/journeys/j/versions/1/{move}", headers=headers)
        assert answer.status_code == 200, answer.text
    assert (
        client.post("/api/journeys", content=SECOND, headers=YAML | admin_headers()).json()[
            "version"
        ]
        == 2
    )

    whole = client.get("/api/journeys/j", headers=admin_headers())
    assert whole.status_code == 200, whole.text
    body = whole.json()
    assert body["journey_id"] == "j" and body["live_version"] == 1
    assert [
        (v["version"], v["status"], v["edited_by"], v["approved_by"]) for v in body["versions"]
    ] == [
        (1, "live", "admin key from settings", "reviewer"),
        (2, "draft", "admin key from settings", None),
    ]
    assert body["versions"][0]["approved_at"].endswith("Z")
    assert body["latest"]["version"] == 2 and body["latest"]["source"] == SECOND

    first = client.get("/api/journeys/j/versions/1", headers=admin_headers()).json()
    assert first["source"] == FIRST  # the YAML exactly as written
    assert (first["journey_id"], first["version"], first["status"]) == ("j", 1, "live")
    assert (first["edited_by"], first["approved_by"]) == ("admin key from settings", "reviewer")

    as_yaml = client.get(
        "/api/journeys/j/versions/2", headers=admin_headers() | {"Accept": "application/yaml"}
    )
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    assert as_yaml.text == SECOND


def test_reading_what_does_not_exist_names_it(client: TestClient[Any], services: Services) -> None:
    define_templates(services, FIRST)
    client.post("/api/journeys", content=FIRST, headers=YAML | admin_headers())
    unknown = client.get("/api/journeys/nowhere", headers=admin_headers())
    assert unknown.status_code == 404
    assert unknown.json()["error"] == {
        "field": "journey_id",
        "message": "no journey is defined with id 'nowhere'",
    }
    no_version = client.get("/api/journeys/j/versions/7", headers=admin_headers())
    assert no_version.status_code == 404
    assert no_version.json()["error"] == {
        "field": "version",
        "message": "journey 'j' has no version 7 (it has 1 to 1)",
    }
    # An id no journey can have is not looked up at all (NUL, past 64 bits, ...).
    for path in ("/api/journeys/J%00", f"/api/journeys/j/versions/{2**70}"):
        assert client.get(path, headers=admin_headers()).status_code in (400, 404)
    assert client.get("/api/journeys/j").status_code == 401


def test_the_outbox_shows_one_customer_when_asked(
    client: TestClient[Any], services: Services
) -> None:
    publish(services, FIRST)
    for user in ("ana", "bob", "ana"):
        opt_in(services, user)
        track(services, user, "Go")
    everyone = client.get("/api/outbox", headers=admin_headers()).json()["messages"]
    ana = client.get("/api/outbox?customer=ana", headers=admin_headers()).json()
    bob = client.get("/api/outbox?customer=bob@example.com", headers=admin_headers()).json()
    assert len(everyone) == 3
    assert len(ana["messages"]) == 2 and len(bob["messages"]) == 1
    assert {m["customer"] for m in ana["messages"]} != {m["customer"] for m in bob["messages"]}
    assert {m["id"] for m in ana["messages"] + bob["messages"]} == {m["id"] for m in everyone}
    # The next page keeps the filter.
    first = client.get("/api/outbox?customer=ana&limit=1", headers=admin_headers()).json()
    assert first["next"] == f"/api/outbox?customer=ana&limit=1&before={first['messages'][0]['id']}"
    second = client.get(first["next"], headers=admin_headers()).json()
    assert [m["id"] for m in first["messages"] + second["messages"]] == [
        m["id"] for m in ana["messages"]
    ]
    missing = client.get("/api/outbox?customer=nobody", headers=admin_headers())
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "customer"
