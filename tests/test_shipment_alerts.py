"""Parcels Parcours notices itself (issue 21): `Shipment Stalled` once per silence of the
stall delay (48 hours by default), `Shipment Delayed` once per slip of the estimated
delivery, told apart from a carrier's own `delayed` report, and the ready-made journey
`shipment-delayed` that sends one message per slip. On the simulated clock, SQLite and
PostgreSQL (docs/commerce.md, "Stalled and delayed parcels")."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import text

from parcours import commerce
from parcours.commerce import shipment_alerts
from parcours.customers import profiles as customers
from parcours.messaging import templates as message_templates
from parcours.runtime.clock import SimulatedClock, iso
from parcours.runtime.queue import enqueue
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.conftest import event_properties, make_event
from tests.test_journeys_engine import DAY, HOUR, MINUTE, advance, opt_in, publish, sent, track

TEMPLATES = Path(__file__).resolve().parents[1] / "src/parcours/journeys/templates"
DELAYED_JOURNEY = (TEMPLATES / "shipment-delayed.yaml").read_text(encoding="utf-8")
STALLED_JOURNEY = (TEMPLATES / "shipment-stalled.yaml").read_text(encoding="utf-8")
OVERDUE_JOURNEY = (TEMPLATES / "shipment-overdue.yaml").read_text(encoding="utf-8")
STALL = 48 * HOUR  # the setting's default


def ship(
    services: Services, user: str, status: str, name: str = "Shipment Updated", **more: Any
) -> None:
    """A carrier's report of parcel s-1 of order o-1."""
    props = {"order_id": "o-1", "shipment_id": "s-1", "status": status, **more}
    track(services, user, name, **props)


def events(services: Services, user: str, name: str) -> list[dict[str, Any]]:
    """The properties of a customer's events of one name, in their order."""
    return event_properties(services, user, name)


def ours(services: Services, user: str, name: str) -> list[dict[str, Any]]:
    return [p for p in events(services, user, name) if p.get("detected_by") == "parcours"]


def stall_job(services: Services) -> int | None:
    """When the parcel's stall job is due (None: no job)."""
    with services.db.read() as conn:
        return conn.execute(
            text("SELECT run_at FROM jobs WHERE unique_key = :k"),
            {"k": shipment_alerts.job_key("s-1")},
        ).scalar()


def start(services: Services, user: str) -> None:
    opt_in(services, user)
    track(services, user, "Order Completed", order_id="o-1", total=80, currency="EUR")


# ---- stalled ------------------------------------------------------------------------------


def test_a_silence_past_the_delay_is_announced_once(
    services: Services, clock: SimulatedClock
) -> None:
    start(services, "ana")
    sent_at = clock.now_ms()
    ship(services, "ana", "in_transit", carrier="Colissimo", tracking_url="https://c.example/1")
    assert stall_job(services) == sent_at + STALL
    advance(services, clock, STALL - MINUTE, step=HOUR)
    assert ours(services, "ana", "Shipment Stalled") == []
    advance(services, clock, MINUTE)
    assert ours(services, "ana", "Shipment Stalled") == [
        {
            "shipment_id": "s-1",
            "detected_by": "parcours",
            "order_id": "o-1",
            "carrier": "Colissimo",
            "tracking_url": "https://c.example/1",
            "last_status": "in_transit",
            "last_report_at": iso(sent_at),
            "hours_silent": 48,
            "stalled_after_hours": 48,
            "stall_key": f"s-1:{sent_at}",
        }
    ]
    advance(services, clock, 4 * DAY, step=HOUR)  # still silent: said once
    assert len(ours(services, "ana", "Shipment Stalled")) == 1
    with services.db.read() as conn:  # no report of the parcel: its history is the carrier's
        found = commerce.shipment(conn, "s-1")
        assert found is not None and [scan.reported for scan in found.scans] == ["in_transit"]


