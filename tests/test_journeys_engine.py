"""The journey engine on a simulated clock: entries, waits, keyed waits, goals, versions."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from parcours.customers import profiles as customers
from parcours.journeys import versions as journeys
from parcours.journeys.definition import WaitUntil
from parcours.journeys.engine import next_local_time
from parcours.messaging.outbox import intents_for
from parcours.runtime.clock import SimulatedClock, to_ms
from parcours.services import Services
from tests.conftest import define_templates, make_event

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR

CART = """\
id: cart
name: Abandoned cart
entry: {event: Checkout Started, key: properties.checkout_id}
goals:
  - {event: Order Completed, key: properties.checkout_id}
steps:
  - wait: 1h
  - id: push
    send: {channel: push, template: cart-push}
  - wait: 1h
  - id: email
    send: {channel: email, template: cart-email}
  - wait: 1d
  - branch:
      - when: {entry.properties.total: {gte: 150}}
        steps:
          - id: sms
            send: {channel: sms, template: cart-sms}
      - otherwise: []
"""


def publish(services: Services, source: str) -> None:
    define_templates(services, source)
    now = services.clock.now_ms()
    journeys.publish(services.db, source, editor="ana", approver="ben", now=now)


OPTED_IN = {"consent": {ch: {"marketing": True} for ch in ("email", "sms", "push", "whatsapp")}}


def contact_traits(user: str) -> dict[str, str]:
    """An email address, a French mobile number and a push token of this user's own."""
    digits = int(hashlib.sha256(user.encode()).hexdigest(), 16) % 10**8
    return {
        "email": f"{user}@example.com",
        "phone": f"+336{digits:08d}",
        "push_token": f"token-{user}",
    }


def opt_in(services: Services, user: str, **traits: Any) -> None:
    event = make_event(
        "identify",
        userId=user,
        at=services.clock.now_ms() - 1,
        traits={**OPTED_IN, **contact_traits(user), **traits},
    )
    services.writer.append_sync([event])


def track(services: Services, user: str, name: str, **properties: Any) -> None:
    clock = services.clock
    with services.db.read() as conn:
        try:
            customers.resolve(conn, user, "FR")
        except customers.CustomerNotFound:
            opt_in(services, user)
    event = make_event("track", userId=user, event=name, at=clock.now_ms(), properties=properties)
    services.writer.append_sync([event])
    services.worker.run_due()


def advance(
    services: Services, clock: SimulatedClock, milliseconds: int, step: int = MINUTE
) -> None:
    """Move time on in small steps, running due work at each, as a live worker would."""
    end = clock.now_ms() + milliseconds
    while clock.now_ms() < end:
        clock.advance_ms(min(step, end - clock.now_ms()))
        services.worker.run_due()


def sent(services: Services, user: str) -> list[tuple[str, str]]:
    with services.db.read() as conn:
        customer = customers.resolve(conn, user, "FR")
        return [(i["channel"], i["template"]) for i in intents_for(conn, customer)]


def runs(services: Services, user: str) -> list[journeys.RunView]:
    with services.db.read() as conn:
        return journeys.runs_of(conn, customers.resolve(conn, user, "FR"))


def test_high_value_cart_gets_push_then_email_then_sms(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, CART)
    track(services, "ana", "Checkout Started", checkout_id="c-1", total=180)
    assert sent(services, "ana") == []
    advance(services, clock, HOUR - MINUTE)
    assert sent(services, "ana") == []
    advance(services, clock, MINUTE)
    assert sent(services, "ana") == [("push", "cart-push")]
    advance(services, clock, HOUR)
    assert sent(services, "ana") == [("push", "cart-push"), ("email", "cart-email")]
    advance(services, clock, DAY, step=HOUR)
    assert sent(services, "ana")[-1] == ("sms", "cart-sms")
    assert runs(services, "ana")[0].state == "ended"
    assert runs(services, "ana")[0].end_reason == "completed"


def test_low_value_cart_gets_no_sms(services: Services, clock: SimulatedClock) -> None:
    publish(services, CART)
    track(services, "bo", "Checkout Started", checkout_id="c-2", total=40)
    advance(services, clock, 2 * DAY, step=HOUR)
    assert sent(services, "bo") == [("push", "cart-push"), ("email", "cart-email")]


