"""Cross-journey policies at send time: consent, quiet hours, caps, duplicates; races."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from parcours.messaging.policies import Policies, PolicyError
from parcours.runtime.clock import SimulatedClock, iso, to_ms
from parcours.runtime.queue import Worker
from parcours.services import Services
from tests.conftest import make_event
from tests.test_journeys_engine import (
    DAY,
    HOUR,
    advance,
    contact_traits,
    opt_in,
    publish,
    runs,
    sent,
)

SUNDAY_NOON_PARIS = to_ms(datetime(2026, 11, 22, 11, 0, tzinfo=UTC))
MONDAY_8_PARIS = to_ms(datetime(2026, 11, 23, 7, 0, tzinfo=UTC))
PARIS = {"context": {"timezone": "Europe/Paris", "location": {"country": "FR"}}}


def journey(
    journey_id: str,
    channel: str,
    template: str,
    purpose: str = "marketing",
    if_held: str = "defer",
    wait: str = "1m",
    goal: str = "Order Completed",
) -> str:
    return (
        f"id: {journey_id}\nname: {journey_id}\nentry: {{event: Go {journey_id}}}\n"
        f"goals: [{{event: {goal}}}]\n"
        f"steps:\n  - wait: {wait}\n"
        f"  - send: {{channel: {channel}, template: {template}, purpose: {purpose}, "
        f"if_held: {if_held}}}\n"
    )


def go(services: Services, user: str, journey_id: str) -> None:
    """The customer (with an address, a number and a device of their own) sets it off."""
    now = services.clock.now_ms()
    contact = make_event("identify", userId=user, at=now - 2, traits=contact_traits(user))
    event = make_event("track", userId=user, event=f"Go {journey_id}", at=now, **PARIS)
    services.writer.append_sync([contact, event])
    services.worker.run_due()


def held_reasons(services: Services) -> list[str]:
    with services.db.read() as conn:
        rows = conn.execute(
            text("SELECT payload FROM events WHERE name = 'Message Held' ORDER BY seq")
        ).scalars()
        return [json.loads(r)["properties"]["reason"] for r in rows]


@pytest.fixture
def sunday(clock: SimulatedClock) -> SimulatedClock:
    clock.set(datetime(2026, 11, 22, 11, 0, tzinfo=UTC))
    return clock


def test_marketing_without_consent_is_held_and_dropped(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, journey("j", "email", "promo"))
    go(services, "nobody", "j")
    advance(services, clock, HOUR)
    assert sent(services, "nobody") == []
    assert held_reasons(services) == ["no marketing consent for email (never given)"]
    assert runs(services, "nobody")[0].end_reason == "completed"


def test_consent_withdrawn_while_waiting_stops_the_send(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, journey("j", "email", "promo", wait="2d"))
    opt_in(services, "zoe")
    go(services, "zoe", "j")
    advance(services, clock, DAY, step=HOUR)
    services.writer.append_sync(
        [
            make_event(
                "identify",
                userId="zoe",
                at=clock.now_ms(),
                traits={"consent": {"email": {"marketing": False}}},
            )
        ]
    )
    advance(services, clock, 2 * DAY, step=HOUR)
    assert sent(services, "zoe") == []
    assert held_reasons(services) == ["no marketing consent for email (withdrawn)"]


def test_transactional_messages_need_no_marketing_consent(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, journey("j", "sms", "order-confirmation", purpose="transactional"))
    go(services, "yan", "j")
    advance(services, clock, HOUR)
    assert sent(services, "yan") == [("sms", "order-confirmation")]


def test_french_marketing_sms_waits_for_monday_8_local(
    services: Services, sunday: SimulatedClock
) -> None:
    publish(services, journey("j", "sms", "promo"))
    opt_in(services, "xia")
    go(services, "xia", "j")
    advance(services, sunday, HOUR)
    assert sent(services, "xia") == []
    reason = held_reasons(services)[0]
    assert reason.startswith("quiet hours (FR:08:00-20:00") and "Europe/Paris" in reason
    run = runs(services, "xia")[0]
    assert run.waiting == "held" and run.until == iso(MONDAY_8_PARIS)
    advance(services, sunday, MONDAY_8_PARIS - sunday.now_ms() - 1, step=HOUR)
    assert sent(services, "xia") == []
    advance(services, sunday, 60_000)
    assert sent(services, "xia") == [("sms", "promo")]


def test_a_goal_reached_while_deferred_cancels_the_message(
    services: Services, sunday: SimulatedClock
) -> None:
    publish(services, journey("j", "sms", "promo"))
    opt_in(services, "wes")
    go(services, "wes", "j")
    advance(services, sunday, 2 * HOUR)
    services.writer.append_sync(
        [make_event("track", userId="wes", event="Order Completed", at=sunday.now_ms())]
    )
    advance(services, sunday, DAY, step=HOUR)
    assert sent(services, "wes") == []
    assert runs(services, "wes")[0].converted is True


def test_a_message_cancelled_before_it_went_counts_toward_no_cap(
    services: Services, clock: SimulatedClock
) -> None:
    """The order came while the SMS waited for delivery: it was cancelled, never reached
    the customer, and so does not hold back the next marketing SMS."""
    clock.set(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))  # Monday 10:00 in Paris
    publish(services, journey("j", "sms", "promo", wait="0s"))
    publish(services, journey("k", "sms", "promo-k", wait="0s", goal="Never"))
    opt_in(services, "wes")
    every_queue = services.worker.queues
    services.worker.queues = ("journeys",)  # delivery behind: the SMS is made, not sent
    go(services, "wes", "j")
    services.writer.append_sync(
        [make_event("track", userId="wes", event="Order Completed", at=clock.now_ms())]
    )
    services.worker.queues = every_queue
    advance(services, clock, HOUR)
    with services.db.read() as conn:
        states = conn.execute(text("SELECT template, state FROM outbox")).all()
    assert [tuple(row) for row in states] == [("promo", "cancelled")]
    go(services, "wes", "k")
    advance(services, clock, HOUR)
    with services.db.read() as conn:
        states = conn.execute(text("SELECT template, state FROM outbox ORDER BY id")).all()
    assert [tuple(row) for row in states] == [("promo", "cancelled"), ("promo-k", "sent")]
    assert held_reasons(services) == ["goal reached: Order Completed"]  # no frequency cap


def test_no_marketing_sms_on_a_french_public_holiday(
    services: Services, clock: SimulatedClock
) -> None:
    clock.set(datetime(2026, 11, 11, 9, 0, tzinfo=UTC))  # Armistice Day, a Wednesday
    publish(services, journey("j", "sms", "promo", if_held="drop"))
    opt_in(services, "vic")
    go(services, "vic", "j")
    advance(services, clock, HOUR)
    assert sent(services, "vic") == []
    assert held_reasons(services)[0].startswith("quiet hours")


def test_a_second_marketing_sms_within_7_days_is_deferred(
    services: Services, clock: SimulatedClock
) -> None:
    clock.set(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))  # Monday 10:00 in Paris
    publish(services, journey("a", "sms", "promo-a"))
    publish(services, journey("b", "sms", "promo-b"))
    opt_in(services, "una")
    go(services, "una", "a")
    advance(services, clock, HOUR)
    go(services, "una", "b")
    advance(services, clock, HOUR)
    assert sent(services, "una") == [("sms", "promo-a")]
    assert held_reasons(services) == ["frequency cap: 1 marketing message(s) per 168h on sms"]
    advance(services, clock, 7 * DAY, step=6 * HOUR)
    assert sent(services, "una") == [("sms", "promo-a"), ("sms", "promo-b")]


def test_a_fourth_marketing_message_in_a_local_day_waits_for_the_next_local_day(
    services: Services, clock: SimulatedClock
) -> None:
    """The shipped cap: at most 3 marketing messages per day in the customer's calendar,
    across all channels. The fourth, at 22:00 in Paris, waits for midnight in Paris."""
    clock.set(datetime(2026, 11, 23, 20, 0, tzinfo=UTC))  # Monday 21:00 in Paris
    for name in ("a", "b", "c", "d"):
        publish(services, journey(name, "email", f"promo-{name}"))
    opt_in(services, "lea")
    for name in ("a", "b", "c"):
        go(services, "lea", name)
    advance(services, clock, HOUR)
    go(services, "lea", "d")
    advance(services, clock, 10 * 60_000)
    assert [t for _, t in sent(services, "lea")] == ["promo-a", "promo-b", "promo-c"]
    assert held_reasons(services) == [
        "frequency cap: 3 marketing message(s) per local day on all channels"
    ]
    with services.db.read() as conn:
        held = conn.execute(
            text("SELECT payload FROM events WHERE name = 'Message Held'")
        ).scalar_one()
    midnight_paris = to_ms(datetime(2026, 11, 23, 23, 0, tzinfo=UTC))
    assert json.loads(held)["properties"]["until"] == midnight_paris
    advance(services, clock, 2 * HOUR)
    assert [t for _, t in sent(services, "lea")][-1] == "promo-d"


def test_the_same_content_never_goes_on_two_channels(
    services: Services, clock: SimulatedClock
) -> None:
    clock.set(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    publish(services, journey("a", "email", "spring-sale"))
    publish(services, journey("b", "push", "spring-sale"))
    opt_in(services, "tom")
    go(services, "tom", "a")
    go(services, "tom", "b")
    advance(services, clock, HOUR)
    assert sent(services, "tom") == [("email", "spring-sale")]
    assert held_reasons(services) == ["the same content (spring-sale) already went by email"]


def test_two_sends_racing_for_the_last_place_under_a_cap(
    services: Services, clock: SimulatedClock
) -> None:
    clock.set(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    publish(services, journey("a", "sms", "promo-a", if_held="drop"))
    publish(services, journey("b", "sms", "promo-b", if_held="drop"))
    opt_in(services, "sam")
    services.writer.append_sync(
        [
            make_event("track", userId="sam", event=f"Go {j}", at=clock.now_ms(), **PARIS)
            for j in ("a", "b")
        ]
    )
    services.worker.run_due()  # both runs enter and wait one minute
    clock.advance_ms(120_000)
    # Two workers take the two due sends at the same moment.
    workers = [Worker(services.db, clock, queues=("journeys",), batch=1) for _ in range(2)]
    for worker in workers:
        services.engine.register_jobs(worker)
    threads = [threading.Thread(target=w.run_due) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(sent(services, "sam")) == 1
    assert held_reasons(services) == ["frequency cap: 1 marketing message(s) per 168h on sms"]


def test_a_brand_file_tightens_the_shipped_rules(tmp_path: Path) -> None:
    brand = tmp_path / "policies.toml"
    brand.write_text(
        '[[caps]]\nchannel = "email"\npurpose = "marketing"\ncount = 1\nwindow = "2d"\n'
    )
    policies = Policies.load(brand)
    assert len(policies.caps) == len(Policies.load().caps) + 1
    brand.write_text('[[quiet_hours]]\ncountry = "BE"\nchannels = ["sms"]\n')
    with pytest.raises(PolicyError, match="quiet_hours rule 1: missing days"):
        Policies.load(brand)
