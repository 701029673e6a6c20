"""Journey semantics on the simulated clock: ids kept as written, waits from the entry
event's own time, event time deciding races, a measured control group, the brand's time
zone, refusals with their reason, and a trace that names each decision."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from litestar.testing import TestClient

from parcours import brand
from parcours.customers import profiles as customers
from parcours.journeys import versions as journeys
from parcours.runtime.clock import SimulatedClock, iso
from parcours.runtime.conditions import matches, normalise_key
from parcours.runtime.settings import Settings, SettingsError, load_settings
from parcours.services import Services
from tests.conftest import WRITE_KEY, admin_headers, make_event
from tests.test_journeys_engine import (
    CART,
    DAY,
    HOUR,
    MINUTE,
    advance,
    opt_in,
    publish,
    runs,
    sent,
    track,
)

BASIC = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}


def post_track(
    client: TestClient[Any], user: str, name: str, properties: dict[str, Any], at: int
) -> None:
    body = {
        "userId": user,
        "event": name,
        "properties": properties,
        "timestamp": iso(at),
    }
    response = client.post(
        "/v1/track",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **BASIC},
    )
    assert response.status_code == 200, response.text


def arrives(services: Services, user: str, name: str, occurred_at: int, **properties: Any) -> None:
    """An event dated `occurred_at` that reaches Parcours now (a phone back online)."""
    event = make_event(
        "track",
        userId=user,
        event=name,
        at=occurred_at,
        received_at=services.clock.now_ms(),
        properties=properties,
    )
    services.writer.append_sync([event])


def trace(client: TestClient[Any], user: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/customers/{user}/journeys", headers=admin_headers())
    assert response.status_code == 200, response.text
    history: list[dict[str, Any]] = response.json()["history"]
    return history


def stats(client: TestClient[Any], journey_id: str, version: int = 1) -> dict[str, Any]:
    response = client.get(
        f"/api/journeys/{journey_id}/versions/{version}/stats", headers=admin_headers()
    )
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


# ---- ids keep their exact string --------------------------------------------------------


def test_a_cart_id_keeps_its_leading_zeros_end_to_end(
    client: TestClient[Any], services: Services, clock: SimulatedClock
) -> None:
    publish(services, CART)
    opt_in(services, "ana")
    for cart in ("0100", "100"):
        post_track(
            client, "ana", "Checkout Started", {"checkout_id": cart, "total": 20}, clock.now_ms()
        )
    services.worker.run_due()
    assert sorted(r.key for r in runs(services, "ana")) == ["0100", "100"]
    # The order of cart 100 ends cart 100's reminders, not those of cart 0100.
    post_track(client, "ana", "Order Completed", {"checkout_id": "100"}, clock.now_ms())
    services.worker.run_due()
    by_key = {r.key: r for r in runs(services, "ana")}
    assert by_key["100"].state == "ended" and by_key["100"].converted is True
    assert by_key["0100"].state == "active" and by_key["0100"].converted is False
    advance(services, clock, HOUR)
    assert sent(services, "ana") == [("push", "cart-push")]  # cart 0100's, alone


def test_text_is_compared_as_written_and_numbers_as_json_writes_them() -> None:
    assert normalise_key("0100") == "0100"
    assert normalise_key(" 7") == " 7"
    assert normalise_key(100) == normalise_key(100.0) == normalise_key("100") == "100"
    scope = {"event": {"properties": {"sku": "100", "total": "100"}}}
    assert not matches([{"event.properties.sku": {"eq": "0100"}}], scope)
    assert not matches([{"event.properties.sku": {"in": ["0100", "1e2"]}}], scope)
    assert matches([{"event.properties.sku": {"in": ["0100", "100"]}}], scope)
    assert matches([{"event.properties.total": {"eq": 100}}], scope)  # a number: its value


# ---- waits count from the entry event's own time ------------------------------------------


def test_a_wait_counts_from_the_entry_events_own_time(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, CART)
    opt_in(services, "bea")
    started = clock.now_ms() - 30 * MINUTE  # stored now, done half an hour ago
    arrives(services, "bea", "Checkout Started", started, checkout_id="c-1", total=20)
    services.worker.run_due()
    assert runs(services, "bea")[0].entered_at == iso(started)
    assert runs(services, "bea")[0].until == iso(started + HOUR)
    advance(services, clock, 29 * MINUTE)
    assert sent(services, "bea") == []
    advance(services, clock, MINUTE)
    assert sent(services, "bea") == [("push", "cart-push")]


def test_waits_already_past_when_the_event_is_processed_go_on_at_once(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, CART)
    opt_in(services, "cal")
    started = clock.now_ms() - 2 * HOUR - MINUTE  # within the 24h lateness allowance
    arrives(services, "cal", "Checkout Started", started, checkout_id="c-2", total=20)
    services.worker.run_due()
    # The push (due an hour after the checkout) and the email (an hour after the push)
    # are both past: they go now, and the day's wait counts from the email's due time.
    assert sent(services, "cal") == [("push", "cart-push"), ("email", "cart-email")]
    run = runs(services, "cal")[0]
    assert run.waiting == "timer" and run.until == iso(started + 2 * HOUR + DAY)


# ---- event time decides races ------------------------------------------------------------

NUDGE = """\
id: nudge
name: Nudge
entry: {event: Checkout Started, key: properties.checkout_id}
steps:
  - wait_for: {event: Cart Viewed, key: properties.checkout_id, timeout: 1h, on_event: exit}
  - wait: 2h
  - id: nudge
    send: {channel: email, template: cart-nudge}
