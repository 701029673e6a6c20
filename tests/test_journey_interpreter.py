"""The journey interpreter without a database: a compiled journey, a run's state, the clock
and what it is told about the customer in, decisions out."""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from parcours.journeys import interpreter
from parcours.journeys.decisions import (
    CallWebhook,
    Consume,
    Decision,
    Emit,
    Exit,
    ForgetTimeout,
    Held,
    HoldOut,
    Log,
    Move,
    RememberTimeout,
    Save,
    Schedule,
    Send,
    Wait,
)
from parcours.journeys.definition import load_journey
from parcours.journeys.program import Program, compile_journey
from parcours.journeys.runs import LoggedEvent, Run, conversion_after_end
from parcours.runtime.clock import to_ms

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
ENTERED = to_ms(datetime(2026, 11, 23, 10, 0, tzinfo=UTC))  # a Monday


def program_of(source: str) -> Program:
    return compile_journey(load_journey(source), version=1)


def run_of(program: Program, **state: Any) -> Run:
    entry = {"event": "Checkout Started", "properties": {"checkout_id": "c-1", "total": 180}}
    fields: dict[str, Any] = {
        "id": 7,
        "journey_id": program.journey.id,
        "version": 1,
        "customer_id": 42,
        "run_key": "c-1",
        "pc": 0,
        "waiting": None,
        "wait_event": None,
        "wait_key": None,
        "due_at": None,
        "entered_at": ENTERED,
        "entry_event": entry,
        "entry_message_id": "m-entry",
    }
    return Run(**{**fields, **state})


def logged(seq: int, name: str, at: int, message_id: str = "", **properties: Any) -> LoggedEvent:
    document = {"type": "track", "event": name, "properties": properties}
    return LoggedEvent(seq, message_id or f"m-{seq}", 42, name, at, msgspec.json.encode(document))


@dataclass
class Plan:
    """What the policies answer, as messaging.choice.Plan has it."""

    channel: str | None = None
    address: str | None = None
    rest: list[str] = field(default_factory=list)
    passed: list[dict[str, Any]] = field(default_factory=list)
    scores: dict[str, int] = field(default_factory=dict)
    retry_at: int | None = None

    @property
    def reason(self) -> str:
        return "; ".join(str(p["reason"]) for p in self.passed)


@dataclass
class Facts:
    """The customer as the tests tell it; counts what was asked."""

    traits: dict[str, Any] = field(default_factory=dict)
    timezone: str | None = None
    memberships: dict[str, bool] = field(default_factory=dict)
    log: list[LoggedEvent] = field(default_factory=list)
    plan: Plan | str = field(default_factory=lambda: Plan("email", "ana@example.com"))
    asked: list[str] = field(default_factory=list)

    def profile(self) -> dict[str, Any]:
        self.asked.append("profile")
        computed = {"timezone": self.timezone, "timezone_source": "country"}
        return {"traits": self.traits, "computed": computed if self.timezone else {}}

    def segments(self) -> dict[str, bool]:
        self.asked.append("segments")
        return self.memberships

    def events_since(self, name: str, since: int, before: int, after_seq: int) -> list[LoggedEvent]:
        return [
            e
            for e in self.log
            if e.name == name and since <= e.occurred_at < before and e.seq > after_seq
        ]

    def ending_events(self, names: frozenset[str], since: int) -> list[LoggedEvent]:
        return [e for e in self.log if e.name in names and e.occurred_at >= since]

    def plan_send(self, send: Any) -> Any:
        self.asked.append(f"plan {send.template}")
        return self.plan


def apply(run: Run, decisions: list[Decision]) -> None:
    """What the runner does to the run itself, in memory."""
    for decision in decisions:
        match decision:
            case Move(pc):
                run.pc, run.waiting, run.wait_event, run.wait_key, run.due_at = (
                    pc,
                    None,
                    None,
                    None,
                    None,
                )
            case Wait(kind, until, event, key):
                run.waiting, run.due_at, run.wait_event, run.wait_key = kind, until, event, key
            case Consume(seq):
                run.consumed_seq = seq
            case RememberTimeout(pc, until):
                run.race_pc, run.race_until = pc, until
            case HoldOut():
                run.control = True