def test_a_parcel_reported_before_its_order_is_watched_from_that_report(
    services: Services, clock: SimulatedClock
) -> None:
    """The carrier reports a parcel of an order that has not come (nobody to tell yet);
    the order comes ten hours later: the parcel is watched from its report, so its
    silence is announced once the delay has passed since that report (before, only its
    next report armed the watch, and a parcel that never had one was never announced)."""
    reported_at = clock.now_ms()
    report = make_event(
        event="Shipment Updated",
        identity_required=False,
        at=reported_at,
        received_at=reported_at,
        properties={"order_id": "o-1", "shipment_id": "s-1", "status": "in_transit"},
    )
    services.writer.append_sync([report])
    assert stall_job(services) is None  # no customer: nobody to tell
    advance(services, clock, 10 * HOUR, step=HOUR)
    start(services, "cy")
    assert stall_job(services) == reported_at + STALL
    advance(services, clock, STALL - 10 * HOUR - MINUTE, step=HOUR)
    assert ours(services, "cy", "Shipment Stalled") == []
    advance(services, clock, MINUTE)
    [stalled] = ours(services, "cy", "Shipment Stalled")
    assert (stalled["last_report_at"], stalled["hours_silent"]) == (iso(reported_at), 48)


def test_a_report_before_the_delay_says_nothing_and_a_new_silence_a_second_time(
    services: Services, clock: SimulatedClock
) -> None:
    start(services, "bo")
    ship(services, "bo", "in_transit")
    advance(services, clock, 40 * HOUR, step=HOUR)
    ship(services, "bo", "in_transit", location="Lyon")  # a scan: the silence starts again
    advance(services, clock, 40 * HOUR, step=HOUR)
    assert ours(services, "bo", "Shipment Stalled") == []
    advance(services, clock, 8 * HOUR, step=HOUR)
    assert [p["hours_silent"] for p in ours(services, "bo", "Shipment Stalled")] == [48]
    ship(services, "bo", "out_for_delivery")
    advance(services, clock, STALL, step=HOUR)
    stalled = ours(services, "bo", "Shipment Stalled")
    assert [p["last_status"] for p in stalled] == ["in_transit", "out_for_delivery"]


def test_a_delivered_parcel_is_not_stalled_and_its_job_goes(
    services: Services, clock: SimulatedClock
) -> None:
    start(services, "cy")
    ship(services, "cy", "in_transit")
    assert stall_job(services) is not None
    advance(services, clock, DAY, step=HOUR)
    ship(services, "cy", "delivered")
    assert stall_job(services) is None
    advance(services, clock, 4 * DAY, step=HOUR)
    assert ours(services, "cy", "Shipment Stalled") == []


def test_a_parcel_first_seen_delivered_has_no_job(
    services: Services, clock: SimulatedClock
) -> None:
    start(services, "di")
    ship(services, "di", "delivered")
    assert stall_job(services) is None


def test_the_job_run_twice_announces_the_silence_once(
    services: Services, clock: SimulatedClock
) -> None:
    start(services, "eve")
    ship(services, "eve", "in_transit")
    advance(services, clock, STALL, step=HOUR)
    assert len(ours(services, "eve", "Shipment Stalled")) == 1
    with services.db.write() as conn:  # as after a worker died before recording it done
        now = clock.now_ms()
        enqueue(
            conn,
            shipment_alerts.JOB,
            {"shipment": "s-1"},
            run_at=now,
            now=now,
            unique_key=shipment_alerts.job_key("s-1"),
        )
    services.worker.run_due()
    assert len(ours(services, "eve", "Shipment Stalled")) == 1


def test_an_erased_customer_s_job_goes_with_them(services: Services, clock: SimulatedClock) -> None:
    start(services, "fay")
    ship(services, "fay", "in_transit")
    assert stall_job(services) is not None
    erased = customers.erase(services.db, services.people, "fay", "FR", clock.now_ms(), "test")
    assert erased is not None
    assert stall_job(services) is None
    advance(services, clock, 3 * DAY, step=HOUR)  # nothing to run, nothing fails
    with services.db.read() as conn:
        assert commerce.shipment(conn, "s-1") is None


# ---- delayed ------------------------------------------------------------------------------


def estimate(day: int) -> dict[str, str]:
    """A window on the morning of the given day after the clock's start."""
    base = START_DAY + day * DAY
    return {
        "estimated_delivery_from": iso(base + 8 * HOUR),
        "estimated_delivery_to": iso(base + 12 * HOUR),
    }


START_DAY = 1_788_220_800_000  # 2026-09-01T00:00:00Z


