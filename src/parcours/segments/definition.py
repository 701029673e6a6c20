"""Segment definitions: the format, validation that names the line, and the compiled form.

A segment is a list of conditions over the profile (`profile.traits.*`,
`profile.computed.*`) and over aggregates of the customer's events (`events:` with a
count, a sum or the time since the last one), in the condition language journeys use
(runtime/conditions.py). `load_segment(text)` returns a checked `Segment` or raises
`SegmentError` listing every problem with its line; `compile_segment` turns it into the
conditions evaluation runs, plus what the segment depends on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec

from parcours.runtime.conditions import Problems, check_conditions, check_test, condition_paths
from parcours.runtime.definitions import (
    DefinitionError,
    check_duration,
    load_document,
    parse_duration,
    split_msgspec,
)

PROFILE_ROOTS = ("profile.traits.", "profile.computed.")
EVENT_ROOTS = ("properties.", "context.", "traits.")
AGGREGATES = ("count", "sum", "since_last")
# The time since the last event compares with durations; equality would never hold.
SINCE_OPERATORS = frozenset({"gt", "gte", "lt", "lte", "exists"})
# Computed traits the order events change; any other computed trait can change on any event.
ORDER_EVENTS = frozenset({"Order Completed", "Order Updated", "Order Cancelled", "Order Refunded"})
ORDER_TRAITS = frozenset({"orders_count", "revenue", "first_order_at", "last_order_at", "vip"})


class _Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class Segment(_Strict):
    id: str
    name: str
    conditions: list[dict[str, Any]]
    description: str = ""


class EventsCondition(_Strict):
    """`{events: {name, within, where, count | sum | since_last}}`."""

    name: str
    within: str | None = None
    where: list[dict[str, Any]] = []
    count: dict[str, Any] | None = None
    sum: dict[str, Any] | None = None
    since_last: dict[str, Any] | None = None


class SegmentError(DefinitionError):
    """A segment that cannot be used; `problems` names every mistake with its line."""


def load_segment(source: str) -> Segment:
    """Parse and check a segment (YAML or JSON); raise SegmentError naming every problem."""
    segment, lines = load_document(
        source, Segment, "a segment is a mapping with id, name and conditions", SegmentError
    )
    problems: Problems = []
    if not re.match(r"^[a-z0-9][a-z0-9-]*$", segment.id):
        problems.append(("$.id", "use lowercase letters, digits and dashes"))
    if not segment.conditions:
        problems.append(("$.conditions", "a segment needs at least one condition"))
    check_conditions(
        segment.conditions, "$.conditions", problems, PROFILE_ROOTS, {"events": _check_events}
    )
    if problems:
        raise SegmentError(lines.problems(problems))
    return segment


def _check_events(value: Any, path: str, problems: Problems) -> None:
    try:
        spec = msgspec.convert(value, EventsCondition)
    except msgspec.ValidationError as exc:
        problems.append(split_msgspec(str(exc), path))
        return
    if spec.within is not None:
        check_duration(spec.within, f"{path}.within", problems)
    check_conditions(spec.where, f"{path}.where", problems, EVENT_ROOTS)
    present = [name for name in AGGREGATES if getattr(spec, name) is not None]
    if not present:
        problems.append((path, "say what to test: count, sum or since_last"))
    if spec.count is not None:
        check_test(spec.count, f"{path}.count", problems)
    if spec.sum is not None:
        tests = {k: v for k, v in spec.sum.items() if k != "of"}
        if not isinstance(spec.sum.get("of"), str):
            problems.append((f"{path}.sum.of", "name the property to add up: of: properties.total"))
        elif not spec.sum["of"].startswith(EVENT_ROOTS):
            problems.append((f"{path}.sum.of", "the property is a path such as properties.total"))
        check_test(tests, f"{path}.sum", problems)
    if spec.since_last is not None:
        if spec.within is not None:
            problems.append(
                (f"{path}.within", "since_last looks at the whole history; leave within out")
            )
        check_test(spec.since_last, f"{path}.since_last", problems, SINCE_OPERATORS)
        for operator, duration in spec.since_last.items():
            if operator != "exists":
                check_duration(duration, f"{path}.since_last.{operator}", problems)


# ---- the compiled form ---------------------------------------------------------------------


@dataclass(frozen=True)
class Aggregate:
    """One `events:` condition: which events, over which window, what is added up."""

    name: str
    within_ms: int | None
    where: list[dict[str, Any]]
    sum_of: str | None
    # Moments at which `since_last` tests flip, as durations in ms after the last event.
    since_thresholds: tuple[int, ...]
    counts: bool  # a count or a sum is tested: every matching event matters, not the last

    @property
    def needs_payload(self) -> bool:
        return bool(self.where) or self.sum_of is not None

    @property
    def only_last(self) -> bool:
        """Only the time of the last event matters (one number per customer to read)."""
        return not self.counts and not self.needs_payload and self.within_ms is None


@dataclass(frozen=True)
class Dependencies:
    """What can change a customer's membership: these events, these traits, or (for
    computed traits such as last_seen_at) any event the customer does."""

    events: frozenset[str]
    traits: frozenset[str]
    any_event: bool


@dataclass(frozen=True)
class CompiledSegment:
    id: str
    name: str
    # The conditions with each `events:` test rewritten onto `events.<n>.count|sum|since_last`,
    # paths into the aggregates evaluation computes: one evaluator, `matches`, for all.
    conditions: list[dict[str, Any]]
    aggregates: tuple[Aggregate, ...]
    depends_on: Dependencies

    @property
    def time_dependent(self) -> bool:
        """Membership can change with no event (a window slides, time passes since the last)."""
        return any(a.within_ms is not None or a.since_thresholds for a in self.aggregates)


def compile_segment(segment: Segment) -> CompiledSegment:
    aggregates: list[Aggregate] = []
    conditions = [_compile(condition, aggregates) for condition in segment.conditions]
    return CompiledSegment(
        segment.id,
        segment.name,
        conditions,
        tuple(aggregates),
        _dependencies(conditions, aggregates),
    )


def _compile(condition: dict[str, Any], aggregates: list[Aggregate]) -> dict[str, Any]:
    if "any" in condition and len(condition) == 1:
        return {"any": [_compile(c, aggregates) for c in condition["any"]]}
    compiled: dict[str, Any] = {}
    for path, test in condition.items():
        if path != "events":
            compiled[path] = test
            continue
        spec = msgspec.convert(test, EventsCondition)
        number = len(aggregates)
        since = {
            op: parse_duration(value).seconds * 1000
            for op, value in (spec.since_last or {}).items()
            if op != "exists"
        }
        aggregates.append(
            Aggregate(
                spec.name,
                parse_duration(spec.within).seconds * 1000 if spec.within else None,
                spec.where,
                spec.sum["of"] if spec.sum else None,
                tuple(sorted(set(since.values()))),
                spec.count is not None or spec.sum is not None,
            )
        )
        if spec.count is not None:
            compiled[f"events.{number}.count"] = spec.count
        if spec.sum is not None:
            compiled[f"events.{number}.sum"] = {k: v for k, v in spec.sum.items() if k != "of"}
        if spec.since_last is not None:
            compiled[f"events.{number}.since_last"] = {
                op: since.get(op, value) for op, value in spec.since_last.items()
            }
    return compiled


def _dependencies(conditions: list[dict[str, Any]], aggregates: list[Aggregate]) -> Dependencies:
    traits: set[str] = set()
    events = {a.name for a in aggregates}
    any_event = False
    for path in condition_paths(conditions):
        parts = path.split(".")
        if parts[:2] == ["profile", "traits"]:
            traits.add(parts[2])
        elif parts[:2] == ["profile", "computed"]:
            if parts[2] in ORDER_TRAITS:
                events |= ORDER_EVENTS
            else:
                any_event = True  # first/last seen, time zone, locale, country
    return Dependencies(frozenset(events), frozenset(traits), any_event)