def drive(
    program: Program, run: Run, facts: Facts, now: int, logical: int | None = None
) -> list[Decision]:
    """Run the run's instructions until it waits or ends, as the runner does."""
    logical = run.entered_at if logical is None else logical
    decisions: list[Decision] = []
    while True:
        outcome = interpreter.execute(
            program, run, program.at(run.pc), facts, now=now, logical=logical
        )
        decisions += outcome.decisions
        apply(run, outcome.decisions)
        if outcome.go_on is None:
            return decisions
        logical = outcome.go_on


def logs(decisions: list[Decision]) -> list[tuple[str, dict[str, Any]]]:
    return [(d.name, d.details) for d in decisions if isinstance(d, Log)]


CART = """\
id: cart
name: Abandoned cart
entry: {event: Checkout Started, key: properties.checkout_id}
goals:
  - {event: Order Completed, key: properties.checkout_id, window: 7d}
exits:
  - {event: Unsubscribed}
steps:
  - wait: 1h
  - id: email
    send: {channel: email, template: cart-email}
  - wait: 1d
  - branch:
      - when: {entry.properties.total: {gte: 150}}
        steps:
          - id: sms
            send: {channel: sms, template: cart-sms}
      - otherwise:
          - exit: {reason: small cart}
"""


def test_the_interpreter_needs_no_database() -> None:
    tree = ast.parse(inspect.getsource(interpreter))
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any("sqlalchemy" in name or name.endswith(".store") for name in imported)


def test_a_wait_counts_from_the_entry_and_schedules_its_end() -> None:
    cart = program_of(CART)
    run = run_of(cart)
    decisions = drive(cart, run, Facts(), now=ENTERED + MINUTE)
    assert decisions == [
        Wait("timer", ENTERED + HOUR),
        Log("Journey Waiting", {"step": "s1", "until": ENTERED + HOUR}),
        Schedule(ENTERED + HOUR),
    ]
    assert (run.pc, run.waiting, run.due_at) == (0, "timer", ENTERED + HOUR)


def test_a_timer_not_yet_due_only_puts_its_job_back() -> None:
    cart = program_of(CART)
    run = run_of(cart, waiting="timer", due_at=ENTERED + HOUR)
    outcome = interpreter.execute(
        cart, run, cart.at(0), Facts(), now=ENTERED + 30 * MINUTE, logical=ENTERED
    )
    assert outcome.decisions == [Schedule(ENTERED + HOUR)]
    assert outcome.go_on is None


def test_the_send_after_the_wait_queues_a_message_with_its_idempotency_key() -> None:
    cart = program_of(CART)
    run = run_of(cart, waiting="timer", due_at=ENTERED + HOUR)
    decisions = drive(cart, run, Facts(), now=ENTERED + HOUR, logical=ENTERED + HOUR)
    details = {"step": "email", "channel": "email", "template": "cart-email"}
    assert decisions[:3] == [
        Move(1),
        Send(
            "run:7:email:0",
            "email",
            "cart-email",
            "marketing",
            "email",
            "ana@example.com",
            {
                "rest": [],
                "if_held": "defer",
                "success": "delivered",
                "fallback_after": None,
                "event": run.entry_event,
            },
        ),
        Log(
            "Message Queued",
            {**details, "purpose": "marketing", "idempotency_key": "run:7:email:0"},
        ),
    ]
    # The next wait counts from the moment the first one was due.
    assert decisions[3:] == [
        Move(2),
        Wait("timer", ENTERED + HOUR + DAY),
        Log("Journey Waiting", {"step": "s3", "until": ENTERED + HOUR + DAY}),
        Schedule(ENTERED + HOUR + DAY),
    ]


