"""The journey interpreter: from a compiled journey, a run's state, the clock and what it
asks of the customer (`Facts`), the decisions of the run's next instruction, or of an
event about its customer.

It reads and writes nothing: the engine answers its questions (from the batch it read,
or the database) and applies the decisions it returns, in order. The run is read, never
changed here; `Move`, `Wait`, `Consume`... say how it changes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

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
    Outcome,
    RememberTimeout,
    Save,
    Schedule,
    Send,
    Wait,
)
from parcours.journeys.definition import parse_duration
from parcours.journeys.program import Instruction, Program
from parcours.journeys.runs import (
    LoggedEvent,
    Run,
    bucket,
    ending,
    ending_names,
    first_ending,
    traits_set,
    wait_matches,
)
from parcours.journeys.runs import (
    entry_key as entry_key_of,
)
from parcours.journeys.times import after, next_local_time, trait_moment, zone_details
from parcours.runtime.conditions import matches, uses_root

# ---- what the interpreter asks ----------------------------------------------------------


class SendPlan(Protocol):
    """The policies' answer for a send (messaging.choice.Plan)."""

    channel: str | None
    address: str | None
    rest: list[str]
    passed: list[dict[str, Any]]
    scores: dict[str, int]
    retry_at: int | None

    @property
    def reason(self) -> str: ...


class Facts(Protocol):
    """What the interpreter may ask about the run's customer, answered as of now."""

    def profile(self) -> dict[str, Any]:
        """The customer as conditions see them (`traits`, `computed`, ...)."""
        ...

    def segments(self) -> dict[str, bool]:
        """The customer's segment memberships, for conditions on `segment.<id>`."""
        ...

    def events_since(self, name: str, since: int, before: int, after_seq: int) -> list[LoggedEvent]:
        """The customer's events named so, dated in [since, before), after that seq."""
        ...

    def ending_events(self, names: frozenset[str], since: int) -> list[LoggedEvent]:
        """The customer's events named so, dated from `since`, oldest first."""
        ...

    def plan_send(self, send: Any) -> SendPlan | str:
        """The channel the policies allow for this send now, or why the template cannot
        be used (a text)."""
        ...


# ---- one instruction --------------------------------------------------------------------


def execute(
    program: Program,
    run: Run,
    instruction: Instruction,
    facts: Facts,
    *,
    now: int,
    logical: int,
    timezone: str = "UTC",
) -> Outcome:
    """The decisions of the run's instruction. `logical` is the run's own time (a timer
    that fired late counts from when it was due); `timezone` is the brand's, for
    customers with none."""
    op, spec = instruction.op, instruction.spec
    if op == "goto":
        return Outcome([Move(instruction.targets[0])], logical)
    if op == "exit":
        return Outcome([Exit(str(spec))], None)
    if op == "wait":
        return _wait_timer(run, instruction, now, logical, lambda base: (after(base, spec), {}))
    if op == "wait_until" and spec.trait is not None:
        return _wait_trait(run, instruction, facts, now, logical, timezone)
    if op == "wait_until":
        return _wait_timer(run, instruction, now, logical, _local_time(spec, facts, timezone))
    if op == "wait_for":
        return _wait_for(run, instruction, facts, now, logical)
    if op == "branch":
        return _branch(run, instruction, facts, logical)
    if op == "split":
        return _split(run, program, instruction, logical)
    stop = ended_by_log(program, run, facts, now)
    if stop is not None:
        return Outcome([stop], None)  # an order already stored stops what follows
    if spec.send is not None:
        return _send(run, program, instruction, facts, now, logical)
    return _act(run, instruction, facts, logical)


def _local_time(
    spec: Any, facts: Facts, timezone: str
) -> Callable[[int], tuple[int, dict[str, Any]]]:
    def due(base: int) -> tuple[int, dict[str, Any]]:
        profile = facts.profile()
        return next_local_time(base, spec, profile, timezone), zone_details(profile, timezone)

    return due


def _wait_timer(
    run: Run,
    instruction: Instruction,
    now: int,
    logical: int,
    due: Callable[[int], tuple[int, dict[str, Any]]],
) -> Outcome:
    """An elapsed or local-time wait: counted from the run's own time, so chained waits
    catch up in order after downtime."""
    if run.waiting == "timer" and run.due_at is not None:
        if now < run.due_at:
            return Outcome([Schedule(run.due_at)], None)
        return Outcome([Move(run.pc + 1)], run.due_at)
    until, details = due(logical)
    decisions: list[Decision] = [
        Wait("timer", until),
        Log("Journey Waiting", {"step": instruction.step_id, "until": until, **details}),
    ]
    if until <= now:
        return Outcome([*decisions, Move(run.pc + 1)], until)
    return Outcome([*decisions, Schedule(until)], None)