"""


def test_an_event_dated_before_the_timeout_wins_when_the_worker_is_behind(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, NUDGE)
    track(services, "dan", "Checkout Started", checkout_id="c-1")
    started = clock.now_ms()
    clock.advance_ms(HOUR + 10 * MINUTE)  # the worker is behind: nothing ran meanwhile
    arrives(services, "dan", "Cart Viewed", started + 59 * MINUTE, checkout_id="c-1")
    services.worker.run_due()  # the timeout is due first, the view's reaction after it
    run = runs(services, "dan")[0]
    assert run.state == "ended" and run.end_reason == "s1 ended the run"
    advance(services, clock, 3 * HOUR, step=10 * MINUTE)
    assert sent(services, "dan") == []


def test_an_event_dated_before_the_timeout_arriving_after_it_stops_the_message(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, NUDGE)
    track(services, "eve", "Checkout Started", checkout_id="c-2")
    started = clock.now_ms()
    advance(services, clock, HOUR + 10 * MINUTE)  # the timeout was taken at the hour
    assert runs(services, "eve")[0].waiting == "timer"
    arrives(services, "eve", "Cart Viewed", started + 50 * MINUTE, checkout_id="c-2")
    services.worker.run_due()
    run = runs(services, "eve")[0]
    assert run.state == "ended" and run.end_reason == "s1 ended the run"
    received = [p for name, p in trace_of(services, "eve") if name == "Journey Event Received"]
    assert [(p["step"], p["event"], p["after_timeout"]) for p in received] == [
        ("s1", "Cart Viewed", True)
    ]
    advance(services, clock, 3 * HOUR, step=10 * MINUTE)
    assert sent(services, "eve") == []


def test_an_event_dated_after_the_timeout_changes_nothing(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, NUDGE)
    track(services, "fay", "Checkout Started", checkout_id="c-3")
    started = clock.now_ms()
    advance(services, clock, HOUR + 10 * MINUTE)
    arrives(services, "fay", "Cart Viewed", started + 61 * MINUTE, checkout_id="c-3")
    # Another cart's view, dated in time, is not this cart's either.
    arrives(services, "fay", "Cart Viewed", started + 30 * MINUTE, checkout_id="c-4")
    advance(services, clock, 2 * HOUR, step=10 * MINUTE)
    assert sent(services, "fay") == [("email", "cart-nudge")]


def test_once_the_timeout_path_has_sent_a_late_event_no_longer_turns_the_run(
    services: Services, clock: SimulatedClock
) -> None:
    source = NUDGE.replace(
        "  - wait: 2h\n",
        "  - id: first\n    send: {channel: email, template: cart-first}\n  - wait: 2h\n",
    )
    publish(services, source)
    track(services, "gus", "Checkout Started", checkout_id="c-5")
    started = clock.now_ms()
    advance(services, clock, HOUR + 10 * MINUTE)
    assert sent(services, "gus") == [("email", "cart-first")]
    arrives(services, "gus", "Cart Viewed", started + 50 * MINUTE, checkout_id="c-5")
    advance(services, clock, 2 * HOUR, step=10 * MINUTE)
    assert sent(services, "gus") == [("email", "cart-first"), ("email", "cart-nudge")]


SHORT = """\
id: short
name: One push
entry: {event: Checkout Started, key: properties.checkout_id}
goals:
  - {event: Order Completed, key: properties.checkout_id}