def test_chained_waits_catch_up_in_order_after_downtime() -> None:
    cart = program_of(CART)
    run = run_of(cart)
    facts = Facts()
    decisions = drive(cart, run, facts, now=ENTERED + 3 * DAY)  # the worker was down
    waits = [details["until"] for name, details in logs(decisions) if name == "Journey Waiting"]
    assert waits == [ENTERED + HOUR, ENTERED + HOUR + DAY]
    assert [d.template for d in decisions if isinstance(d, Send)] == ["cart-email", "cart-sms"]
    assert decisions[-1] == Exit("completed")


def test_a_branch_takes_the_first_arm_that_holds_else_otherwise() -> None:
    cart = program_of(CART)
    big = run_of(cart, pc=3)
    decisions = drive(cart, big, Facts(), now=ENTERED + 2 * DAY)
    assert logs(decisions)[0] == ("Journey Branched", {"step": "s4", "arm": 1})
    assert [d.template for d in decisions if isinstance(d, Send)] == ["cart-sms"]

    small = run_of(cart, pc=3, entry_event={"properties": {"checkout_id": "c-2", "total": 20}})
    decisions = drive(cart, small, Facts(), now=ENTERED + 2 * DAY)
    assert decisions == [
        Log("Journey Branched", {"step": "s4", "arm": "otherwise"}),
        Move(cart.at(3).otherwise or 0),
        Exit("small cart"),
    ]


def test_a_branch_reads_memberships_only_when_a_condition_names_a_segment() -> None:
    vip = program_of(
        """\
id: vip
name: VIP
entry: {event: Signed Up}
steps:
  - branch:
      - when: {segment.vip: {eq: true}}
        steps: [{exit: {reason: vip}}]
      - when: {profile.traits.plan: {eq: pro}}
        steps: [{exit: {reason: pro}}]
      - otherwise: [{exit: {reason: other}}]
"""
    )
    facts = Facts(traits={"plan": "pro"}, memberships={"vip": False})
    assert drive(vip, run_of(vip), facts, now=ENTERED)[-1] == Exit("pro")
    assert facts.asked == ["profile", "segments"]
    facts = Facts(memberships={"vip": True})
    assert drive(vip, run_of(vip), facts, now=ENTERED)[-1] == Exit("vip")

    plain = program_of(CART)
    facts = Facts()
    drive(plain, run_of(plain, pc=3), facts, now=ENTERED + 2 * DAY)
    assert "segments" not in facts.asked


def test_a_goal_within_its_window_ends_the_run_as_a_conversion() -> None:
    cart = program_of(CART)
    run = run_of(cart, waiting="timer", due_at=ENTERED + HOUR)
    order = logged(9, "Order Completed", ENTERED + 10 * MINUTE, checkout_id="c-1")
    decisions = interpreter.on_event(cart, run, order, order.document(), ENTERED + 11 * MINUTE)
    assert decisions == [Exit("goal reached: Order Completed", converted=True, stop_messages=True)]


def test_a_goal_after_its_window_ends_the_run_without_converting() -> None:
    cart = program_of(CART)
    run = run_of(cart, waiting="timer", due_at=ENTERED + 9 * DAY)
    late = logged(9, "Order Completed", ENTERED + 8 * DAY, checkout_id="c-1")
    decisions = interpreter.on_event(cart, run, late, late.document(), ENTERED + 8 * DAY)
    assert decisions == [
        Exit("goal reached: Order Completed (after its window)", stop_messages=True)
    ]


def test_a_goal_for_another_cart_or_before_entry_changes_nothing() -> None:
    cart = program_of(CART)
    run = run_of(cart, waiting="timer", due_at=ENTERED + HOUR)
    other = logged(9, "Order Completed", ENTERED + MINUTE, checkout_id="c-2")
    assert interpreter.on_event(cart, run, other, other.document(), ENTERED + MINUTE) == []
    before = logged(3, "Order Completed", ENTERED - MINUTE, checkout_id="c-1")
    assert interpreter.on_event(cart, run, before, before.document(), ENTERED + MINUTE) == []