def test_order_completed_ends_abandoned_cart_mid_wait(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, CART)
    track(services, "cy", "Checkout Started", checkout_id="c-3", total=200)
    advance(services, clock, 70 * MINUTE)
    assert sent(services, "cy") == [("push", "cart-push")]
    track(services, "cy", "Order Completed", checkout_id="c-3", order_id="o-3")
    run = runs(services, "cy")[0]
    assert run.state == "ended" and run.converted is True
    assert run.end_reason == "goal reached: Order Completed"
    advance(services, clock, 2 * DAY, step=HOUR)
    assert sent(services, "cy") == [("push", "cart-push")]


def test_an_order_just_before_the_push_is_due_ends_the_run_in_the_same_batch(
    services: Services, clock: SimulatedClock
) -> None:
    """The order's reaction and the run's due step are claimed together (the worker was
    behind): the step, whose run was read before the batch ran, must not send."""
    publish(services, CART)
    track(services, "cyd", "Checkout Started", checkout_id="c-9", total=200)
    clock.advance_ms(HOUR - 1000)
    order = make_event(
        "track",
        userId="cyd",
        event="Order Completed",
        at=clock.now_ms(),
        properties={"checkout_id": "c-9", "order_id": "o-9"},
    )
    services.writer.append_sync([order])  # not reacted to yet
    clock.advance_ms(1000)
    services.worker.run_due()  # the reaction (due first) and the push step, one batch
    run = runs(services, "cyd")[0]
    assert run.state == "ended" and run.converted is True
    assert sent(services, "cyd") == []


def test_an_order_for_another_cart_does_not_end_the_run(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, CART)
    track(services, "di", "Checkout Started", checkout_id="100", total=20)
    track(services, "di", "Order Completed", checkout_id="200")
    assert runs(services, "di")[0].state == "active"
    # The same cart written as a number is the same cart.
    track(services, "di", "Order Completed", checkout_id=100)
    assert runs(services, "di")[0].converted is True


def test_one_active_run_per_cart_and_a_resent_event_never_enters_twice(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, CART)
    event = make_event(
        "track",
        userId="ed",
        event="Checkout Started",
        at=clock.now_ms(),
        properties={"checkout_id": "c-5", "total": 10},
        messageId="dup-1",
    )
    services.writer.append_sync([event])
    services.writer.append_sync([event])
    track(services, "ed", "Checkout Started", checkout_id="c-5", total=10)
    track(services, "ed", "Checkout Started", checkout_id="c-6", total=10)
    keys = sorted(r.key for r in runs(services, "ed"))
    assert keys == ["c-5", "c-6"]


def test_history_never_enters(services: Services, clock: SimulatedClock) -> None:
    publish(services, CART)
    old = make_event(
        "track",
        userId="fa",
        event="Checkout Started",
        at=clock.now_ms() - 25 * HOUR,
        properties={"checkout_id": "old"},
    )
    services.writer.append_sync([old])
    services.worker.run_due()
    assert runs(services, "fa") == []


WAIT_FOR = """\
id: review
name: Review after delivery
entry: {event: Order Completed, key: properties.order_id}
steps:
  - wait_for:
      event: Shipment Delivered
      key: properties.order_id
      timeout: 10d
      then:
        - wait: 3d
        - id: ask
          send: {channel: email, template: review-request}
      on_timeout: exit
"""


def test_wait_for_event_keyed_to_the_order(services: Services, clock: SimulatedClock) -> None:
    publish(services, WAIT_FOR)
    track(services, "gi", "Order Completed", order_id="o-1")
    advance(services, clock, DAY, step=HOUR)
    track(services, "gi", "Shipment Delivered", order_id="o-2")  # another order
    assert runs(services, "gi")[0].waiting == "event"
    track(services, "gi", "Shipment Delivered", order_id="o-1")
    advance(services, clock, 3 * DAY, step=HOUR)
    assert sent(services, "gi") == [("email", "review-request")]


def test_wait_for_times_out(services: Services, clock: SimulatedClock) -> None:
    publish(services, WAIT_FOR)
    track(services, "ho", "Order Completed", order_id="o-9")
    advance(services, clock, 11 * DAY, step=6 * HOUR)
    run = runs(services, "ho")[0]
    assert run.state == "ended"
    assert "ended the run" in run.end_reason
    assert sent(services, "ho") == []