def test_an_estimate_moved_later_is_announced_once_with_the_old_and_the_new(
    services: Services, clock: SimulatedClock
) -> None:
    start(services, "gus")
    ship(services, "gus", "in_transit", carrier="DPD", **estimate(3))
    ship(services, "gus", "in_transit", **estimate(3))  # the same again
    ship(services, "gus", "in_transit", location="Paris", **estimate(2))  # earlier: fine
    assert ours(services, "gus", "Shipment Delayed") == []
    ship(services, "gus", "in_transit", **estimate(4))
    delayed = ours(services, "gus", "Shipment Delayed")
    assert delayed == [
        {
            "shipment_id": "s-1",
            "detected_by": "parcours",
            "order_id": "o-1",
            "carrier": "DPD",
            "reason": "estimate_slipped",
            "delay_key": f"s-1:{START_DAY + 4 * DAY + 12 * HOUR}",
            "last_status": "in_transit",
            "previous_estimated_delivery_from": estimate(2)["estimated_delivery_from"],
            "previous_estimated_delivery_to": estimate(2)["estimated_delivery_to"],
            "estimated_delivery_from": estimate(4)["estimated_delivery_from"],
            "estimated_delivery_to": estimate(4)["estimated_delivery_to"],
            "delayed_hours": 48,
        }
    ]
    ship(services, "gus", "out_for_delivery", **estimate(4))  # the same estimate: nothing
    assert len(ours(services, "gus", "Shipment Delayed")) == 1


def test_a_carrier_s_delayed_report_is_not_parcours_delayed(
    services: Services, clock: SimulatedClock
) -> None:
    """Shopify's `delayed` arrives as a `Shipment Delayed` of its own: a report of the
    parcel (a scan), without `detected_by`; the slip it carries is Parcours'."""
    start(services, "hal")
    ship(services, "hal", "in_transit", **estimate(3))
    ship(services, "hal", "delayed", name="Shipment Delayed")  # no new estimate
    assert ours(services, "hal", "Shipment Delayed") == []
    ship(services, "hal", "delayed", name="Shipment Delayed", **estimate(5))
    everything = events(services, "hal", "Shipment Delayed")
    assert [p.get("detected_by") for p in everything] == [None, None, "parcours"]
    with services.db.read() as conn:
        found = commerce.shipment(conn, "s-1")
        assert found is not None
        assert [scan.reported for scan in found.scans] == ["in_transit", "delayed", "delayed"]


def test_a_parcel_delivered_with_a_later_date_is_not_delayed(
    services: Services, clock: SimulatedClock
) -> None:
    start(services, "ian")
    ship(services, "ian", "in_transit", **estimate(3))
    ship(services, "ian", "delivered", **estimate(4))
    assert ours(services, "ian", "Shipment Delayed") == []


# ---- the journey --------------------------------------------------------------------------


def test_the_ready_made_journey_sends_one_message_per_slip(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, DELAYED_JOURNEY)
    start(services, "jo")
    ship(services, "jo", "in_transit", **estimate(3))
    ship(services, "jo", "delayed", name="Shipment Delayed")  # the carrier's: no message
    advance(services, clock, HOUR)
    assert sent(services, "jo") == []
    ship(services, "jo", "in_transit", **estimate(4))
    ship(services, "jo", "in_transit", location="Lyon", **estimate(4))  # the same slip
    advance(services, clock, HOUR)
    assert sent(services, "jo") == [("whatsapp", "shipment-delayed")]
    ship(services, "jo", "in_transit", **estimate(6))  # a second slip: a second message
    advance(services, clock, HOUR)
    assert sent(services, "jo") == [("whatsapp", "shipment-delayed")] * 2


def test_the_ready_made_journey_asks_the_team_and_tells_the_customer_once_per_silence(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, STALLED_JOURNEY)
    start(services, "lu")
    ship(services, "lu", "in_transit", carrier="DPD")
    advance(services, clock, STALL - HOUR, step=HOUR)
    assert sent(services, "lu") == [] and events(services, "lu", "Task Created") == []
    advance(services, clock, 2 * HOUR, step=HOUR)
    assert sent(services, "lu") == [("email", "shipment-stalled")]
    [task] = events(services, "lu", "Task Created")
    assert (task["title"], task["assignee"]) == (
        "Chase the carrier: a parcel without news",
        "team:care",
    )
    advance(services, clock, 3 * DAY, step=HOUR)  # the same silence: nothing more
    assert sent(services, "lu") == [("email", "shipment-stalled")]
    ship(services, "lu", "in_transit", location="Lyon")  # news, then a second silence
    advance(services, clock, STALL + HOUR, step=HOUR)
    assert sent(services, "lu") == [("email", "shipment-stalled")] * 2
    assert len(events(services, "lu", "Task Created")) == 2


