"""Journeys entered on a segment (entering or leaving it), branches on membership, and
entries through the API with an idempotency key."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient

from parcours.journeys import versions as journeys
from parcours.runtime.clock import SimulatedClock
from parcours.segments import catalog as segments
from parcours.services import Services
from tests.conftest import admin_headers, make_event
from tests.test_journeys_engine import opt_in, publish, runs, sent
from tests.test_segments import GOLD, define, identify, track

WELCOME_GOLD = """\
id: gold-welcome
name: Welcome to gold
entry: {segment: gold, on: enter}
steps:
  - id: hello
    send: {channel: email, template: gold-hello}
"""

GOODBYE_GOLD = """\
id: gold-goodbye
name: Gold no more
entry: {segment: gold, on: leave}
steps:
  - id: goodbye
    send: {channel: email, template: gold-goodbye}
"""

PRIVATE_SALE = """\
id: private-sale
name: Private sale
entry: {event: Private Sale Announced}
steps:
  - branch:
      - when: {segment.gold: {eq: true}}
        steps:
          - id: early
            send: {channel: email, template: sale-early}
      - when: {segment.gold: {eq: false}}
        steps:
          - id: later
            send: {channel: email, template: sale-later}
"""

API_ENTRY = """\
id: concierge
name: Concierge follow-up
entry: {api: true, key: properties.ticket}
steps:
  - id: note
    send: {channel: email, template: concierge-note, purpose: transactional}