def test_an_event_before_the_wait_satisfies_it(services: Services, clock: SimulatedClock) -> None:
    source = WAIT_FOR.replace("steps:\n  - wait_for:", "steps:\n  - wait: 1h\n  - wait_for:")
    publish(services, source)
    track(services, "io", "Order Completed", order_id="o-4")
    track(services, "io", "Shipment Delivered", order_id="o-4")  # before the wait began
    advance(services, clock, HOUR + 3 * DAY, step=HOUR)
    assert sent(services, "io") == [("email", "review-request")]


def test_editing_a_live_journey_keeps_runs_on_their_version(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, CART)
    track(services, "jo", "Checkout Started", checkout_id="v1", total=10)
    publish(services, CART.replace("template: cart-push", "template: cart-push-v2"))
    track(services, "ka", "Checkout Started", checkout_id="v2", total=10)
    advance(services, clock, HOUR)
    assert sent(services, "jo") == [("push", "cart-push")]
    assert sent(services, "ka") == [("push", "cart-push-v2")]
    assert runs(services, "jo")[0].version == 1
    assert runs(services, "ka")[0].version == 2


def test_approval_must_come_from_another_person(services: Services) -> None:
    define_templates(services, CART)  # a version is submitted with its templates
    version = journeys.save_draft(services.db, CART, "ana", 0)
    journeys.change_status(services.db, "cart", version.version, "submit", "ana", 0)
    with pytest.raises(journeys.LifecycleError, match="another person must approve"):
        journeys.change_status(services.db, "cart", version.version, "approve", "ana", 0)
    with pytest.raises(journeys.LifecycleError, match="it is in_review"):
        journeys.change_status(services.db, "cart", version.version, "go_live", "ben", 0)


def test_nothing_runs_before_approval(services: Services, clock: SimulatedClock) -> None:
    journeys.save_draft(services.db, CART, "ana", 0)
    track(services, "lu", "Checkout Started", checkout_id="d", total=500)
    advance(services, clock, 2 * HOUR)
    assert runs(services, "lu") == [] and sent(services, "lu") == []


def test_split_is_stable_and_holds_out_a_control_group(
    services: Services, clock: SimulatedClock
) -> None:
    publish(
        services,
        """\
id: ab
name: A/B
entry: {event: Signed Up}
steps:
  - split:
      seed: ab-2026
      holdout: 20
      paths:
        - {name: a, weight: 50, steps: [{send: {channel: email, template: a}}]}
        - {name: b, weight: 50, steps: [{send: {channel: email, template: b}}]}
""",
    )
    outcomes = []
    for number in range(60):
        track(services, f"s{number}", "Signed Up")
        outcomes.append(tuple(t for _, t in sent(services, f"s{number}")))
    held = outcomes.count(())
    assert 4 <= held <= 24  # about 20% hold-out
    assert outcomes.count(("a",)) > 5 and outcomes.count(("b",)) > 5


def test_local_time_of_day_in_the_customer_zone_across_daylight_saving() -> None:
    paris = {"computed": {"timezone": "Europe/Paris"}}
    nine = WaitUntil(time="09:00")
    # The day before clocks go forward (Sunday 29 March 2026): 09:00 is 08:00 UTC ...
    before = to_ms(datetime(2026, 3, 28, 10, 0, tzinfo=UTC))
    assert next_local_time(before, nine, paris) == to_ms(datetime(2026, 3, 29, 7, 0, tzinfo=UTC))
    # ... and after it 09:00 is 07:00 UTC: still nine o'clock for the customer.
    skipped = WaitUntil(time="02:30")  # does not exist on 29 March in Paris
    night = to_ms(datetime(2026, 3, 28, 23, 0, tzinfo=UTC))
    assert next_local_time(night, skipped, paris) == to_ms(
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 local: moved forward by the gap
    )
    twice = WaitUntil(time="02:30")  # happens twice on 25 October 2026: the first one
    autumn = to_ms(datetime(2026, 10, 24, 23, 0, tzinfo=UTC))
    assert next_local_time(autumn, twice, paris) == to_ms(datetime(2026, 10, 25, 0, 30, tzinfo=UTC))