def test_a_goal_after_the_run_ended_converts_it_within_the_window_only() -> None:
    cart = program_of(CART)
    run = run_of(cart)
    order = logged(9, "Order Completed", ENTERED + 3 * DAY, checkout_id="c-1")
    goal = conversion_after_end(
        cart.journey, run, order.name, order.document(), order.occurred_at, ENTERED + DAY
    )
    assert goal is not None and goal.event == "Order Completed"
    late = logged(10, "Order Completed", ENTERED + 8 * DAY, checkout_id="c-1")
    assert (
        conversion_after_end(
            cart.journey, run, late.name, late.document(), late.occurred_at, ENTERED + DAY
        )
        is None
    )


def test_an_exit_event_ends_the_run_with_its_reason() -> None:
    cart = program_of(CART)
    run = run_of(cart, waiting="timer", due_at=ENTERED + HOUR)
    leave = logged(9, "Unsubscribed", ENTERED + MINUTE)
    assert interpreter.on_event(cart, run, leave, leave.document(), ENTERED + MINUTE) == [
        Exit("exit condition: Unsubscribed", stop_messages=True)
    ]


def test_an_order_already_in_the_log_stops_the_send() -> None:
    cart = program_of(CART)
    run = run_of(cart, pc=1)
    facts = Facts(log=[logged(9, "Order Completed", ENTERED + 50 * MINUTE, checkout_id="c-1")])
    decisions = drive(cart, run, facts, now=ENTERED + HOUR, logical=ENTERED + HOUR)
    assert decisions == [Exit("goal reached: Order Completed", converted=True, stop_messages=True)]
    assert "plan cart-email" not in facts.asked


def test_a_held_message_waits_for_the_allowed_moment_or_is_dropped() -> None:
    cart = program_of(CART)
    morning = ENTERED + DAY - 2 * HOUR
    quiet = [{"channel": "email", "reason": "quiet hours"}]
    facts = Facts(plan=Plan(passed=quiet, retry_at=morning))
    run = run_of(cart, pc=1)
    outcome = interpreter.execute(cart, run, cart.at(1), facts, now=ENTERED + HOUR, logical=0)
    held = {
        "step": "email",
        "channel": "email",
        "template": "cart-email",
        "purpose": "marketing",
        "reason": "quiet hours",
        "passed_over": quiet,
    }
    assert outcome.decisions == [
        Held("email", quiet),
        Log("Message Held", {**held, "outcome": "deferred", "until": morning}),
        Wait("held", morning),
        Schedule(morning),
    ]
    assert outcome.go_on is None

    dropping = program_of(
        CART.replace("template: cart-email}", "template: cart-email, if_held: drop}")
    )
    outcome = interpreter.execute(
        dropping, run, dropping.at(1), facts, now=ENTERED + HOUR, logical=ENTERED + HOUR
    )
    assert outcome.decisions == [
        Held("email", quiet),
        Log("Message Held", {**held, "outcome": "dropped", "until": None}),
        Move(2),
    ]
    assert outcome.go_on == ENTERED + HOUR


def test_a_held_message_before_its_moment_only_puts_its_job_back() -> None:
    cart = program_of(CART)
    run = run_of(cart, pc=1, waiting="held", due_at=ENTERED + DAY)
    facts = Facts()
    outcome = interpreter.execute(cart, run, cart.at(1), facts, now=ENTERED + HOUR, logical=0)
    assert outcome.decisions == [Schedule(ENTERED + DAY)]
    assert facts.asked == []


def test_a_template_deleted_since_going_live_ends_the_run() -> None:
    cart = program_of(CART)
    facts = Facts(plan="template cart-email is unknown")
    decisions = drive(cart, run_of(cart, pc=1), facts, now=ENTERED + HOUR)
    assert decisions == [Exit("step email: template cart-email is unknown")]