"""


def test_entering_a_segment_enters_its_journey(services: Services) -> None:
    define(services, GOLD)
    publish(services, WELCOME_GOLD)
    opt_in(services, "ana")
    identify(services, "ana", tier="gold")
    assert sent(services, "ana") == [("email", "gold-hello")]
    assert runs(services, "ana")[0].journey_id == "gold-welcome"
    identify(services, "ana", tier="gold")  # still gold: no second entry
    assert len(runs(services, "ana")) == 1


def test_leaving_a_segment_enters_a_leave_journey(services: Services) -> None:
    define(services, GOLD)
    publish(services, GOODBYE_GOLD)
    opt_in(services, "bo", tier="gold")
    services.worker.run_due()
    assert sent(services, "bo") == []
    identify(services, "bo", tier="silver")
    assert sent(services, "bo") == [("email", "gold-goodbye")]


def test_a_segments_batch_evaluation_enters_nobody_unless_the_journey_asks(
    services: Services,
) -> None:
    define(services, GOLD)
    publish(services, WELCOME_GOLD)
    publish(
        services,
        WELCOME_GOLD.replace("id: gold-welcome", "id: gold-all").replace(
            "on: enter}", "on: enter, backfill: true}"
        ),
    )
    opt_in(services, "cy", tier="silver")
    services.worker.run_due()
    # The segment now takes silver too: Cy enters it by the batch evaluation.
    define(services, GOLD.replace("eq: gold", "in: [gold, silver]"), update=True)
    assert [r.journey_id for r in runs(services, "cy")] == ["gold-all"]


def test_a_customer_who_acts_while_the_batch_runs_enters_the_journey(
    services: Services,
) -> None:
    define(services, GOLD)
    publish(services, WELCOME_GOLD)
    opt_in(services, "cy", tier="silver")
    services.worker.run_due()
    segments.save(
        services.db,
        GOLD.replace("eq: gold", "in: [gold, platinum]"),
        "ana",
        services.clock.now_ms(),
        mode="update",
    )
    # Before the worker runs the batch evaluation, Cy becomes platinum: the batch reaches
    # Cy first, but the entry is Cy's own, so the journey takes it.
    services.writer.append_sync(
        [
            make_event(
                "identify", userId="cy", at=services.clock.now_ms(), traits={"tier": "platinum"}
            )
        ]
    )
    services.worker.run_due()
    assert [r.journey_id for r in runs(services, "cy")] == ["gold-welcome"]


def test_a_branch_reads_the_customers_segments(services: Services) -> None:
    define(services, GOLD)
    publish(services, PRIVATE_SALE)
    opt_in(services, "di", tier="gold")
    opt_in(services, "ed", tier="bronze")
    services.worker.run_due()
    track(services, "di", "Private Sale Announced")
    track(services, "ed", "Private Sale Announced")
    assert sent(services, "di") == [("email", "sale-early")]
    assert sent(services, "ed") == [("email", "sale-later")]


def test_a_journey_naming_an_undefined_segment_cannot_go_live(services: Services) -> None:
    with pytest.raises(journeys.LifecycleError, match="no segment is defined with id 'gold'"):
        publish(services, PRIVATE_SALE)
    with pytest.raises(journeys.LifecycleError, match="'gold'"):
        publish(services, WELCOME_GOLD)


def enter(client: TestClient[Any], journey: str, body: dict[str, Any], key: str | None) -> Any:
    headers = admin_headers() | ({"Idempotency-Key": key} if key else {})
    return client.post(f"/api/journeys/{journey}/runs", json=body, headers=headers)


def test_the_api_enters_a_customer_once_per_idempotency_key(
    client: TestClient[Any], services: Services, clock: SimulatedClock
) -> None:
    publish(services, API_ENTRY)
    opt_in(services, "fa")
    body = {"customer": "fa@example.com", "properties": {"ticket": "T-9"}}
    first = enter(client, "concierge", body, "req-1")
    assert first.status_code == 202, first.text
    assert first.json()["duplicate"] is False
    services.worker.run_due()
    again = enter(client, "concierge", body, "req-1")
    assert again.status_code == 202 and again.json()["duplicate"] is True
    assert again.json()["messageId"] == first.json()["messageId"]
    services.worker.run_due()
    assert [(r.journey_id, r.key) for r in runs(services, "fa")] == [("concierge", "T-9")]
    assert sent(services, "fa") == [("email", "concierge-note")]
    in_body = enter(
        client,
        "concierge",
        {**body, "idempotency_key": "req-2", "properties": {"ticket": "T-10"}},
        None,
    )
    assert in_body.status_code == 202 and in_body.json()["duplicate"] is False
    services.worker.run_due()
    assert sorted(r.key for r in runs(services, "fa")) == ["T-10", "T-9"]


def test_an_api_entry_says_what_is_wrong(client: TestClient[Any], services: Services) -> None:
    publish(services, API_ENTRY)
    publish(
        services,
        WELCOME_GOLD.replace("entry: {segment: gold, on: enter}", "entry: {event: Signed Up}"),
    )
    journeys.save_draft(services.db, API_ENTRY.replace("id: concierge", "id: draft-only"), "ana", 0)
    opt_in(services, "gi")
    body = {"customer": "gi", "properties": {"ticket": "T-1"}}

    unknown = enter(client, "nope", body, "k")
    assert unknown.status_code == 404 and "'nope'" in unknown.json()["message"]
    draft = enter(client, "draft-only", body, "k")
    assert draft.status_code == 409 and "is not live" in draft.json()["message"]
    by_event = enter(client, "gold-welcome", body, "k")
    assert by_event.status_code == 409
    assert "entered on Signed Up, not through the API" in by_event.json()["message"]
    nobody = enter(client, "concierge", {**body, "customer": "who@example.com"}, "k")
    assert nobody.status_code == 404 and nobody.json()["error"]["field"] == "customer"
    no_key = enter(client, "concierge", body, None)
    assert no_key.status_code == 400 and "Idempotency-Key" in no_key.json()["message"]
    reserved = enter(client, "concierge", {**body, "properties": {"journey_id": "x"}}, "k")
    assert reserved.status_code == 400 and "journey_id" in reserved.json()["message"]
    unknown_field = enter(client, "concierge", {**body, "custmer": "gi"}, "k")
    assert unknown_field.status_code == 400 and "custmer" in unknown_field.json()["message"]
    anonymous = client.post("/api/journeys/concierge/runs", json=body)
    assert anonymous.status_code == 401
    services.worker.run_due()
    assert runs(services, "gi") == []  # none of these entered anyone


def test_a_trait_a_journey_sets_moves_the_customer_into_a_segment(services: Services) -> None:
    define(services, GOLD)
    publish(
        services,
        """\
id: promote
name: Promote to gold
entry: {event: Tier Reviewed}
steps:
  - update_profile: {set: {tier: gold}}
""",
    )
    publish(services, WELCOME_GOLD)
    opt_in(services, "ho")
    track(services, "ho", "Tier Reviewed")
    services.worker.run_due()
    assert sent(services, "ho") == [("email", "gold-hello")]