def test_weekday_waits_skip_to_an_allowed_day() -> None:
    tokyo = {"computed": {"timezone": "Asia/Tokyo"}}
    friday_evening = to_ms(datetime(2026, 11, 27, 12, 0, tzinfo=UTC))  # 21:00 in Tokyo
    spec = WaitUntil(time="10:00", weekdays=["mon"])
    assert next_local_time(friday_evening, spec, tokyo) == to_ms(
        datetime(2026, 11, 30, 1, 0, tzinfo=UTC)
    )


def test_the_survivor_s_trace_tells_why_the_merged_profile_s_run_ended(
    services: Services, clock: SimulatedClock
) -> None:
    """The newer of the two runs is the merged profile's: it is ended, and the line that
    says so moves to the survivor with the rest of its events."""
    publish(services, CART)
    opt_in(services, "mia")
    for ident in ({"userId": "mia"}, {"anonymousId": "phone"}):  # the phone's run is newer
        event = make_event(
            "track",
            event="Checkout Started",
            at=clock.now_ms(),
            properties={"checkout_id": "c-8", "total": 300},
            **ident,
        )
        services.writer.append_sync([event])
    services.worker.run_due()
    services.writer.append_sync(
        [make_event("identify", anonymousId="phone", userId="mia", at=clock.now_ms())]
    )
    services.worker.run_due()
    with services.db.read() as conn:
        trace = journeys.trace(conn, customers.resolve(conn, "mia", "FR"))
    exits = [d for d in trace if d.event == "Journey Exited"]
    assert [d.properties["reason"][:15] for d in exits] == ["profiles merged"]


def test_identity_merge_mid_journey_keeps_one_run_per_cart(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, CART)
    opt_in(services, "mia")
    # The same cart started on a phone (anonymous) and on a laptop (logged in).
    for ident in ({"anonymousId": "phone"}, {"userId": "mia"}):
        event = make_event(
            "track",
            event="Checkout Started",
            at=clock.now_ms(),
            properties={"checkout_id": "c-7", "total": 300},
            **ident,
        )
        services.writer.append_sync([event])
    services.worker.run_due()
    assert len(runs(services, "phone")) == 1 and len(runs(services, "mia")) == 1
    # Logging in on the phone proves they are one person.
    services.writer.append_sync(
        [make_event("identify", anonymousId="phone", userId="mia", at=clock.now_ms())]
    )
    services.worker.run_due()
    active = [r for r in runs(services, "mia") if r.state == "active"]
    ended = [r for r in runs(services, "mia") if r.state == "ended"]
    assert len(active) == 1 and len(ended) == 1
    assert ended[0].end_reason.startswith("profiles merged")
    advance(services, clock, 2 * DAY, step=HOUR)
    assert sent(services, "mia") == [
        ("push", "cart-push"),
        ("email", "cart-email"),
        ("sms", "cart-sms"),
    ]


def test_pause_holds_runs_where_they_stand_and_resume_releases_them(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, CART)
    track(services, "pia", "Checkout Started", checkout_id="p-1", total=10)
    journeys.change_status(services.db, "cart", 1, "pause", "ben", clock.now_ms())
    services.worker.run_due()
    advance(services, clock, 3 * HOUR)
    assert sent(services, "pia") == []  # held: the push due after 1 h did not go
    run = runs(services, "pia")[0]
    assert run.state == "active" and run.position == 0
    # Nobody enters a paused journey.
    track(services, "quy", "Checkout Started", checkout_id="p-2", total=10)
    assert runs(services, "quy") == []
    journeys.change_status(services.db, "cart", 1, "go_live", "ben", clock.now_ms())
    services.worker.run_due()
    assert sent(services, "pia") == [("push", "cart-push")]  # released, checked, sent


def test_archiving_stops_the_runs_with_a_reason(services: Services, clock: SimulatedClock) -> None:
    publish(services, CART)
    track(services, "rae", "Checkout Started", checkout_id="a-1", total=10)
    journeys.change_status(services.db, "cart", 1, "archive", "ben", clock.now_ms())
    services.worker.run_due()
    run = runs(services, "rae")[0]
    assert run.state == "ended" and run.end_reason == "journey stopped (archived)"
    advance(services, clock, 2 * HOUR)
    assert sent(services, "rae") == []