steps:
  - wait: 1h
  - id: push
    send: {channel: push, template: short-push}
"""


def test_a_goal_dated_before_the_run_ended_is_its_conversion_even_arriving_after(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, SHORT)
    for user in ("hal", "ivy"):
        track(services, user, "Checkout Started", checkout_id=f"c-{user}")
    started = clock.now_ms()
    advance(services, clock, HOUR + 5 * MINUTE)
    assert [runs(services, u)[0].end_reason for u in ("hal", "ivy")] == ["completed"] * 2
    arrives(services, "hal", "Order Completed", started + 59 * MINUTE, checkout_id="c-hal")
    arrives(services, "ivy", "Order Completed", started + 61 * MINUTE, checkout_id="c-ivy")
    services.worker.run_due()
    assert runs(services, "hal")[0].converted is True
    assert runs(services, "ivy")[0].converted is False
    converted = [p for name, p in trace_of(services, "hal") if name == "Journey Converted"]
    assert [(p["goal"], p["control"], p["after_end"]) for p in converted] == [
        ("Order Completed", False, True)
    ]
    assert trace_of(services, "ivy")[-1][0] != "Journey Converted"


# ---- holdout members are measured ----------------------------------------------------------

HOLDOUT = """\
id: win-back
name: Win back
entry: {event: Checkout Started}
goals:
  - {event: Order Completed, window: 2d}
steps:
  - split:
      seed: wb-2026
      holdout: 50
      paths:
        - {weight: 1, steps: [{id: offer, send: {channel: email, template: wb-offer}}]}
"""


def test_the_control_group_is_measured_beside_the_treated_group(
    client: TestClient[Any], services: Services, clock: SimulatedClock
) -> None:
    publish(services, HOLDOUT)
    users = [f"w{n}" for n in range(12)]
    for user in users:
        track(services, user, "Checkout Started")
    control = {u for u in users if runs(services, u)[0].control}
    assert 0 < len(control) < len(users)
    for user in users:  # the control group receives nothing; the others the offer
        assert sent(services, user) == ([] if user in control else [("email", "wb-offer")])
        assert runs(services, user)[0].state == "ended"
    advance(services, clock, DAY, step=HOUR)
    buyers = set(users[:6])
    for user in users[:6]:  # within the window
        track(services, user, "Order Completed")
    advance(services, clock, DAY + HOUR, step=HOUR)
    for user in users[6:]:  # after it
        track(services, user, "Order Completed")
    counts = stats(client, "win-back")
    assert counts["control"] == {
        "entered": len(control),
        "converted": len(control & buyers),
    }
    assert counts["treated"] == {
        "entered": len(users) - len(control),
        "converted": len(buyers - control),
    }
    assert counts["converted"] == len(buyers)
    assert {u for u in users if runs(services, u)[0].converted} == buyers


# ---- a brand time zone ---------------------------------------------------------------------

MORNING = """\
id: morning
name: Good morning
entry: {event: Signed Up}
steps:
  - id: nine
    wait_until: {time: "09:00"}
  - id: hello
    send: {channel: email, template: hello}
