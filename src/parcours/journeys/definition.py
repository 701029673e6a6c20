"""Journey definitions: the YAML format, its JSON Schema, and validation that names the line.

`load_journey(text)` returns a checked `Journey` or raises `JourneyError` listing every
problem with its line, path and reason. The schema is generated from the same structs
(`journey_schema()`), so the published JSON Schema and the checks never disagree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import msgspec
import yaml

# ---- the format --------------------------------------------------------------------------

Operator = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "exists", "contains"]
OPERATORS: frozenset[str] = frozenset(Operator.__args__)  # type: ignore[attr-defined]
CHANNELS = ("email", "sms", "whatsapp", "push", "wallet", "chat", "best")
Channel = Literal["email", "sms", "whatsapp", "push", "wallet", "chat", "best"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class Entry(_Strict):
    event: str | None = None
    where: list[dict[str, Any]] = []
    segment: str | None = None
    on: Literal["enter", "leave"] = "enter"
    date_trait: str | None = None
    offset: str | None = None
    at: str | None = None
    yearly: bool = False
    api: bool = False
    key: str | None = None
    reentry: Literal["once", "once_per_period", "every_time"] = "every_time"
    period: str | None = None
    lateness: str = "24h"


class Goal(_Strict):
    event: str
    key: str | None = None
    where: list[dict[str, Any]] = []


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
    secret_env: str | None = None
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


def journey_schema() -> dict[str, Any]:
    """The published JSON Schema of the journey format."""
    schema = msgspec.json.schema(Journey)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Parcours journey"
    return schema


# ---- errors with lines --------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"


class JourneyError(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


# ---- loading -----------------------------------------------------------------------------


def load_journey(source: str) -> Journey:
    """Parse and check a journey; raise JourneyError naming every problem and its line."""
    lines = _LineMap()
    try:
        node = yaml.compose(source, Loader=yaml.SafeLoader)
        document = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise JourneyError([Problem(line, "", f"not valid YAML: {_yaml_reason(exc)}")]) from None
    if not isinstance(document, dict):
        raise JourneyError(
            [Problem(1, "", "a journey is a YAML mapping with id, name, entry and steps")]
        )
    lines.walk(node, "$")
    try:
        journey = msgspec.convert(document, Journey)
    except msgspec.ValidationError as exc:
        path, message = _split_msgspec(str(exc))
        raise JourneyError([Problem(lines.line_of(path), _show(path), message)]) from None
    problems = _check(journey)
    if problems:
        raise JourneyError(
            [Problem(lines.line_of(path), _show(path), message) for path, message in problems]
        )
    return journey


class _LineMap:
    """The line of every mapping key and list item, by JSONPath-like path ($.steps[0].send)."""

    def __init__(self) -> None:
        self.lines: dict[str, int] = {}

    def walk(self, node: Any, path: str) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                child = f"{path}.{key_node.value}"
                self.lines[child] = key_node.start_mark.line + 1
                self.walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.walk(item, f"{path}[{index}]")

    def line_of(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = re.sub(r"(\.[^.\[]+|\[\d+\])$", "", path) if path != "$" else ""
        return None


_MSGSPEC_AT = re.compile(r"^(.*?)(?: - at `(\$[^`]*)`)?$", re.S)


def _split_msgspec(text: str) -> tuple[str, str]:
    match = _MSGSPEC_AT.match(text)
    assert match is not None
    message, path = match.group(1), match.group(2) or "$"
    missing = re.match(r"Object missing required field `([^`]+)`", message)
    if missing:
        return f"{path}.{missing.group(1)}", "is required"
    unknown = re.match(r"Object contains unknown field `([^`]+)`", message)
    if unknown:
        return f"{path}.{unknown.group(1)}", "is not a known field here"
    return path, message[:1].lower() + message[1:]


def _show(path: str) -> str:
    return path.removeprefix("$").removeprefix(".")


def _yaml_reason(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    return str(problem) if problem else str(exc).splitlines()[0]


# ---- checks the schema cannot express ---------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_ISO_DURATION = re.compile(
    r"^P(?:(?P<y>\d+)Y)?(?:(?P<mo>\d+)M)?(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<mi>\d+)M)?(?:(?P<s>\d+)S)?)?$"
)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_TIME_OF_DAY = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_PATH_ROOTS = ("entry.", "event.", "profile.", "properties.", "traits.", "context.", "segment.")


@dataclass(frozen=True)
class Duration:
    """A plain duration (elapsed time), or calendar months/years for P1M, P1Y."""

    seconds: int
    months: int = 0


def parse_duration(text: str, *, signed: bool = False) -> Duration:
    """`90s`, `45m`, `2h`, `3d`, `2w`, or ISO 8601 (`PT2H`, `P1M`); raise ValueError."""
    value = text.strip()
    negative = signed and value.startswith("-")
    if negative:
        value = value[1:]
    match = _DURATION.match(value)
    if match:
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
        return Duration(-seconds if negative else seconds)
    iso = _ISO_DURATION.match(value)
    if iso and value not in ("P", "PT") and not value.endswith("T"):
        parts = {k: int(v) for k, v in iso.groupdict().items() if v}
        seconds = int(
            timedelta(
                weeks=parts.get("w", 0),
                days=parts.get("d", 0),
                hours=parts.get("h", 0),
                minutes=parts.get("mi", 0),
                seconds=parts.get("s", 0),
            ).total_seconds()
        )
        months = parts.get("y", 0) * 12 + parts.get("mo", 0)
        return Duration(-seconds, -months) if negative else Duration(seconds, months)
    raise ValueError(
        f"{text!r} is not a duration: write 90s, 45m, 2h, 3d, 2w or ISO 8601 such as PT2H or P1M"
    )


def _check(journey: Journey) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if not re.match(r"^[a-z0-9][a-z0-9-]*$", journey.id):
        problems.append(("$.id", "use lowercase letters, digits and dashes"))
    _check_entry(journey.entry, problems)
    for index, goal in enumerate(journey.goals):
        _check_conditions(goal.where, f"$.goals[{index}].where", problems)
    for index, goal in enumerate(journey.exits):
        _check_conditions(goal.where, f"$.exits[{index}].where", problems)
    if not journey.steps:
        problems.append(("$.steps", "a journey needs at least one step"))
    seen_ids: dict[str, str] = {}
    _check_steps(journey.steps, "$.steps", problems, seen_ids)
    return problems


def _check_entry(entry: Entry, problems: list[tuple[str, str]]) -> None:
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
    _check_duration(entry.lateness, "$.entry.lateness", problems)
    if entry.reentry == "once_per_period":
        if entry.period is None:
            problems.append(("$.entry.period", "reentry once_per_period needs a period"))
        else:
            _check_duration(entry.period, "$.entry.period", problems)
    if entry.offset is not None:
        _check_duration(entry.offset, "$.entry.offset", problems, signed=True)
    if entry.at is not None and not _TIME_OF_DAY.match(entry.at):
        problems.append(("$.entry.at", f"{entry.at!r} is not a time of day such as 09:00"))
    _check_conditions(entry.where, "$.entry.where", problems)


def _check_steps(
    steps: list[Step], path: str, problems: list[tuple[str, str]], seen: dict[str, str]
) -> None:
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
                    (f"{here}.id", f"{step.id!r} is used twice (also at {_show(seen[step.id])})")
                )
            seen[step.id] = here
        _check_action(step, actions[0], here, problems, seen)


def _check_action(
    step: Step, action: str, here: str, problems: list[tuple[str, str]], seen: dict[str, str]
) -> None:
    if step.wait is not None:
        _check_duration(step.wait, f"{here}.wait", problems)
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
            _check_duration(until.offset, f"{here}.wait_until.offset", problems, signed=True)
    elif step.wait_for is not None:
        _check_duration(step.wait_for.timeout, f"{here}.wait_for.timeout", problems)
        _check_conditions(step.wait_for.where, f"{here}.wait_for.where", problems)
        _check_steps(step.wait_for.then, f"{here}.wait_for.then", problems, seen)
        _check_steps(step.wait_for.otherwise, f"{here}.wait_for.otherwise", problems, seen)
    elif step.branch is not None:
        _check_branch(step.branch, f"{here}.branch", problems, seen)
    elif step.split is not None:
        _check_split(step.split, f"{here}.split", problems, seen)
    elif step.send is not None and step.send.fallback_after is not None:
        _check_duration(step.send.fallback_after, f"{here}.send.fallback_after", problems)


def _check_branch(
    arms: list[BranchArm], path: str, problems: list[tuple[str, str]], seen: dict[str, str]
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


def _check_split(
    split: Split, path: str, problems: list[tuple[str, str]], seen: dict[str, str]
) -> None:
    if not 0 <= split.holdout <= 100:
        problems.append((f"{path}.holdout", "a holdout is a percentage from 0 to 100"))
    if not split.paths:
        problems.append((f"{path}.paths", "a split needs at least one path"))
    for index, option in enumerate(split.paths):
        if option.weight <= 0:
            problems.append((f"{path}.paths[{index}].weight", "must be a positive number"))
        _check_steps(option.steps, f"{path}.paths[{index}].steps", problems, seen)


def _check_duration(
    text: str, path: str, problems: list[tuple[str, str]], *, signed: bool = False
) -> None:
    try:
        parse_duration(text, signed=signed)
    except ValueError as exc:
        problems.append((path, str(exc)))


def _check_conditions(
    conditions: list[dict[str, Any]], path: str, problems: list[tuple[str, str]]
) -> None:
    for index, condition in enumerate(conditions):
        here = f"{path}[{index}]"
        if "any" in condition and len(condition) == 1:
            alternatives = condition["any"]
            if not isinstance(alternatives, list):
                problems.append((f"{here}.any", "any takes a list of conditions"))
            else:
                _check_conditions(alternatives, f"{here}.any", problems)
            continue
        for target, test in condition.items():
            where = f"{here}.{target}"
            if not isinstance(target, str) or not target.startswith(_PATH_ROOTS):
                problems.append(
                    (
                        where,
                        f"{target!r} must start with one of "
                        f"{', '.join(p.rstrip('.') for p in _PATH_ROOTS)}",
                    )
                )
            if not isinstance(test, dict) or not test:
                problems.append((where, "write a test such as {eq: 3} or {gte: 100}"))
                continue
            for operator in test:
                if operator not in OPERATORS:
                    problems.append(
                        (
                            f"{where}.{operator}",
                            f"unknown operator; use one of {', '.join(sorted(OPERATORS))}",
                        )
                    )