REORDER = """\
id: reorder
name: Replenishment
entry: {event: Order Completed}
steps:
  - wait_until: {trait: reorder_on, offset: -3d, at: "10:00"}
  - id: remind
    send: {channel: email, template: reorder-reminder}
"""


def set_trait(services: Services, user: str, **traits: Any) -> None:
    services.writer.append_sync(
        [make_event("identify", userId=user, at=services.clock.now_ms(), traits=traits)]
    )
    services.worker.run_due()


def set_trait_in_context(services: Services, user: str, **traits: Any) -> None:
    """Traits set by a track's `context.traits` (Segment's rule; how Parcours sets a
    customer's referral code)."""
    services.writer.append_sync(
        [
            make_event(
                "track",
                userId=user,
                event="Preferences Saved",
                at=services.clock.now_ms(),
                context={"traits": traits},
            )
        ]
    )
    services.worker.run_due()


@pytest.mark.parametrize("setter", [set_trait, set_trait_in_context])
def test_a_date_trait_wait_follows_the_trait(
    services: Services, clock: SimulatedClock, setter: Any
) -> None:
    publish(services, REORDER)
    opt_in(services, "ivy", reorder_on=iso_day(clock, 10))
    track(services, "ivy", "Order Completed", order_id="r1")
    run = runs(services, "ivy")[0]
    assert run.waiting == "trait"
    first_due = run.until
    # The trait moves later while the customer waits: the wait follows it.
    setter(services, "ivy", reorder_on=iso_day(clock, 20))
    assert runs(services, "ivy")[0].until > first_due
    advance(services, clock, 10 * DAY, step=6 * HOUR)
    assert sent(services, "ivy") == []
    advance(services, clock, 8 * DAY, step=6 * HOUR)
    assert sent(services, "ivy") == [("email", "reorder-reminder")]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "reorder_on is missing"),
        ("soon", "reorder_on is not a date: 'soon'"),
        ("2020-01-01", "the date in reorder_on has passed"),
    ],
)
def test_a_missing_or_past_date_never_fires_and_says_why(
    services: Services, clock: SimulatedClock, value: str | None, reason: str
) -> None:
    publish(services, REORDER)
    opt_in(services, "jay", **({"reorder_on": value} if value else {}))
    track(services, "jay", "Order Completed", order_id="r2")
    run = runs(services, "jay")[0]
    assert run.state == "ended" and run.end_reason == f"step s1: {reason}"
    assert sent(services, "jay") == []


def test_yearly_dates_and_29_february() -> None:
    from parcours.journeys.definition import WaitUntil
    from parcours.journeys.engine import trait_moment

    profile = {"traits": {"birthday": "2004-02-29"}, "computed": {"timezone": "Europe/Paris"}}
    spec = WaitUntil(trait="birthday", yearly=True, at="09:00")
    now = to_ms(datetime(2026, 1, 10, tzinfo=UTC))
    due, _ = trait_moment(profile, spec, now)
    assert due == to_ms(datetime(2026, 2, 28, 8, 0, tzinfo=UTC))  # 09:00 in Paris
    leap = to_ms(datetime(2028, 1, 10, tzinfo=UTC))
    assert trait_moment(profile, spec, leap)[0] == to_ms(datetime(2028, 2, 29, 8, 0, tzinfo=UTC))


def iso_day(clock: SimulatedClock, days: int) -> str:
    from parcours.runtime.clock import from_ms

    return from_ms(clock.now_ms() + days * DAY).date().isoformat()


def test_one_event_satisfies_one_wait_for_only(services: Services, clock: SimulatedClock) -> None:
    """Two waits for the same event need two events, and the entry event is not one."""
    publish(
        services,
        """\
id: twice
name: Twice
entry: {event: Viewed}
steps:
  - wait_for: {event: Viewed, timeout: 1d, on_timeout: exit}
  - wait_for: {event: Viewed, timeout: 1d, on_timeout: exit}
  - send: {channel: email, template: twice}
""",
    )
    track(services, "one", "Viewed")  # enters
    track(services, "one", "Viewed")  # the first wait
    advance(services, clock, 2 * DAY, step=HOUR)
    assert sent(services, "one") == []
    track(services, "three", "Viewed")
    track(services, "three", "Viewed")
    track(services, "three", "Viewed")
    assert sent(services, "three") == [("email", "twice")]


