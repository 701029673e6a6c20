"""The segments admin API: define, change, read, list members; the customer view."""

from __future__ import annotations

import json
from typing import Any

from litestar.testing import TestClient

from parcours.services import Services
from tests.conftest import admin_headers
from tests.test_segments import GOLD, identify

YAML = {"Content-Type": "application/yaml"}


def create(client: TestClient[Any], source: str) -> Any:
    return client.post("/api/segments", content=source, headers=YAML | admin_headers())


def test_a_segment_is_created_evaluated_and_listed(
    client: TestClient[Any], services: Services
) -> None:
    for user in ("ana", "bo", "cy"):
        identify(services, user, tier="gold" if user != "bo" else "silver")
    created = create(client, GOLD)
    assert created.status_code == 201, created.text
    assert created.json() == {
        "id": "gold",
        "generation": 1,
        "changed": True,
        "evaluation": "evaluating",
    }
    services.worker.run_due()
    described = client.get("/api/segments/gold", headers=admin_headers()).json()
    assert described["members"] == 2 and described["evaluation"] == "done"
    assert described["source"] == GOLD and described["updated_by"] == "admin key from settings"
    listing = client.get("/api/segments", headers=admin_headers()).json()["segments"]
    assert [(s["id"], s["name"], s["members"]) for s in listing] == [("gold", "Gold tier", 2)]


def test_the_customer_view_lists_the_customers_segments(
    client: TestClient[Any], services: Services
) -> None:
    create(client, GOLD)
    identify(services, "ana", tier="gold", email="ana@example.com")
    view = client.get("/api/customers/ana@example.com", headers=admin_headers()).json()
    assert [s["segment"] for s in view["segments"]] == ["gold"]
    assert view["segments"][0]["entered_at"].endswith("Z")


def test_members_are_listed_page_by_page(client: TestClient[Any], services: Services) -> None:
    for number in range(5):
        identify(services, f"m{number}", tier="gold")
    create(client, GOLD)
    services.worker.run_due()
    seen: list[str] = []
    after = ""
    while True:
        page = client.get(
            f"/api/segments/gold/members?limit=2{'&after=' + after if after else ''}",
            headers=admin_headers(),
        ).json()
        seen += [m["customer_id"] for m in page["members"]]
        assert len(page["members"]) <= 2
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert len(seen) == 5 and seen == sorted(seen, key=lambda c: int(c.removeprefix("cus_")))
    assert all(m["backfill"] for m in page["members"])
    bad = client.get("/api/segments/gold/members?after=ana", headers=admin_headers())
    assert bad.status_code == 400 and "cus_42" in bad.json()["message"]
    too_many = client.get("/api/segments/gold/members?limit=5000", headers=admin_headers())
    assert too_many.status_code == 400


def test_a_change_is_saved_and_evaluated_again(client: TestClient[Any], services: Services) -> None:
    identify(services, "ana", tier="silver")
    create(client, GOLD)
    services.worker.run_due()
    changed = GOLD.replace("eq: gold", "in: [gold, silver]")
    updated = client.put("/api/segments/gold", content=changed, headers=YAML | admin_headers())
    assert updated.status_code == 200 and updated.json()["generation"] == 2
    services.worker.run_due()
    members = client.get("/api/segments/gold/members", headers=admin_headers()).json()["members"]
    assert len(members) == 1
    again = client.put("/api/segments/gold", content=changed, headers=YAML | admin_headers())
    assert again.json()["changed"] is False and again.json()["generation"] == 2


def test_mistakes_are_refused_with_what_is_wrong(client: TestClient[Any]) -> None:
    assert create(client, GOLD).status_code == 201
    exists = create(client, GOLD)
    assert exists.status_code == 409 and "PUT /api/segments/gold" in exists.json()["message"]
    invalid = create(client, GOLD.replace("eq: gold", "equals: gold"))
    assert invalid.status_code == 400
    problem = invalid.json()["error"]["problems"][0]
    assert problem["line"] == 4 and problem["path"] == "conditions[0].profile.traits.tier.equals"
    unknown = client.put(
        "/api/segments/silver",
        content=GOLD.replace("id: gold", "id: silver"),
        headers=YAML | admin_headers(),
    )
    assert unknown.status_code == 404 and "'silver'" in unknown.json()["message"]
    mismatch = client.put("/api/segments/silver", content=GOLD, headers=YAML | admin_headers())
    assert mismatch.status_code == 400 and "'gold'" in mismatch.json()["message"]
    missing = client.get("/api/segments/nope", headers=admin_headers())
    assert missing.status_code == 404
    assert client.get("/api/segments/nope/members", headers=admin_headers()).status_code == 404
    assert client.get("/api/segments").status_code == 401
    as_json = json.dumps(
        {"id": "vip", "name": "VIP", "conditions": [{"profile.traits.vip": {"eq": True}}]}
    )
    posted = client.post(
        "/api/segments",
        content=as_json,
        headers={"Content-Type": "application/json"} | admin_headers(),
    )
    assert posted.status_code == 201