def _wait_trait(
    run: Run, instruction: Instruction, facts: Facts, now: int, logical: int, timezone: str
) -> Outcome:
    """Wait for the date a trait holds (plus the offset). The date is read again each
    time the step runs, so a changed trait moves the wait; a missing, unreadable or past
    date never fires: the run takes the step's `if_missing` path, with the reason."""
    spec = instruction.spec
    profile = facts.profile()
    due, problem = trait_moment(profile, spec, now, timezone)
    if due is None or (due < now and run.waiting != "trait"):
        reason = problem or f"the date in {spec.trait} has passed"
        if spec.if_missing == "exit":
            return Outcome([Exit(f"step {instruction.step_id}: {reason}")], None)
        skipped = Log("Journey Wait Skipped", {"step": instruction.step_id, "reason": reason})
        return Outcome([skipped, Move(run.pc + 1)], logical)
    if due <= now:
        return Outcome([Move(run.pc + 1)], due)
    decisions: list[Decision] = []
    if run.waiting != "trait" or run.due_at != due:
        details = {"step": instruction.step_id, "until": due, "trait": spec.trait}
        decisions += [
            Wait("trait", due, event=spec.trait),
            Log("Journey Waiting", {**details, **zone_details(profile, timezone)}),
        ]
    return Outcome([*decisions, Schedule(due)], None)


def _wait_for(run: Run, instruction: Instruction, facts: Facts, now: int, logical: int) -> Outcome:
    """Wait for an event or a timeout, whichever comes first by the event's own time."""
    spec, step = instruction.spec, instruction.step_id
    if run.waiting == "event":
        if run.due_at is None or now < run.due_at:
            return Outcome([Schedule(run.due_at or now)], None)
        # Event time decides: an event dated before the deadline counts even if it was
        # stored after it, or its reaction has not run yet (a worker behind).
        seen = _seen_since_entry(run, spec, facts, run.due_at)
        if seen is not None:
            received = {"step": step, "event": spec.event, "by_event_time": True}
            return Outcome(
                [Consume(seen.seq), Log("Journey Event Received", received), _taken(instruction)],
                seen.occurred_at,  # what follows counts from the event's time
            )
        timed_out = Log("Journey Wait Timed Out", {"step": step, "event": spec.event})
        go_to = Move(instruction.otherwise or run.pc + 1)
        return Outcome([timed_out, RememberTimeout(run.pc, run.due_at), go_to], run.due_at)
    deadline = logical + parse_duration(spec.timeout).seconds * 1000  # elapsed time
    seen = _seen_since_entry(run, spec, facts, deadline)
    if seen is not None:
        received = {"step": step, "event": spec.event, "before_wait": True}
        return Outcome(
            [Consume(seen.seq), Log("Journey Event Received", received), _taken(instruction)],
            logical,
        )
    waiting = {"step": step, "for": spec.event, "until": deadline}
    return Outcome(
        [
            Wait("event", deadline, event=spec.event, key=entry_key_of(spec.key, run)),
            Log("Journey Waiting", waiting),
            Schedule(deadline),
        ],
        None,
    )


def _taken(instruction: Instruction) -> Move:
    """The path a wait_for takes when its event comes."""
    return Move(instruction.targets[0])


def _seen_since_entry(run: Run, spec: Any, facts: Facts, before: int) -> LoggedEvent | None:
    """Events since entry count: an order placed before the wait began satisfies it.
    Not the event that started the run, and not one an earlier wait_for of this run
    already took (three views are three events, not one seen three times)."""
    for logged in facts.events_since(spec.event, run.entered_at, before, run.consumed_seq or 0):
        if logged.message_id == run.entry_message_id:
            continue
        if wait_matches(spec, logged.document(), run):
            return logged
    return None


def _branch(run: Run, instruction: Instruction, facts: Facts, logical: int) -> Outcome:
    """The first arm whose conditions hold, else `otherwise`."""
    scope = {"entry": run.entry_event, "event": run.entry_event, "profile": facts.profile()}
    if any(uses_root(conditions, "segment") for conditions in instruction.spec):
        scope["segment"] = facts.segments()
    step = instruction.step_id
    for number, (conditions, target) in enumerate(
        zip(instruction.spec, instruction.targets, strict=True)
    ):
        if matches(conditions, scope):
            return Outcome(
                [Log("Journey Branched", {"step": step, "arm": number + 1}), Move(target)], logical
            )
    assert instruction.otherwise is not None
    otherwise = Log("Journey Branched", {"step": step, "arm": "otherwise"})
    return Outcome([otherwise, Move(instruction.otherwise)], logical)