LOCAL = """\
id: morning
name: Morning
entry: {event: Signed Up}
steps:
  - id: nine
    wait_until: {time: "09:00", weekdays: [mon, tue, wed, thu, fri]}
  - exit: {reason: done}
"""


def test_a_local_time_wait_is_in_the_customers_zone_and_says_which() -> None:
    morning = program_of(LOCAL)
    friday_evening = to_ms(datetime(2026, 11, 27, 18, 0, tzinfo=UTC))
    run = run_of(morning, entered_at=friday_evening)
    decisions = drive(morning, run, Facts(timezone="Asia/Tokyo"), now=friday_evening)
    monday_nine_in_tokyo = to_ms(datetime(2026, 11, 30, 0, 0, tzinfo=UTC))
    assert decisions == [
        Wait("timer", monday_nine_in_tokyo),
        Log(
            "Journey Waiting",
            {
                "step": "nine",
                "until": monday_nine_in_tokyo,
                "time_zone": "Asia/Tokyo",
                "time_zone_reason": "the customer's, from their country",
            },
        ),
        Schedule(monday_nine_in_tokyo),
    ]


def test_a_local_time_wait_uses_the_brands_zone_for_a_customer_with_none() -> None:
    morning = program_of(LOCAL)
    run = run_of(morning)  # Monday 10:00 UTC, 11:00 in Paris: Tuesday 09:00 Paris
    outcome = interpreter.execute(
        morning,
        run,
        morning.at(0),
        Facts(),
        now=ENTERED,
        logical=ENTERED,
        timezone="Europe/Paris",
    )
    tuesday = to_ms(datetime(2026, 11, 24, 8, 0, tzinfo=UTC))
    assert outcome.decisions[0] == Wait("timer", tuesday)
    assert logs(outcome.decisions)[0][1]["time_zone_reason"] == (
        "no time zone is known for the customer: the brand's"
    )


RENEWAL = """\
id: renewal
name: Renewal
entry: {event: Subscribed}
steps:
  - id: before
    wait_until: {trait: renews_at, offset: -3d, at: "10:00", if_missing: IF_MISSING}
  - exit: {reason: reminded}
"""


def test_a_date_trait_wait_follows_the_trait_and_a_missing_date_takes_if_missing() -> None:
    renewal = program_of(RENEWAL.replace("IF_MISSING", "exit"))
    facts = Facts(traits={"renews_at": "2026-12-10"})
    decisions = drive(renewal, run_of(renewal), facts, now=ENTERED)
    due = to_ms(datetime(2026, 12, 7, 10, 0, tzinfo=UTC))
    assert decisions[0] == Wait("trait", due, event="renews_at")
    assert decisions[-1] == Schedule(due)

    missing = drive(renewal, run_of(renewal), Facts(), now=ENTERED)
    assert missing == [Exit("step before: renews_at is missing")]

    skipping = program_of(RENEWAL.replace("IF_MISSING", "skip"))
    skipped = drive(skipping, run_of(skipping), Facts(), now=ENTERED)
    assert skipped == [
        Log("Journey Wait Skipped", {"step": "before", "reason": "renews_at is missing"}),
        Move(1),
        Exit("reminded"),
    ]


def test_a_changed_date_trait_reschedules_the_wait() -> None:
    renewal = program_of(RENEWAL.replace("IF_MISSING", "exit"))
    run = run_of(renewal, waiting="trait", wait_event="renews_at", due_at=ENTERED + DAY)
    identify = LoggedEvent(
        9,
        "m-9",
        42,
        "identify",
        ENTERED + HOUR,
        msgspec.json.encode({"type": "identify", "traits": {"renews_at": "2027-01-10"}}),
    )
    document = {**identify.document(), "type": "identify"}
    now = ENTERED + HOUR
    assert interpreter.on_event(renewal, run, identify, document, now) == [Schedule(now)]