BIRTHDAY = """\
id: birthday
name: Birthday
entry: {date_trait: birthday, offset: -2d, at: "09:00", yearly: true}
steps:
  - send: {channel: email, template: birthday, purpose: marketing}
"""


def test_a_date_trait_entry_enters_each_customer_on_their_date(
    services: Services, clock: SimulatedClock
) -> None:
    paris = {"context": {"timezone": "Europe/Paris"}}
    # Known before the journey goes live: found by the scan when it does.
    opt_in(services, "old", birthday="1990-09-25")
    services.writer.append_sync([make_event("track", userId="old", event="Seen", **paris)])
    publish(services, BIRTHDAY)
    services.worker.run_due()
    # Told after it went live: scheduled when the trait arrives; and a date that moves.
    opt_in(services, "new", birthday="2001-09-24")
    opt_in(services, "moved", birthday="1985-09-24")
    services.worker.run_due()
    services.writer.append_sync(
        [make_event("identify", userId="moved", traits={"birthday": "1985-10-30"})]
    )
    services.worker.run_due()
    advance(services, clock, 3 * DAY, step=HOUR)  # to 24 September, 17:13 UTC
    assert sent(services, "old") == [("email", "birthday")]  # 23 September, 09:00 Paris
    assert sent(services, "new") == [("email", "birthday")]  # 22 September
    assert sent(services, "moved") == []  # now in October
    with services.db.read() as conn:
        runs_old = journeys.runs_of(conn, customers.resolve(conn, "old", "FR"))
        entered = min(r.entered_at for r in runs_old)
    assert entered == "2026-09-23T07:00:00.000Z"
    advance(services, clock, 40 * DAY, step=DAY)
    assert sent(services, "moved") == [("email", "birthday")]
    advance(services, clock, 330 * DAY, step=DAY)  # and again the next year
    assert sent(services, "old") == [("email", "birthday"), ("email", "birthday")]


AFTER_TIMEOUT = """\
id: after-timeout
name: After the timeout
entry: {event: Checkout Started, key: properties.checkout_id}
steps:
  - wait_for: {event: Cart Viewed, key: properties.checkout_id, timeout: 1h, on_event: exit}
  - id: act
    ACT
  - wait: 2h
  - id: nudge
    send: {channel: email, template: cart-nudge}
"""


@pytest.mark.parametrize(
    ("act", "effect"),
    [
        ("emit: {event: Nudge Planned}", "Nudge Planned"),
        ("update_profile: {add_tags: [nudged]}", None),
        ("task: {title: Call them, assignee: team:sales}", "Task Created"),
    ],
)
def test_once_the_timeout_path_has_emitted_a_late_event_no_longer_turns_the_run(
    services: Services, clock: SimulatedClock, act: str, effect: str | None
) -> None:
    """An emit, a profile update or a task is done once and for all, as a message is: a
    view dated before the wait's deadline that arrives after the run has done it no
    longer turns the run onto the view's path (which would have ended it here)."""
    publish(services, AFTER_TIMEOUT.replace("ACT", act))
    track(services, "lea", "Checkout Started", checkout_id="c-1")
    started = clock.now_ms()
    advance(services, clock, HOUR + 10 * MINUTE)  # timed out at the hour, and acted
    late_view = make_event(
        "track",
        userId="lea",
        event="Cart Viewed",
        at=started + 50 * MINUTE,
        received_at=clock.now_ms(),
        properties={"checkout_id": "c-1"},
    )
    services.writer.append_sync([late_view])
    advance(services, clock, 2 * HOUR, step=10 * MINUTE)
    assert sent(services, "lea") == [("email", "cart-nudge")]
    assert runs(services, "lea")[0].end_reason == "completed"
    with services.db.read() as conn:
        customer = customers.resolve(conn, "lea", "FR")
        history = journeys.trace(conn, customer)
        names = [
            row[0]
            for row in conn.execute(
                text("SELECT name FROM events WHERE customer_id = :c AND source = 'journey'"),
                {"c": customer},
            ).all()
        ]
        tags = customers.traits_view(conn, customer)[0].get("tags")
    assert [h.properties for h in history if h.event == "Journey Event Received"] == []
    assert names == [effect]  # done once
    if effect is None:
        assert tags == ["nudged"]


