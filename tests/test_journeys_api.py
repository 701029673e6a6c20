"""The journeys admin API: drafts, review by a second person, counts, traces, simulation."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient

from parcours.runtime.clock import SimulatedClock
from parcours.runtime.keys import create_key
from parcours.services import Services
from tests.conftest import admin_headers, define_templates, make_event
from tests.test_journeys_engine import CART, HOUR, advance, opt_in

YAML = {"Content-Type": "application/yaml"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def go_live(client: TestClient[Any], services: Services, source: str) -> int:
    define_templates(services, source)
    reviewer = create_key(services.db, "admin", "reviewer")
    created = client.post("/api/journeys", content=source, headers=YAML | admin_headers())
    assert created.status_code == 201, created.text
    version = created.json()["version"]
    base = f"/api/journeys/cart/versions/{version}"
    assert client.post(f"{base}/submit", headers=admin_headers()).status_code == 200
    refused = client.post(f"{base}/approve", headers=admin_headers())
    assert refused.status_code == 409
    assert "another person must approve" in refused.json()["error"]["message"]
    approved = client.post(f"{base}/approve", headers=bearer(reviewer))
    assert approved.json()["approved_by"] == "reviewer"
    assert client.post(f"{base}/go_live", headers=bearer(reviewer)).json()["status"] == "live"
    return int(version)


def test_a_journey_goes_live_only_after_another_person_approves(
    client: TestClient[Any], services: Services
) -> None:
    go_live(client, services, CART)
    listing = client.get("/api/journeys", headers=admin_headers()).json()["versions"]
    assert [(v["journey_id"], v["status"]) for v in listing] == [("cart", "live")]


def test_an_invalid_journey_is_refused_with_its_lines(client: TestClient[Any]) -> None:
    response = client.post(
        "/api/journeys", content=CART.replace("wait: 1h", "wait: soon"), headers=admin_headers()
    )
    assert response.status_code == 400
    problem = response.json()["error"]["problems"][0]
    assert problem["path"] == "steps[0].wait" and problem["line"] == 7


def test_trace_and_counts(
    client: TestClient[Any], services: Services, clock: SimulatedClock
) -> None:
    version = go_live(client, services, CART)
    opt_in(services, "ana")
    services.writer.append_sync(
        [
            make_event(
                "track",
                userId="ana",
                event="Checkout Started",
                at=clock.now_ms(),
                properties={"checkout_id": "c-1", "total": 20},
            )
        ]
    )
    services.worker.run_due()
    advance(services, clock, 90 * 60_000)
    trace = client.get("/api/customers/ana/journeys", headers=admin_headers()).json()
    run = trace["runs"][0]
    assert run["journey_id"] == "cart" and run["waiting"] == "timer"
    assert [h["event"] for h in trace["history"]] == [
        "Journey Entered",
        "Journey Waiting",
        "Message Queued",
        "Journey Waiting",
    ]
    stats = client.get(
        f"/api/journeys/cart/versions/{version}/stats", headers=admin_headers()
    ).json()
    assert stats["entered"] == 1 and stats["active"] == 1
    assert stats["steps"]["push"] == {"Message Queued": 1}
    advance(services, clock, 2 * 24 * HOUR, step=HOUR)
    stats = client.get(
        f"/api/journeys/cart/versions/{version}/stats", headers=admin_headers()
    ).json()
    assert stats["active"] == 0 and stats["exited"] == 1
    # Counted by decision, whichever way a branch went (the console's graph tells those).
    decisions = {name for counted in stats["steps"].values() for name in counted}
    assert "Journey Branched" in decisions and not any(": " in name for name in decisions)


def test_simulation_through_the_api(client: TestClient[Any], services: Services) -> None:
    define_templates(services, CART)
    response = client.post(
        "/api/journeys/simulate",
        json={
            "journey": CART,
            "start": "2026-11-24T10:00:00Z",
            "days": 1,
            "script": [
                {"at": "+0m", "event": "Checkout Started", "properties": {"checkout_id": "x"}}
            ],
        },
        headers=admin_headers(),
    )
    assert response.status_code == 200, response.text
    timeline = response.json()["timeline"]
    whats = [e["what"] for e in timeline]
    assert whats[0] == "entered (trigger: Checkout Started)"
    assert "held back cart-push: no push subscription" in whats
    # Beside the English, the decision by its log name, its step and its details.
    held = [e for e in timeline if e.get("decision") == "Message Held"]
    assert ("push", "no push subscription") in [(e["step"], e["details"]["reason"]) for e in held]
    assert timeline[0]["decision"] == "Journey Entered"


def test_an_admin_key_is_one_person_and_approval_compares_people(
    client: TestClient[Any], services: Services
) -> None:
    """A person cannot approve their own edit with a second key: two live admin keys never
    share a name, and a new key for the same name is the same person."""
    from parcours.runtime.keys import KeyNameTaken, list_keys, revoke_key

    define_templates(services, CART)
    ana = create_key(services.db, "admin", "Ana Lima")
    with pytest.raises(KeyNameTaken, match="already belongs to 'Ana Lima'"):
        create_key(services.db, "admin", "Ana Lima")
    created = client.post("/api/journeys", content=CART, headers=YAML | bearer(ana))
    base = f"/api/journeys/cart/versions/{created.json()['version']}"
    assert client.post(f"{base}/submit", headers=bearer(ana)).status_code == 200
    # Ana's key revoked and a new one made under her name: still Ana, still refused.
    (ana_key,) = [k for k in list_keys(services.db) if k.name == "Ana Lima"]
    assert revoke_key(services.db, ana_key.id)
    ana_again = create_key(services.db, "admin", "ana lima ")
    refused = client.post(f"{base}/approve", headers=bearer(ana_again))
    assert refused.status_code == 409
    assert "Ana Lima edited version 1 last" in refused.json()["error"]["message"]
    ben = create_key(services.db, "admin", "Ben Roy")
    approved = client.post(f"{base}/approve", headers=bearer(ben))
    assert approved.status_code == 200 and approved.json()["approved_by"] == "Ben Roy"
    (ben_key,) = [k for k in list_keys(services.db) if k.name == "Ben Roy"]
    (version,) = client.get("/api/journeys", headers=admin_headers()).json()["versions"]
    assert version["edited_by"] == "Ana Lima" and version["edited_by_key"] == ana_key.id
    assert version["approved_by"] == "Ben Roy" and version["approved_by_key"] == ben_key.id


def test_the_same_key_cannot_approve_its_own_edit_whatever_its_name(services: Services) -> None:
    """Through the API the key itself is compared, not only the name it carries."""
    from parcours.journeys import versions as journeys

    define_templates(services, CART)
    now = services.clock.now_ms()
    draft = journeys.save_draft(services.db, CART, "Ana Lima", now, editor_key=7)
    journeys.change_status(services.db, "cart", draft.version, "submit", "Ana Lima", now, key=7)
    with pytest.raises(journeys.LifecycleError, match="another person must approve"):
        journeys.change_status(services.db, "cart", draft.version, "approve", "Ana L.", now, key=7)