def _split(run: Run, program: Program, instruction: Instruction, logical: int) -> Outcome:
    """A stable draw per customer: the holdout first, then a path by weight."""
    split, step = instruction.spec, instruction.step_id
    seed = split.seed or f"{program.journey.id}:{step}"
    if bucket(f"{seed}:holdout:{run.customer_id}") < split.holdout:
        assert instruction.otherwise is not None
        held = Log("Journey Split", {"step": step, "path": "holdout"})
        return Outcome([HoldOut(), held, Move(instruction.otherwise)], logical)
    total = sum(p.weight for p in split.paths)
    point = bucket(f"{seed}:path:{run.customer_id}", total)
    for number, (option, target) in enumerate(zip(split.paths, instruction.targets, strict=True)):
        if point < option.weight:
            path = Log("Journey Split", {"step": step, "path": option.name or number + 1})
            return Outcome([path, Move(target)], logical)
        point -= option.weight
    raise AssertionError("split weights exhausted")


def ended_by_log(program: Program, run: Run, facts: Facts, now: int) -> Exit | None:
    """Before the run acts (a send, a webhook, an emit): a goal or an exit of the run
    already in the log, dated from its entry up to now, ends it here, whether or not
    that event's reaction has run yet."""
    names = ending_names(program.journey)
    if not names:
        return None
    found = first_ending(program.journey, run, facts.ending_events(names, run.entered_at), now)
    if found is None:
        return None
    return Exit(found[0], converted=found[1], stop_messages=True)


def _send(
    run: Run, program: Program, instruction: Instruction, facts: Facts, now: int, logical: int
) -> Outcome:
    """A message intent if the policies let it go now; otherwise held back with the
    reason, waiting for the next allowed moment or dropped, as the step says. A deferred
    message is checked again when its moment comes."""
    send, step = instruction.spec.send, instruction.step_id
    if run.waiting == "held" and run.due_at is not None and now < run.due_at:
        return Outcome([Schedule(run.due_at)], None)
    plan = facts.plan_send(send)
    if isinstance(plan, str):  # a brand template deleted since the journey went live
        return Outcome([Exit(f"step {step}: {plan}")], None)
    details = {
        "step": step,
        "channel": send.channel,
        "template": send.template,
        "purpose": send.purpose,
    }
    if plan.channel is None:
        return _hold(run, send, plan, details, logical)
    key = f"run:{run.id}:{step}:0"
    decisions: list[Decision] = []
    if send.channel in ("best", "sector") or plan.passed:
        chosen = {"chosen": plan.channel, "passed_over": plan.passed, "scores": plan.scores}
        decisions.append(Log("Channel Chosen", {**details, **chosen}))
    extras = {
        "rest": plan.rest,
        "if_held": send.if_held,
        "success": send.success,
        "fallback_after": send.fallback_after,
        "event": run.entry_event,
    }
    decisions += [
        Send(key, plan.channel, send.template, send.purpose, step, plan.address, extras),
        Log("Message Queued", {**details, "channel": plan.channel, "idempotency_key": key}),
        Move(run.pc + 1),
    ]
    return Outcome(decisions, logical)


def _hold(run: Run, send: Any, plan: SendPlan, details: dict[str, Any], logical: int) -> Outcome:
    deferred = send.if_held == "defer" and plan.retry_at is not None
    held = {
        **details,
        "reason": plan.reason,
        "passed_over": plan.passed,
        "outcome": "deferred" if deferred else "dropped",
        "until": plan.retry_at if deferred else None,
    }
    decisions: list[Decision] = [Held(send.channel, plan.passed), Log("Message Held", held)]
    if plan.retry_at is not None and deferred:
        return Outcome([*decisions, Wait("held", plan.retry_at), Schedule(plan.retry_at)], None)
    return Outcome([*decisions, Move(run.pc + 1)], logical)


def _act(run: Run, instruction: Instruction, facts: Facts, logical: int) -> Outcome:
    """An update of the profile, an emitted event, a task or a webhook; then the next
    instruction. The run is written first: what it emits may move this customer's runs."""
    step, step_id = instruction.spec, instruction.step_id
    decisions: list[Decision] = [Save()] if run.dirty else []
    if step.update_profile is not None:
        decisions.append(_profile_update(step.update_profile, facts))
    elif step.emit is not None:
        decisions.append(Emit("track", step.emit.event, {"properties": step.emit.properties}))
    elif step.task is not None:
        task = step.task
        created = {
            "title": task.title,
            "assignee": task.assignee,
            "note": task.note,
            "journey_id": run.journey_id,
            "run_id": run.id,
        }
        decisions.append(Emit("track", "Task Created", {"properties": created}))
    elif step.webhook is not None:
        hook, delivery_id = step.webhook, f"run:{run.id}:{step_id}"
        scheduled = {"step": step_id, "url": hook.url, "delivery_id": delivery_id}
        decisions += [
            CallWebhook(delivery_id, step_id, hook.url, hook.body, hook.secret, hook.retries),
            Log("Webhook Scheduled", scheduled),
        ]
    return Outcome([*decisions, Move(run.pc + 1)], logical)