def test_a_burst_of_carts_waits_behind_the_reminders_due_before_it(
    services: Services, clock: SimulatedClock
) -> None:
    """A flash sale: 200 carts arrive at the moment 20 earlier carts' reminders fall due.
    The worker takes due work in the order it fell due, so every reminder already due
    goes out before the burst is entered, and the burst's own reminders follow an hour
    later, none forgotten (issue 19, bursts absorbed)."""
    publish(services, CART)
    early = [f"early-{n}" for n in range(20)]
    for user in early:
        opt_in(services, user)
    for n, user in enumerate(early):
        event = make_event(
            "track",
            userId=user,
            event="Checkout Started",
            at=clock.now_ms(),
            properties={"checkout_id": f"e-{n}", "total": 50},
        )
        services.writer.append_sync([event])
    services.worker.run_due()
    clock.advance_ms(HOUR)  # the 20 pushes are due now
    burst = [f"burst-{n}" for n in range(200)]
    for user in burst:
        opt_in(services, user)
    carts = [
        make_event(
            "track",
            userId=user,
            event="Checkout Started",
            at=clock.now_ms(),
            properties={"checkout_id": f"b-{n}", "total": 50},
        )
        for n, user in enumerate(burst)
    ]
    services.writer.append_sync(carts)
    assert services.worker.run_due(limit=len(early)) == len(early)
    assert all(sent(services, user) == [("push", "cart-push")] for user in early)
    assert all(runs(services, user) == [] for user in burst)  # not entered yet
    services.worker.run_due()
    assert all(runs(services, user)[0].state == "active" for user in burst)
    advance(services, clock, HOUR)
    assert all(sent(services, user) == [("push", "cart-push")] for user in burst)
    assert all(len(sent(services, user)) == 2 for user in early)


def test_a_consent_withdrawn_after_a_message_was_decided_stops_it_at_delivery(
    services: Services, clock: SimulatedClock
) -> None:
    """A message decided while the customer still consented, and withdrawn before delivery
    hands it over: delivery checks the consent in force again, and holds it, with the
    reason, on the customer's trace (issue 19: a withdrawal mid-batch still wins)."""
    from parcours.messaging import Intent, add_intent

    define_templates(services, CART)
    opt_in(services, "ana")
    with services.db.write() as conn:
        ana = customers.resolve(conn, "ana", "FR")
        intent = Intent("test:withdrawn:0", ana, "email", "cart-email", "marketing")
        assert add_intent(conn, intent, clock.now_ms(), {}, "ana@example.com") is not None
    withdrawal = {"consent": {"email": {"marketing": False}}}
    services.writer.append_sync(
        [make_event("identify", userId="ana", at=clock.now_ms(), traits=withdrawal)]
    )
    services.worker.run_due()
    with services.db.read() as conn:
        [message] = intents_for(conn, ana)
    assert (message["state"], message["sent_at"]) == ("cancelled", None)
    assert message["error"] == "no marketing consent for email (withdrawn)"


def test_a_set_reads_a_customers_consents_once_and_again_after_they_change(
    services: Services, clock: SimulatedClock
) -> None:
    """In a set of jobs, the consents read ahead are kept for every read of the set (a
    send reads them for its channel, then its policies again); a withdrawal projected in
    the same transaction is read, not the ledger read ahead."""
    from parcours.log import append_events
    from parcours.runtime.db import holding_writes, sql, stop_holding

    opt_in(services, "ana")
    withdrawal = {"consent": {"email": {"marketing": False}}}
    with services.db.write() as conn:
        ana = customers.resolve(conn, "ana", "FR")
        holding_writes(conn)
        try:
            customers.read_ahead_for_sends(conn, [ana])
            sql(conn, "DELETE FROM consents WHERE customer_id = :c", {"c": ana})
            first = customers.current_consents(conn, ana)
            again = customers.current_consents(conn, ana)  # kept: the rows deleted unseen
            event = make_event("identify", userId="ana", at=clock.now_ms(), traits=withdrawal)
            append_events(conn, [[event]], clock.now_ms(), services.reactions)
            after = customers.current_consents(conn, ana)
        finally:
            stop_holding(conn)
        conn.rollback()
    email = [(c.channel, c.purpose) for c in first if c.status == "granted"]
    assert ("email", "marketing") in email and again == first
    assert [(c.channel, c.purpose, c.status) for c in after] == [
        ("email", "marketing", "withdrawn")
    ]