"""


@pytest.fixture
def brand_services(settings: Settings, clock: SimulatedClock) -> Iterator[Services]:
    opened = Services.open(replace(settings, brand_timezone="America/New_York"), clock=clock)
    yield opened
    opened.close()


def signs_up_on_a_device_in(services: Services, user: str, zone: str) -> None:
    """`Signed Up` from a device that says its time zone (`context.timezone`)."""
    at = services.clock.now_ms()
    event = make_event("track", userId=user, event="Signed Up", at=at, context={"timezone": zone})
    services.writer.append_sync([event])
    services.worker.run_due()


def test_a_customer_without_a_time_zone_waits_in_the_brands(
    brand_services: Services, clock: SimulatedClock
) -> None:
    services = brand_services
    publish(services, MORNING)
    track(services, "joe", "Signed Up")  # no device zone, no country
    # 2026-09-21 14:13 UTC is 10:13 in New York: the next 09:00 there is 13:00 UTC tomorrow
    # (not 09:00 UTC, as before there was a brand time zone).
    assert runs(services, "joe")[0].until == "2026-09-22T13:00:00.000Z"
    waiting = [p for name, p in trace_of(services, "joe") if name == "Journey Waiting"]
    assert waiting[0]["time_zone"] == "America/New_York"
    assert waiting[0]["time_zone_reason"] == "no time zone is known for the customer: the brand's"
    # A customer whose device says Tokyo waits in Tokyo, and the trace says so.
    signs_up_on_a_device_in(services, "kim", "Asia/Tokyo")
    assert runs(services, "kim")[0].until == "2026-09-22T00:00:00.000Z"
    waiting = [p for name, p in trace_of(services, "kim") if name == "Journey Waiting"]
    assert waiting[0]["time_zone"] == "Asia/Tokyo"
    assert waiting[0]["time_zone_reason"] == "the customer's, from their device"


def _brand_zone(services: Services, zone: str | None) -> None:
    """The time zone saved as the console's Settings page saves it; None puts back the
    configuration's."""
    settings = services.settings
    defaults = brand.Defaults(
        settings.brand_name, settings.sector, settings.brand_timezone, settings.brand_locale
    )
    changes, reset = (
        (brand.Changes(timezone=zone), ()) if zone else (brand.Changes(), ("timezone",))
    )
    brand.save(services.db, defaults, changes, services.clock.now_ms(), reset=reset)


def test_local_times_follow_the_zone_set_on_the_settings_page(
    brand_services: Services, clock: SimulatedClock
) -> None:
    services = brand_services  # configured in New York
    publish(services, MORNING)
    track(services, "joe", "Signed Up")  # no device zone, no country
    assert runs(services, "joe")[0].until == "2026-09-22T13:00:00.000Z"  # 09:00 in New York
    _brand_zone(services, "Asia/Tokyo")
    # 14:13 UTC is 23:13 in Tokyo: the next 09:00 there is 00:00 UTC.
    track(services, "amy", "Signed Up")
    assert runs(services, "amy")[0].until == "2026-09-22T00:00:00.000Z"
    waiting = [p for name, p in trace_of(services, "amy") if name == "Journey Waiting"]
    assert waiting[0]["time_zone"] == "Asia/Tokyo"
    assert waiting[0]["time_zone_reason"] == "no time zone is known for the customer: the brand's"
    # A run already waiting keeps the moment it was given.
    assert runs(services, "joe")[0].until == "2026-09-22T13:00:00.000Z"
    # The customer's own zone still comes first.
    opt_in(services, "kim")
    signs_up_on_a_device_in(services, "kim", "Europe/Paris")
    assert runs(services, "kim")[0].until == "2026-09-22T07:00:00.000Z"  # 09:00 in Paris
    # The configuration's again once the brand's is put back.
    _brand_zone(services, None)
    track(services, "bea", "Signed Up")
    assert runs(services, "bea")[0].until == "2026-09-22T13:00:00.000Z"
    advance(services, clock, DAY)
    assert [sent(services, u) for u in ("amy", "kim", "joe", "bea")] == [[("email", "hello")]] * 4