def _profile_update(change: Any, facts: Facts) -> Emit:
    traits: dict[str, Any] = dict(change.set)
    if change.add_tags or change.remove_tags:
        current = facts.profile()["traits"].get("tags") or []
        tags = [t for t in current if t not in change.remove_tags]
        tags += [t for t in change.add_tags if t not in tags]
        traits["tags"] = tags
    return Emit("identify", None, {"traits": traits})


# ---- the journey's version paused, resumed or archived -------------------------------------


def on_version_change(run: Run, was: str, now_is: str, now: int) -> list[Decision]:
    """What a change of its version's status does to an active run: archived, it ends;
    released from a pause, it goes on, and a wait that came due while it was held counts
    from the resume (rather than everything going out at once)."""
    if now_is == "archived":
        return [Exit("journey stopped (archived)")]
    if was != "paused" or now_is not in ("live", "superseded"):
        return []
    if run.waiting and run.due_at is not None and run.due_at < now:
        return [Wait(run.waiting, now, run.wait_event, run.wait_key), Save(), Schedule(now)]
    return [Schedule(run.due_at or now)]


def while_paused(run: Run) -> list[Decision]:
    """A step of a paused journey's run came due: held where it stands (resuming the
    journey schedules it again)."""
    return [Log("Journey Held", {"reason": "journey paused", "position": run.pc})]


# ---- an event about the run's customer ----------------------------------------------------


def on_event(
    program: Program, run: Run, event: LoggedEvent, document: dict[str, Any], now: int
) -> list[Decision]:
    """What an event about its customer (`document`, as `event.document()` reads it) does
    to an active run: a goal or an exit ends it, a changed date trait moves its wait, the
    event it waits for moves it on."""
    if event.occurred_at < run.entered_at:
        return []  # only what happens after entry counts for goals and exits
    found = ending(program.journey, run, event.name, document, event.occurred_at)
    if found is not None:
        return [Exit(found[0], converted=found[1], stop_messages=True)]
    traits = traits_set(document.get("type"), document.get("traits"), document.get("context"))
    if run.waiting == "trait" and run.wait_event in traits:
        return [Schedule(now)]  # the step reads the new date
    if run.consumed_seq is not None and event.seq <= run.consumed_seq:
        return []  # an earlier wait_for of this run already took this event
    late = _late_for_wait(program, run, event, document, now)
    if late:
        return late
    if event.message_id and event.message_id == run.entry_message_id:
        return []  # the event that started the run satisfies no wait of it
    if run.waiting != "event" or run.wait_event != event.name:
        return []
    instruction = program.at(run.pc)
    if not wait_matches(instruction.spec, document, run):
        return []
    if run.due_at is not None and event.occurred_at >= run.due_at:
        return []  # at the exact deadline the timeout wins
    received = {"step": instruction.step_id, "event": event.name}
    return [
        Log("Journey Event Received", received),
        Consume(event.seq),
        _taken(instruction),
        Save(),
        Schedule(min(max(event.occurred_at, run.entered_at), now)),  # counts from the event
    ]


def _late_for_wait(
    program: Program, run: Run, event: LoggedEvent, document: dict[str, Any], now: int
) -> list[Decision]:
    """An event dated before the deadline of the wait_for the run timed out of, arriving
    after the timeout was taken: event time decides, so the run takes the event's path
    instead, as long as it has not acted since (a message not yet sent is not sent)."""
    if run.race_pc is None or run.race_until is None or event.occurred_at >= run.race_until:
        return []
    instruction = program.at(run.race_pc)
    spec = instruction.spec
    if (
        instruction.op != "wait_for"
        or spec.event != event.name
        or not wait_matches(spec, document, run)
    ):
        return []
    received = {"step": instruction.step_id, "event": event.name, "after_timeout": True}
    return [
        Log("Journey Event Received", received),
        Consume(event.seq),
        ForgetTimeout(),
        _taken(instruction),
        Save(),
        Schedule(min(max(event.occurred_at, run.entered_at), now)),
    ]