def message_context(name: str, first_name: str, **properties: Any) -> dict[str, Any]:
    """What a shipment message's template reads: the customer, commerce's event about the
    parcel of order o-1 (carried by DPD, unless told), the brand and the tracking link."""
    return {
        "customer": {"first_name": first_name},
        "event": {
            "event": name,
            "properties": {"order_id": "o-1", "carrier": "DPD", **properties},
        },
        "brand": {"name": "Maison", "url": "https://shop.example"},
        "links": {"shop": "https://shop.example", "tracking": "https://p.example/o/TOKEN"},
        "message": {"channel": "sms", "purpose": "transactional"},
        "cart": None,
        "order": None,
    }


def test_the_stalled_message_in_english_and_french() -> None:
    context = message_context(
        "Shipment Stalled", "Lu", last_report_at="2026-09-03T12:00:00.000Z", hours_silent=48
    )
    template = message_templates.shipped()["shipment-stalled"]
    assert template.channels() == {"sms", "email"}
    french = message_templates.render(template, "email", context, "fr", "en")
    assert french.fields["subject"] == "Nous veillons sur votre colis"
    assert "(commande o-1) n'a pas de nouvelles du transporteur (DPD)" in french.fields["text"]
    assert "depuis le 3 septembre 2026" in french.fields["text"]
    sms = message_templates.render(template, "sms", context, "en", "en")
    assert "no news from the carrier (DPD) for 48 hours" in sms.fields["text"]
    assert "https://p.example/o/TOKEN" in sms.fields["text"]


def test_the_message_names_both_days_in_english_and_french() -> None:
    context = message_context(
        "Shipment Delayed",
        "Ana",
        previous_estimated_delivery_to="2026-09-03T12:00:00.000Z",
        estimated_delivery_to="2026-09-05T12:00:00.000Z",
    )
    template = message_templates.shipped()["shipment-delayed"]
    assert template.channels() == {"whatsapp", "sms", "email"}
    for locale in ("en", "fr"):
        for channel in ("sms", "email"):
            rendered = message_templates.render(template, channel, context, locale, "en")
            words = " ".join(str(value) for value in rendered.fields.values())
            assert "https://p.example/o/TOKEN" in words, (locale, channel)
    sms = message_templates.render(template, "sms", context, "fr", "en")
    assert "(commande o-1) a du retard (DPD)" in sms.fields["text"]
    assert "5 septembre 2026 au lieu du 3 septembre 2026" in sms.fields["text"]
    english = message_templates.render(template, "sms", context, "en", "en")
    assert (
        "now expected on September 5, 2026 instead of September 3, 2026" in (english.fields["text"])
    )


def test_the_delay_is_the_brand_s_setting(settings: Settings, clock: SimulatedClock) -> None:
    opened = Services.open(replace(settings, shipment_stalled_after_hours=6), clock=clock)
    try:
        start(opened, "kim")
        ship(opened, "kim", "in_transit")
        advance(opened, clock, 6 * HOUR - MINUTE, step=HOUR)
        assert ours(opened, "kim", "Shipment Stalled") == []
        advance(opened, clock, MINUTE)
        assert [p["stalled_after_hours"] for p in ours(opened, "kim", "Shipment Stalled")] == [6]
    finally:
        opened.close()


# ---- overdue ------------------------------------------------------------------------------


def expected_by(services: Services, hours: int) -> dict[str, str]:
    """A window of two hours ending `hours` from now."""
    end = services.clock.now_ms() + hours * HOUR
    return {"estimated_delivery_from": iso(end - 2 * HOUR), "estimated_delivery_to": iso(end)}


def overdue_job(services: Services) -> int | None:
    """When the parcel's overdue job is due (None: no job)."""
    with services.db.read() as conn:
        return conn.execute(
            text("SELECT run_at FROM jobs WHERE unique_key = :k"),
            {"k": shipment_alerts.overdue_key("s-1")},
        ).scalar()