VIEWS = """\
id: viewed
name: Viewed
entry: {event: Checkout Started, key: properties.checkout_id}
steps:
  - id: back
    wait_for:
      event: Cart Viewed
      key: properties.checkout_id
      timeout: 1h
      on_event: exit
  - id: nudge
    emit: {event: Nudged, properties: {why: no view}}
"""


def test_a_wait_for_takes_its_event_before_the_deadline() -> None:
    viewed = program_of(VIEWS)
    run = run_of(viewed)
    decisions = drive(viewed, run, Facts(), now=ENTERED)
    assert decisions[0] == Wait("event", ENTERED + HOUR, event="Cart Viewed", key="c-1")
    view = logged(9, "Cart Viewed", ENTERED + 20 * MINUTE, checkout_id="c-1")
    now = ENTERED + 21 * MINUTE
    assert interpreter.on_event(viewed, run, view, view.document(), now) == [
        Log("Journey Event Received", {"step": "back", "event": "Cart Viewed"}),
        Consume(9),
        Move(viewed.at(0).targets[0]),
        Save(),
        Schedule(ENTERED + 20 * MINUTE),  # what follows counts from the event's time
    ]


def test_at_the_exact_deadline_the_timeout_wins() -> None:
    viewed = program_of(VIEWS)
    run = run_of(viewed, waiting="event", wait_event="Cart Viewed", due_at=ENTERED + HOUR)
    view = logged(9, "Cart Viewed", ENTERED + HOUR, checkout_id="c-1")
    assert interpreter.on_event(viewed, run, view, view.document(), ENTERED + HOUR) == []
    decisions = drive(viewed, run, Facts(log=[view]), now=ENTERED + HOUR)
    assert decisions[:3] == [
        Log("Journey Wait Timed Out", {"step": "back", "event": "Cart Viewed"}),
        RememberTimeout(0, ENTERED + HOUR),
        Move(viewed.at(0).otherwise or 0),
    ]
    assert Emit("track", "Nudged", {"properties": {"why": "no view"}}) in decisions


def test_an_event_dated_before_the_deadline_but_stored_late_takes_the_event_path() -> None:
    viewed = program_of(VIEWS)
    run = run_of(viewed, waiting="event", wait_event="Cart Viewed", due_at=ENTERED + HOUR)
    view = logged(9, "Cart Viewed", ENTERED + 59 * MINUTE, checkout_id="c-1")
    decisions = drive(viewed, run, Facts(log=[view]), now=ENTERED + HOUR + MINUTE)
    assert decisions == [
        Consume(9),
        Log(
            "Journey Event Received",
            {"step": "back", "event": "Cart Viewed", "by_event_time": True},
        ),
        Move(viewed.at(0).targets[0]),
        Exit("back ended the run"),
    ]


def test_a_late_event_after_the_timeout_turns_the_run_until_it_acts() -> None:
    viewed = program_of(VIEWS)
    otherwise = viewed.at(0).otherwise or 0
    run = run_of(viewed, pc=otherwise, race_pc=0, race_until=ENTERED + HOUR)
    view = logged(9, "Cart Viewed", ENTERED + 30 * MINUTE, checkout_id="c-1")
    decisions = interpreter.on_event(viewed, run, view, view.document(), ENTERED + 2 * HOUR)
    assert decisions[0] == Log(
        "Journey Event Received", {"step": "back", "event": "Cart Viewed", "after_timeout": True}
    )
    assert decisions[1:4] == [
        Consume(9),
        ForgetTimeout(),
        Move(viewed.at(0).targets[0]),
    ]


def test_the_event_that_started_the_run_satisfies_no_wait() -> None:
    viewed = program_of(VIEWS.replace("event: Cart Viewed", "event: Checkout Started"))
    start = logged(3, "Checkout Started", ENTERED, message_id="m-entry", checkout_id="c-1")
    decisions = drive(viewed, run_of(viewed), Facts(log=[start]), now=ENTERED)
    assert decisions[0] == Wait("event", ENTERED + HOUR, event="Checkout Started", key="c-1")