RENEWAL = """\
id: renewal
name: Renewal
entry: {date_trait: renews_on, at: "09:00"}
steps:
  - id: before
    send: {channel: email, template: renewal-soon}
  - wait_until: {trait: renews_on, offset: 1d, at: "10:00"}
  - id: after
    send: {channel: email, template: renewal-done}
"""


def test_dates_of_traits_are_days_in_the_zone_set_on_the_settings_page(
    brand_services: Services, clock: SimulatedClock
) -> None:
    services = brand_services
    _brand_zone(services, "Asia/Tokyo")
    publish(services, RENEWAL)
    services.worker.run_due()
    opt_in(services, "ivy", renews_on="2026-09-23")
    services.worker.run_due()
    advance(services, clock, 3 * DAY, step=HOUR)
    [run] = runs(services, "ivy")
    assert run.entered_at == "2026-09-23T00:00:00.000Z"  # 09:00 in Tokyo, not in New York
    assert sent(services, "ivy") == [("email", "renewal-soon"), ("email", "renewal-done")]
    waiting = [p for name, p in trace_of(services, "ivy") if name == "Journey Waiting"]
    assert waiting[0]["until"] == "2026-09-24T01:00:00.000Z"  # 10:00 in Tokyo, a day on
    assert waiting[0]["time_zone"] == "Asia/Tokyo"


PUSH_NOW = """\
id: push-now
name: Push now
entry: {event: Signed Up}
steps:
  - id: push
    send: {channel: push, template: push-now}
"""


def test_quiet_hours_of_a_customer_without_a_time_zone_are_the_brands(
    brand_services: Services, clock: SimulatedClock
) -> None:
    services = brand_services
    publish(services, PUSH_NOW)
    clock.advance_ms(12 * HOUR)  # 02:13 UTC, 22:13 in New York: no marketing push there
    track(services, "liz", "Signed Up")
    assert sent(services, "liz") == []
    held = [p for name, p in trace_of(services, "liz") if name == "Message Held"]
    # Held till 08:00 in New York (EDT), 12:00 UTC; in UTC it would have been 08:00 UTC.
    assert [(p["reason"], p["until"]) for p in held] == [
        ("quiet hours (*:08:00-21:00) in America/New_York", "2026-09-22T12:00:00.000Z")
    ]


def test_the_brand_time_zone_setting_is_checked() -> None:
    assert load_settings({"PARCOURS_BRAND_TIMEZONE": "Europe/Paris"}).brand_timezone == (
        "Europe/Paris"
    )
    assert load_settings({}).brand_timezone == "UTC"
    with pytest.raises(SettingsError, match="brand_timezone must be an IANA time zone"):
        load_settings({"PARCOURS_BRAND_TIMEZONE": "Mars/Olympus_Mons"})


# ---- refusals leave a reason ---------------------------------------------------------------

ONCE = """\
id: once
name: Once
entry: {event: Signed Up, reentry: once}
steps:
  - id: hello
    send: {channel: email, template: once-hello}
"""

MONTHLY = """\
id: monthly
name: Monthly
entry: {event: Signed Up, reentry: once_per_period, period: 30d}
steps:
  - id: hello
    send: {channel: email, template: monthly-hello}
"""

PAUSED = """\
id: newsletter
name: Newsletter
entry: {event: Newsletter Joined}
steps:
  - id: hello
    send: {channel: email, template: newsletter-hello}
"""