def test_an_estimate_that_passes_before_delivery_is_announced_once(
    services: Services, clock: SimulatedClock
) -> None:
    start(services, "lea")
    window = expected_by(services, 30)
    ship(services, "lea", "in_transit", carrier="GLS", **window)
    end = clock.now_ms() + 30 * HOUR
    assert overdue_job(services) == end
    advance(services, clock, 30 * HOUR - MINUTE, step=HOUR)
    assert ours(services, "lea", "Shipment Overdue") == []
    ship(services, "lea", "in_transit", location="Lyon", **window)  # on its way, same day
    advance(services, clock, 2 * MINUTE)
    [overdue] = ours(services, "lea", "Shipment Overdue")
    assert overdue == {
        "shipment_id": "s-1",
        "detected_by": "parcours",
        "order_id": "o-1",
        "carrier": "GLS",
        "reason": "estimate_passed",
        "overdue_key": f"s-1:{end}",
        "last_status": "in_transit",
        "estimated_delivery_from": window["estimated_delivery_from"],
        "estimated_delivery_to": window["estimated_delivery_to"],
        "hours_overdue": 0,
    }
    advance(services, clock, 3 * DAY, step=HOUR)  # still not delivered: said once
    assert len(ours(services, "lea", "Shipment Overdue")) == 1
    # A new estimate that passes too is a second announcement (and its slip a delay).
    ship(services, "lea", "in_transit", **expected_by(services, 5))
    assert len(ours(services, "lea", "Shipment Delayed")) == 1
    advance(services, clock, 6 * HOUR, step=HOUR)
    assert len(ours(services, "lea", "Shipment Overdue")) == 2


def test_a_parcel_delivered_or_given_a_later_day_in_time_is_not_overdue(
    services: Services, clock: SimulatedClock
) -> None:
    start(services, "max")
    ship(services, "max", "in_transit", **expected_by(services, 10))
    ship(services, "max", "in_transit", **expected_by(services, 40))  # moved later in time
    assert overdue_job(services) == clock.now_ms() + 40 * HOUR
    advance(services, clock, 20 * HOUR, step=HOUR)
    assert ours(services, "max", "Shipment Overdue") == []
    ship(services, "max", "delivered")
    assert overdue_job(services) is None
    advance(services, clock, 2 * DAY, step=HOUR)
    assert ours(services, "max", "Shipment Overdue") == []


def test_a_day_without_a_time_is_over_at_its_end(services: Services, clock: SimulatedClock) -> None:
    """`estimated_delivery_at: 2026-09-24` (a carrier's day): late once that day is over,
    not from its first minute."""
    start(services, "noe")
    day = iso(clock.now_ms() + 3 * DAY)[:10]
    ship(services, "noe", "in_transit", estimated_delivery_at=day)
    day_start = START_DAY + (clock.now_ms() + 3 * DAY - START_DAY) // DAY * DAY
    assert overdue_job(services) == day_start + DAY - 1
    with services.db.read() as conn:
        found = commerce.shipment(conn, "s-1")
    assert found is not None and found.estimated_to == day_start + DAY - 1


def test_the_overdue_journey_sends_one_message_and_says_the_day_in_english_and_french(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, OVERDUE_JOURNEY)
    start(services, "ola")
    ship(services, "ola", "in_transit", **expected_by(services, 2))
    advance(services, clock, 3 * HOUR, step=HOUR)
    assert sent(services, "ola") == [("whatsapp", "shipment-overdue")]
    context = message_context(
        "Shipment Overdue", "Ola", carrier="GLS", estimated_delivery_to="2026-09-05T12:00:00.000Z"
    )
    template = message_templates.shipped()["shipment-overdue"]
    assert template.channels() == {"whatsapp", "sms", "email"}
    english = message_templates.render(template, "sms", context, "en", "en").fields["text"]
    assert "(order o-1) was expected by September 5, 2026 and has not arrived yet" in english
    french = message_templates.render(template, "email", context, "fr", "en")
    assert "attendu au plus tard le 5 septembre 2026" in french.fields["text"]
    assert "https://p.example/o/TOKEN" in french.fields["text"]