def test_a_step_follows_a_merge_that_could_not_see_its_run(
    services: Services, clock: SimulatedClock
) -> None:
    """A run entered by a worker while the writer was storing the merge of its customer
    (not committed yet, so the merge's hooks did not move it) is moved to the survivor,
    with its job and messages, by its next step, whose message goes to the survivor."""
    publish(services, CART)
    opt_in(services, "ana")
    opt_in(services, "bo")
    track(services, "ana", "Checkout Started", checkout_id="c-1", total=40)
    with services.db.write() as conn:
        ana = customers.resolve(conn, "ana", "FR")
        bo = customers.resolve(conn, "bo", "FR")
        # The merge as stored when the run was not there to be seen: the profile only.
        conn.execute(
            text("UPDATE customers SET merged_into = :b WHERE id = :a"), {"a": ana, "b": bo}
        )
    advance(services, clock, HOUR)
    with services.db.read() as conn:
        [run] = journeys.runs_of(conn, bo)
        assert journeys.runs_of(conn, ana) == []
        pushed = [(i["customer_id"], i["channel"]) for i in intents_for(conn, bo)]
    assert run.state == "active" and pushed == [(bo, "push")]


def test_a_large_group_s_reactions_are_parts_that_keep_a_customer_s_events_together() -> None:
    """A group of more events than one reaction takes is split (several workers share
    the parts), each customer's events in one part, in their order."""
    from types import SimpleNamespace

    from parcours.journeys.engine import _parts_by_customer

    # Thirty customers, two events each (all thirty, then all thirty again).
    events: list[Any] = [SimpleNamespace(customer_id=n % 30, n=n) for n in range(60)]
    parts = _parts_by_customer(events, 10)
    assert [len(part) for part in parts] == [20, 20, 20]  # ten customers a part
    assert sorted(e.n for part in parts for e in part) == list(range(60))
    for customer in range(30):
        holding = [part for part in parts if any(e.customer_id == customer for e in part)]
        assert len(holding) == 1
        assert [e.n for e in holding[0] if e.customer_id == customer] == [
            customer,
            customer + 30,
        ]
    assert _parts_by_customer(events[:5], 10) == [events[:5]]
    assert _parts_by_customer([], 10) == []


def test_the_writer_takes_the_journeys_and_segments_defined_from_its_first_statement(
    postgres_url: str, tmp_path: Any
) -> None:
    """PostgreSQL: the reads the reactions registered to go ahead (the journeys and the
    segments defined) go with the writer's first statement, and each reaction takes its
    own: none is left over once the group is appended (a reaction reading another text
    than the one it registered would leave it there and read again), and the journey
    published takes the group's checkout."""
    from parcours.log import append_events
    from parcours.runtime.clock import SimulatedClock
    from parcours.runtime.db import hold_writes, transaction_note
    from parcours.runtime.settings import Settings
    from tests.conftest import START, truncate_all

    truncate_all(postgres_url)
    opened = Services.open(
        Settings(data_dir=tmp_path, database_url=postgres_url), clock=SimulatedClock(START)
    )
    try:
        publish(opened, CART)
        opt_in(opened, "noa")
        reactions = opened.writer._reactions
        assert len(reactions.reads_ahead) == 2
        checkout = make_event(
            "track",
            userId="noa",
            event="Checkout Started",
            at=opened.clock.now_ms(),
            properties={"checkout_id": "k-1", "total": 90},
        )
        with opened.db.write() as conn:
            hold_writes(conn)
            append_events(conn, [[checkout]], opened.clock.now_ms(), reactions)
            assert transaction_note(conn, "parcours_read_ahead") == {}
        opened.worker.run_due()  # journeys react through the queue
        assert [run.journey_id for run in runs(opened, "noa")] == ["cart"]
    finally:
        opened.close()