def refusals(client: TestClient[Any], user: str) -> list[tuple[str, str, str]]:
    return [
        (h["properties"]["journey_id"], h["properties"]["reason"], h["properties"]["trigger"])
        for h in trace(client, user)
        if h["event"] == "Journey Entry Refused"
    ]


def test_every_refused_entry_says_why_in_the_trace_and_the_stats(
    client: TestClient[Any], services: Services, clock: SimulatedClock
) -> None:
    for source in (CART, ONCE, MONTHLY, PAUSED):
        publish(services, source)
    journeys.change_status(services.db, "newsletter", 1, "pause", "ben", clock.now_ms())
    services.worker.run_due()
    opt_in(services, "lea")
    track(services, "lea", "Checkout Started", checkout_id="c-1", total=20)
    track(services, "lea", "Checkout Started", checkout_id="c-1", total=20)  # active run
    old = clock.now_ms() - 25 * HOUR
    arrives(services, "lea", "Checkout Started", old, checkout_id="c-9", total=20)
    services.worker.run_due()
    track(services, "lea", "Signed Up")
    advance(services, clock, DAY)
    track(services, "lea", "Signed Up")  # once: never again; monthly: not within 30 days
    track(services, "lea", "Newsletter Joined")  # paused
    assert refusals(client, "lea") == [
        ("cart", "active run exists", "Checkout Started"),
        ("cart", "trigger too old", "Checkout Started"),
        ("monthly", "re-entry too soon", "Signed Up"),
        ("once", "already entered", "Signed Up"),
        ("newsletter", "journey paused", "Newsletter Joined"),
    ]
    assert stats(client, "cart")["refused"] == {"active run exists": 1, "trigger too old": 1}
    assert stats(client, "once")["refused"] == {"already entered": 1}
    assert stats(client, "monthly")["refused"] == {"re-entry too soon": 1}
    assert stats(client, "newsletter")["refused"] == {"journey paused": 1}
    assert sorted(r.journey_id for r in runs(services, "lea")) == ["cart", "monthly", "once"]


def test_a_history_import_writes_one_refusal_per_customer_and_counts_them(
    client: TestClient[Any], services: Services, clock: SimulatedClock
) -> None:
    publish(services, CART)
    opt_in(services, "max")
    old = clock.now_ms() - 30 * DAY
    services.writer.append_sync(
        [
            make_event(
                "track",
                userId="max",
                event="Checkout Started",
                at=old + n * HOUR,
                received_at=clock.now_ms(),
                properties={"checkout_id": f"h-{n}", "total": 20},
            )
            for n in range(5)
        ]
    )
    services.worker.run_due()
    assert refusals(client, "max") == [("cart", "trigger too old", "Checkout Started")]
    assert stats(client, "cart")["refused"] == {"trigger too old": 5}
    assert runs(services, "max") == []


# ---- the trace names each decision ---------------------------------------------------------


def test_the_trace_keeps_each_events_own_name(
    client: TestClient[Any], services: Services, clock: SimulatedClock
) -> None:
    publish(services, NUDGE)
    track(services, "ned", "Checkout Started", checkout_id="c-1")
    clock.advance_ms(10 * MINUTE)
    track(services, "ned", "Cart Viewed", checkout_id="c-1")
    history = trace(client, "ned")
    assert [h["event"] for h in history] == [
        "Journey Entered",
        "Journey Waiting",
        "Journey Event Received",
        "Journey Exited",
    ]
    assert history[2]["properties"]["event"] == "Cart Viewed"
    assert history[2]["properties"]["step"] == "s1"


def trace_of(services: Services, user: str) -> list[tuple[str, dict[str, Any]]]:
    """The customer's trace as (decision, properties), as the API shows it."""
    with services.db.read() as conn:
        history = journeys.trace(conn, customers.resolve(conn, user, "FR"))
    return [(h.event, h.properties) for h in history]
