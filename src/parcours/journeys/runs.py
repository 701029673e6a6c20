"""A journey run's state, and what an event means to it: whether it is a goal or an exit
of the run, whether it is the event a wait is for. Plain data and pure functions."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgspec

from parcours.journeys.definition import Goal, Journey, parse_duration
from parcours.journeys.times import after
from parcours.runtime.conditions import matches, normalise_key, resolve_path

_decode = msgspec.json.Decoder().decode


@dataclass
class Run:
    """A run as the engine moves it in memory; the store writes it once per job."""

    id: int
    journey_id: str
    version: int
    customer_id: int
    run_key: str
    pc: int
    waiting: str | None  # timer | event | trait | held, or None
    wait_event: str | None
    wait_key: str | None
    due_at: int | None
    entered_at: int
    entry_event: dict[str, Any]
    entry_message_id: str = ""
    consumed_seq: int | None = None  # the last event a wait_for of this run took
    control: bool = False  # held out by a split: measured, sent nothing
    # The wait_for it last timed out of, and that wait's deadline: an event dated before
    # the deadline that arrives later still takes the event's path, until the run acts.
    race_pc: int | None = None
    race_until: int | None = None
    dirty: bool = False  # moved in memory, not yet written (written once per job)
    has_job: bool | None = None  # whether its step job exists; None: not known


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """An event of the log as a run's rules read it; its document is decoded on demand."""

    seq: int
    message_id: str
    customer_id: int
    name: str
    occurred_at: int
    payload: str | bytes

    def document(self) -> dict[str, Any]:
        event: dict[str, Any] = _decode(self.payload)
        event["event"] = self.name
        return event


# What a run does that cannot be taken back: once done, a late event no longer turns it
# onto the path of the wait it timed out of. These are the decisions logged for it; what a
# run emits, sets on the profile or creates as a task goes through the log with source
# "journey", which counts as acting too.
ACTS = frozenset({"Message Queued", "Webhook Scheduled"})


def acted(run: Run) -> None:
    """The run did something that cannot be taken back: forget the wait it timed out of."""
    if run.race_pc is not None:
        run.race_pc = run.race_until = None
        run.dirty = True


def traits_set(kind: Any, traits: Any, context: Any) -> dict[str, Any]:
    """The traits an event sets: an identify's, and any event's `context.traits` (Segment's
    rule, and how Parcours sets `referral_code` with `Referral Code Issued`)."""
    found: dict[str, Any] = {}
    in_context = context.get("traits") if isinstance(context, dict) else None
    if isinstance(in_context, dict):
        found.update(in_context)
    if kind == "identify" and isinstance(traits, dict):
        found.update(traits)
    return found


def entry_key(path: str | None, run: Run) -> str | None:
    """The value at `path` in the run's entry event, as keys are compared."""
    if path is None:
        return None
    return normalise_key(resolve_path(path, {"event": run.entry_event}))


def wait_matches(spec: Any, event: dict[str, Any], run: Run) -> bool:
    """Whether this event (of the awaited name) is the one a wait_for of the run is for."""
    if spec.key:
        expected = entry_key(spec.key, run)
        if expected is None or normalise_key(resolve_path(spec.key, {"event": event})) != expected:
            return False
    return not spec.where or matches(spec.where, {"event": event, "entry": run.entry_event})


def first_match(goals: list[Goal], name: str, event: dict[str, Any], run: Run) -> Goal | None:
    """The first of these goals (or exits) this event is, for this run."""
    for goal in goals:
        if goal.event != name:
            continue
        if goal.key and normalise_key(resolve_path(goal.key, {"event": event})) != entry_key(
            goal.key, run
        ):
            continue
        if goal.where and not matches(goal.where, {"event": event, "entry": run.entry_event}):
            continue
        return goal
    return None


def within_window(goal: Goal, run: Run, occurred_at: int) -> bool:
    """Whether a goal event at this time is the run's conversion: within the goal's window
    from entry (any time while the run goes on, for a goal without one)."""
    if goal.window is None:
        return True
    return occurred_at <= after(run.entered_at, parse_duration(goal.window))


def ending(
    journey: Journey, run: Run, name: str, event: dict[str, Any], occurred_at: int
) -> tuple[str, bool] | None:
    """Whether this event ends the run: the reason, and whether it is a conversion (a goal,
    within the goal's window); None if it is neither a goal nor an exit of the run."""
    goal = first_match(journey.goals, name, event, run)
    if goal is not None:
        if within_window(goal, run, occurred_at):
            return f"goal reached: {goal.event}", True
        return f"goal reached: {goal.event} (after its window)", False
    leave = first_match(journey.exits, name, event, run)
    if leave is not None:
        return f"exit condition: {leave.event}", False
    return None


def ending_names(journey: Journey) -> frozenset[str]:
    """The events that may end a run of this journey: its goals' and its exits'."""
    return frozenset(goal.event for goal in (*journey.goals, *journey.exits))


def first_ending(
    journey: Journey, run: Run, events: list[LoggedEvent], now: int
) -> tuple[str, bool] | None:
    """The first of these events (oldest first) that ends the run: a goal or an exit of it
    dated from its entry up to `now`, not the event that started it. Its reason and
    whether it converts, or None."""
    names = ending_names(journey)
    for logged in events:
        if (
            logged.occurred_at < run.entered_at
            or logged.occurred_at > now
            or logged.name not in names
            or logged.message_id == run.entry_message_id
        ):
            continue
        found = ending(journey, run, logged.name, logged.document(), logged.occurred_at)
        if found is not None:
            return found
    return None


def conversion_after_end(
    journey: Journey, run: Run, name: str, event: dict[str, Any], occurred_at: int, ended_at: int
) -> Goal | None:
    """The goal this event is for a run that has ended, when it is its conversion: within
    the goal's window from entry, or, for a goal without a window, dated before the run
    ended (it arrived late). Control runs are measured so."""
    goal = first_match(journey.goals, name, event, run)
    if goal is None:
        return None
    if goal.window is None:
        return goal if occurred_at < ended_at else None
    return goal if within_window(goal, run, occurred_at) else None


def bucket(text: str, size: int = 100) -> int:
    """A stable number in [0, size) for this text: a split's draw for a customer."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % size
