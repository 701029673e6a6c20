"""Journey definitions: the YAML format, its JSON Schema, and validation that names the line.

`load_journey(text)` returns a checked `Journey` or raises `JourneyError` listing every
problem with its line, path and reason. The schema is generated from the same structs
(`journey_schema()`), so the published JSON Schema and the checks never disagree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec

from parcours.runtime.conditions import OPERATORS as OPERATORS
from parcours.runtime.conditions import Problems, check_conditions
from parcours.runtime.definitions import DefinitionError, check_duration, load_document, show
from parcours.runtime.definitions import Duration as Duration
from parcours.runtime.definitions import Problem as Problem
from parcours.runtime.definitions import parse_duration as parse_duration
from parcours.runtime.documents import JsonObject

# ---- the format --------------------------------------------------------------------------

# `best`: the channel ranked first for this customer (messaging/choice.py); `sector`: the
# brand's sector preset's post-purchase channel, then the send's fallback (its default
# chain, used alone when the brand has no sector).
CHANNELS = ("email", "sms", "whatsapp", "push", "wallet", "chat", "best", "sector")
Channel = Literal["email", "sms", "whatsapp", "push", "wallet", "chat", "best", "sector"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class Entry(_Strict):
    event: str | None = None
    where: list[dict[str, Any]] = []
    segment: str | None = None
    on: Literal["enter", "leave"] = "enter"
    backfill: bool = False  # also enter on a segment's batch evaluation (new or changed)
    date_trait: str | None = None
    offset: str | None = None
    at: str | None = None
    yearly: bool = False
    api: bool = False
    key: str | None = None
    reentry: Literal["once", "once_per_period", "every_time"] = "every_time"
    period: str | None = None
    lateness: str = "24h"


WINDOW = (
    "Goals only: the conversion window, a duration from the entry event's time (7d, P1M). "
    "A goal event dated within it is the run's conversion even after the run ended, and "
    "the control group's too; one dated after it ends the run without converting. A "
    "journey whose split holds out a control group gives each goal a window."
)


class Goal(_Strict):
    event: str
    key: str | None = None
    where: list[dict[str, Any]] = []
    # The conversion window, from the entry event's time: a goal event within it is the
    # run's conversion even after the run ended, and a control group's too. Goals only.
    window: Annotated[str | None, msgspec.Meta(description=WINDOW)] = None


class WaitUntil(_Strict):
    time: str | None = None
    weekdays: list[Weekday] = []
    trait: str | None = None
    offset: str | None = None
    at: str | None = None
    yearly: bool = False
    if_missing: Literal["skip", "exit"] = "exit"


class WaitFor(_Strict):
    event: str
    timeout: str
    key: str | None = None
    where: list[dict[str, Any]] = []
    on_event: Literal["continue", "exit"] = "continue"
    on_timeout: Literal["continue", "exit"] = "continue"
    then: list[Step] = []
    otherwise: list[Step] = []


class BranchArm(_Strict):
    when: list[dict[str, Any]] | dict[str, Any] | None = None
    otherwise: list[Step] | None = None
    steps: list[Step] = []


class SplitPath(_Strict):
    weight: int
    steps: list[Step] = []
    name: str | None = None


class Split(_Strict):
    paths: list[SplitPath]
    seed: str | None = None
    holdout: int = 0


class Send(_Strict):
    template: str
    channel: Channel = "best"
    purpose: Literal["marketing", "transactional"] = "marketing"
    fallback: list[Channel] = []
    success: Literal["sent", "delivered", "opened", "read", "clicked"] = "delivered"
    fallback_after: str | None = None
    if_held: Literal["defer", "drop"] = "defer"
    urgent: bool = False


class UpdateProfile(_Strict):
    set: dict[str, Any] = {}
    add_tags: list[str] = []
    remove_tags: list[str] = []


class Emit(_Strict):
    event: str
    properties: dict[str, Any] = {}


class Task(_Strict):
    title: str
    assignee: str | None = None
    note: str | None = None
    due: str | None = None


class Webhook(_Strict):
    url: str
    secret: str | None = None  # a key of [webhooks.secrets], never the key itself
    body: dict[str, Any] = {}
    retries: int = 5


class Exit(_Strict):
    reason: str = "exit step"


class Step(_Strict):
    id: str | None = None
    wait: str | None = None
    wait_until: WaitUntil | None = None
    wait_for: WaitFor | None = None
    branch: list[BranchArm] | None = None
    split: Split | None = None
    send: Send | None = None
    update_profile: UpdateProfile | None = None
    emit: Emit | None = None
    task: Task | None = None
    webhook: Webhook | None = None
    exit: Exit | None = None


class Journey(_Strict):
    id: str
    name: str
    entry: Entry
    steps: list[Step]
    description: str = ""
    goals: list[Goal] = []
    exits: list[Goal] = []


ACTIONS = (
    "wait",
    "wait_until",
    "wait_for",
    "branch",
    "split",
    "send",
    "update_profile",
    "emit",
    "task",
    "webhook",
    "exit",
)


def journey_schema() -> JsonObject:
    """The published JSON Schema of the journey format."""
    schema = msgspec.json.schema(Journey)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Parcours journey"
    return schema


# ---- loading -----------------------------------------------------------------------------


class JourneyError(DefinitionError):
    """A journey that cannot be used; `problems` names every mistake with its line."""


def load_journey(source: str, more_checks: Callable[[Journey], Problems] | None = None) -> Journey:
    """Parse and check a journey; raise JourneyError naming every problem and its line:
    every mistake of form at once, else every mistake of meaning and those `more_checks`
    finds (the templates its sends name, for example) at once."""
    journey, lines = load_document(
        source,
        Journey,
        "a journey is a YAML mapping with id, name, entry and steps",
        JourneyError,
    )
    problems = _check(journey)
    if more_checks is not None:
        problems += more_checks(journey)
    if problems:
        found = lines.problems(problems)
        raise JourneyError(sorted(found, key=lambda p: (p.line or 0, p.path)))
    return journey


def send_steps(journey: Journey) -> list[tuple[str, Step]]:
    """Every send step, at any depth, with its path (`$.steps[3].branch[0].steps[0]`)."""
    found: list[tuple[str, Step]] = []

    def walk(steps: list[Step], path: str) -> None:
        for index, step in enumerate(steps):
            here = f"{path}[{index}]"
            if step.send is not None:
                found.append((here, step))
            if step.wait_for is not None:
                walk(step.wait_for.then, f"{here}.wait_for.then")
                walk(step.wait_for.otherwise, f"{here}.wait_for.otherwise")
            for number, arm in enumerate(step.branch or []):
                walk(arm.steps, f"{here}.branch[{number}].steps")
                walk(arm.otherwise or [], f"{here}.branch[{number}].otherwise")
            for number, option in enumerate(step.split.paths if step.split else []):
                walk(option.steps, f"{here}.split.paths[{number}].steps")

    walk(journey.steps, "$.steps")
    return found


# ---- checks the schema cannot express ---------------------------------------------------

_TIME_OF_DAY = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_PATH_ROOTS = ("entry.", "event.", "profile.", "properties.", "traits.", "context.", "segment.")


def _check(journey: Journey) -> Problems:
    problems: Problems = []
    if not re.match(r"^[a-z0-9][a-z0-9-]*$", journey.id):
        problems.append(("$.id", "use lowercase letters, digits and dashes"))
    _check_entry(journey.entry, problems)
    held_out = _holds_out(journey.steps)
    for index, goal in enumerate(journey.goals):
        _check_conditions(goal.where, f"$.goals[{index}].where", problems)
        if goal.window is not None:
            check_duration(goal.window, f"$.goals[{index}].window", problems)
        elif held_out:
            problems.append(
                (
                    f"$.goals[{index}]",
                    "a split holds out a control group: give each goal a window (for example "
                    "window: 7d), over which both groups' conversions are measured",
                )
            )
    for index, goal in enumerate(journey.exits):
        _check_conditions(goal.where, f"$.exits[{index}].where", problems)
        if goal.window is not None:
            problems.append((f"$.exits[{index}].window", "only goals have a conversion window"))
    if not journey.steps:
        problems.append(("$.steps", "a journey needs at least one step"))
    seen_ids: dict[str, str] = {}
    _check_steps(journey.steps, "$.steps", problems, seen_ids)
    return problems


def _holds_out(steps: list[Step]) -> bool:
    """Whether some split, at any depth, holds out a control group."""
    pending = list(steps)
    while pending:
        step = pending.pop()
        if step.split is not None:
            if step.split.holdout > 0:
                return True
            pending += [s for option in step.split.paths for s in option.steps]
        if step.wait_for is not None:
            pending += step.wait_for.then + step.wait_for.otherwise
        for arm in step.branch or []:
            pending += arm.steps + (arm.otherwise or [])
    return False


def _check_entry(entry: Entry, problems: Problems) -> None:
    kinds = [k for k in ("event", "segment", "date_trait") if getattr(entry, k)] + (
        ["api"] if entry.api else []
    )
    if len(kinds) != 1:
        problems.append(
            (
                "$.entry",
                "say exactly one of event, segment, date_trait or api: true "
                f"(found {', '.join(kinds) or 'none'})",
            )
        )
    check_duration(entry.lateness, "$.entry.lateness", problems)
    if entry.reentry == "once_per_period":
        if entry.period is None:
            problems.append(("$.entry.period", "reentry once_per_period needs a period"))
        else:
            check_duration(entry.period, "$.entry.period", problems)
    if entry.offset is not None:
        check_duration(entry.offset, "$.entry.offset", problems, signed=True)
    if entry.at is not None and not _TIME_OF_DAY.match(entry.at):
        problems.append(("$.entry.at", f"{entry.at!r} is not a time of day such as 09:00"))
    _check_conditions(entry.where, "$.entry.where", problems)


def _check_steps(steps: list[Step], path: str, problems: Problems, seen: dict[str, str]) -> None:
    for index, step in enumerate(steps):
        here = f"{path}[{index}]"
        actions = [name for name in ACTIONS if getattr(step, name) is not None]
        if len(actions) != 1:
            problems.append(
                (
                    here,
                    f"a step does exactly one of {', '.join(ACTIONS)} "
                    f"(found {', '.join(actions) or 'none'})",
                )
            )
            continue
        if step.id is not None:
            if step.id in seen:
                problems.append(
                    (f"{here}.id", f"{step.id!r} is used twice (also at {show(seen[step.id])})")
                )
            seen[step.id] = here
        _check_action(step, actions[0], here, problems, seen)


def _check_action(
    step: Step, action: str, here: str, problems: Problems, seen: dict[str, str]
) -> None:
    if step.wait is not None:
        check_duration(step.wait, f"{here}.wait", problems)
    elif step.wait_until is not None:
        until = step.wait_until
        if (until.time is None) == (until.trait is None):
            problems.append((f"{here}.wait_until", "say either time (a time of day) or trait"))
        if until.time is not None and not _TIME_OF_DAY.match(until.time):
            problems.append(
                (f"{here}.wait_until.time", f"{until.time!r} is not a time such as 09:00")
            )
        if until.at is not None and not _TIME_OF_DAY.match(until.at):
            problems.append((f"{here}.wait_until.at", f"{until.at!r} is not a time such as 09:00"))
        if until.offset is not None:
            check_duration(until.offset, f"{here}.wait_until.offset", problems, signed=True)
    elif step.wait_for is not None:
        check_duration(step.wait_for.timeout, f"{here}.wait_for.timeout", problems)
        _check_conditions(step.wait_for.where, f"{here}.wait_for.where", problems)
        _check_steps(step.wait_for.then, f"{here}.wait_for.then", problems, seen)
        _check_steps(step.wait_for.otherwise, f"{here}.wait_for.otherwise", problems, seen)
    elif step.branch is not None:
        _check_branch(step.branch, f"{here}.branch", problems, seen)
    elif step.split is not None:
        _check_split(step.split, f"{here}.split", problems, seen)
    elif step.send is not None:
        _check_send(step.send, f"{here}.send", problems)
    elif step.webhook is not None:
        _check_webhook(step.webhook, f"{here}.webhook", problems)


def _check_send(send: Send, path: str, problems: Problems) -> None:
    if send.fallback_after is not None:
        check_duration(send.fallback_after, f"{path}.fallback_after", problems)
    if send.channel == "sector" and not send.fallback:
        problems.append(
            (
                f"{path}.fallback",
                "channel: sector needs a fallback: the channels to use after the sector's "
                "(alone when the brand has no sector)",
            )
        )
    for choice in ("best", "sector"):
        if choice in send.fallback:
            problems.append(
                (f"{path}.fallback", f"{choice} is a choice of channel, not one to fall back on")
            )


def _check_webhook(hook: Webhook, path: str, problems: Problems) -> None:
    if not hook.url.startswith(("https://", "http://")):
        problems.append((f"{path}.url", f"{hook.url!r} is not an https:// URL"))
    if hook.secret is not None and not re.match(r"^[a-z0-9_]{1,64}$", hook.secret):
        problems.append(
            (
                f"{path}.secret",
                "the name of a key in [webhooks.secrets]: lowercase letters, digits and _",
            )
        )
    if not 0 <= hook.retries <= 20:
        problems.append((f"{path}.retries", "between 0 and 20"))


def _check_branch(
    arms: list[BranchArm], path: str, problems: Problems, seen: dict[str, str]
) -> None:
    if not arms:
        problems.append((path, "a branch needs at least one arm"))
    for index, arm in enumerate(arms):
        here = f"{path}[{index}]"
        if (arm.when is None) == (arm.otherwise is None):
            problems.append((here, "an arm has either when (with steps) or otherwise"))
            continue
        if arm.otherwise is not None:
            if index != len(arms) - 1:
                problems.append((here, "otherwise must be the last arm"))
            _check_steps(arm.otherwise, f"{here}.otherwise", problems, seen)
        else:
            conditions = arm.when if isinstance(arm.when, list) else [arm.when or {}]
            _check_conditions(conditions, f"{here}.when", problems)
            _check_steps(arm.steps, f"{here}.steps", problems, seen)


def _check_split(split: Split, path: str, problems: Problems, seen: dict[str, str]) -> None:
    if not 0 <= split.holdout <= 100:
        problems.append((f"{path}.holdout", "a holdout is a percentage from 0 to 100"))
    if not split.paths:
        problems.append((f"{path}.paths", "a split needs at least one path"))
    for index, option in enumerate(split.paths):
        if option.weight <= 0:
            problems.append((f"{path}.paths[{index}].weight", "must be a positive number"))
        _check_steps(option.steps, f"{path}.paths[{index}].steps", problems, seen)


def _check_conditions(conditions: list[dict[str, Any]], path: str, problems: Problems) -> None:
    check_conditions(conditions, path, problems, _PATH_ROOTS)