SPLIT = """\
id: test
name: Split test
entry: {event: Signed Up}
goals:
  - {event: Order Completed, window: 7d}
steps:
  - id: ab
    split:
      seed: s
      holdout: HOLDOUT
      paths:
        - {name: a, weight: 50, steps: [{exit: {reason: a}}]}
        - {name: b, weight: 50, steps: [{exit: {reason: b}}]}
"""


def test_a_holdout_customer_is_control_and_sent_nothing() -> None:
    everyone = program_of(SPLIT.replace("HOLDOUT", "100"))
    run = run_of(everyone)
    decisions = drive(everyone, run, Facts(), now=ENTERED)
    assert decisions == [
        HoldOut(),
        Log("Journey Split", {"step": "ab", "path": "holdout"}),
        Move(everyone.at(0).otherwise or 0),
        Exit("holdout (control group)"),
    ]
    assert run.control


def test_a_split_path_is_stable_per_customer() -> None:
    split = program_of(SPLIT.replace("HOLDOUT", "0"))
    paths = {
        customer: drive(split, run_of(split, customer_id=customer), Facts(), now=ENTERED)[-1]
        for customer in range(40)
    }
    again = {
        customer: drive(split, run_of(split, customer_id=customer), Facts(), now=ENTERED)[-1]
        for customer in range(40)
    }
    assert paths == again
    assert set(paths.values()) == {Exit("a"), Exit("b")}


ACTS = """\
id: acts
name: Acts
entry: {event: Signed Up}
steps:
  - id: tag
    update_profile: {set: {vip: true}, add_tags: [first-order], remove_tags: [prospect]}
  - id: hook
    webhook: {url: "https://example.com/hook", secret: crm, body: {list: vip}}
"""


def test_profile_updates_and_webhooks_are_decisions_for_the_runner() -> None:
    acts = program_of(ACTS)
    facts = Facts(traits={"tags": ["prospect", "newsletter"]})
    decisions = drive(acts, run_of(acts), facts, now=ENTERED)
    assert decisions == [
        Emit("identify", None, {"traits": {"vip": True, "tags": ["newsletter", "first-order"]}}),
        Move(1),
        CallWebhook("run:7:hook", "hook", "https://example.com/hook", {"list": "vip"}, "crm", 5),
        Log(
            "Webhook Scheduled",
            {"step": "hook", "url": "https://example.com/hook", "delivery_id": "run:7:hook"},
        ),
        Move(2),
        Exit("completed"),
    ]


def test_a_paused_journeys_run_is_held_where_it_stands() -> None:
    cart = program_of(CART)
    run = run_of(cart, pc=2, waiting="timer", due_at=ENTERED + DAY)
    assert interpreter.while_paused(run) == [
        Log("Journey Held", {"reason": "journey paused", "position": 2})
    ]


def test_resuming_counts_a_wait_that_came_due_while_held_from_the_resume() -> None:
    cart = program_of(CART)
    resumed = ENTERED + 3 * DAY
    overdue = run_of(cart, pc=2, waiting="timer", due_at=ENTERED + DAY)
    assert interpreter.on_version_change(overdue, "paused", "live", resumed) == [
        Wait("timer", resumed),
        Save(),
        Schedule(resumed),
    ]
    later = run_of(cart, pc=2, waiting="timer", due_at=ENTERED + 5 * DAY)
    assert interpreter.on_version_change(later, "paused", "superseded", resumed) == [
        Schedule(ENTERED + 5 * DAY)
    ]
    assert interpreter.on_version_change(later, "live", "paused", resumed) == []


def test_archiving_stops_the_run_with_a_reason() -> None:
    cart = program_of(CART)
    run = run_of(cart, pc=2, waiting="timer", due_at=ENTERED + DAY)
    assert interpreter.on_version_change(run, "live", "archived", ENTERED) == [
        Exit("journey stopped (archived)")
    ]
