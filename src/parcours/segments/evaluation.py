"""Is a customer in a segment at a given moment, and when would that change by itself?

Plain Python over `Facts` (the customer's profile and the events each `events:` condition
looks at), so that the incremental path, the re-checks and the batch evaluation share one
evaluator, and it is tested without a database.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from parcours.runtime.conditions import as_number, matches, resolve_path
from parcours.segments.definition import Aggregate, CompiledSegment

# (occurred_at in ms, the summed property's value or None), for one aggregate.
Occurrence = tuple[int, Decimal | None]


@dataclass(frozen=True)
class Facts:
    """What one customer's membership is decided on: traits and computed traits, and per
    aggregate of the segment the matching events, oldest first."""

    profile: dict[str, Any]
    occurrences: tuple[list[Occurrence], ...]


def occurrence(
    aggregate: Aggregate, occurred_at: int, event: dict[str, Any] | None
) -> Occurrence | None:
    """The event as the aggregate counts it, or None when its `where` does not hold."""
    if event is None:
        return occurred_at, None
    if aggregate.where and not matches(aggregate.where, {"event": event}):
        return None
    value = resolve_path(aggregate.sum_of, {"event": event}) if aggregate.sum_of else None
    return occurred_at, as_number(value)


def is_member(segment: CompiledSegment, facts: Facts, at: int) -> bool:
    scope = {
        "profile": facts.profile,
        "events": [
            _measure(aggregate, found, at)
            for aggregate, found in zip(segment.aggregates, facts.occurrences, strict=True)
        ],
    }
    return matches(segment.conditions, scope)


def next_change(segment: CompiledSegment, facts: Facts, now: int) -> int | None:
    """The first moment after `now` at which membership flips if nothing else happens (a
    window slides past an event, enough time passes since the last one), or None."""
    current = is_member(segment, facts, now)
    for moment in sorted(_moments(segment, facts, now)):
        if is_member(segment, facts, moment) != current:
            return moment
    return None


def _measure(aggregate: Aggregate, found: list[Occurrence], at: int) -> dict[str, Any]:
    """count, sum and since_last of the aggregate as they stand at `at` (events dated later
    do not count yet)."""
    start = at - aggregate.within_ms if aggregate.within_ms is not None else None
    inside = [(t, v) for t, v in found if t <= at and (start is None or t > start)]
    measured: dict[str, Any] = {"count": len(inside)}
    if aggregate.sum_of is not None:
        measured["sum"] = str(sum((v for _, v in inside if v is not None), Decimal(0)))
    past = [t for t, _ in found if t <= at]
    if past:
        measured["since_last"] = at - max(past)  # absent when it never happened
    return measured


def _moments(segment: CompiledSegment, facts: Facts, now: int) -> set[int]:
    """Every moment at which some aggregate changes: an event leaving its window, a
    `since_last` threshold passing, an event dated in the future coming due."""
    moments: set[int] = set()
    for aggregate, found in zip(segment.aggregates, facts.occurrences, strict=True):
        past = [t for t, _ in found if t <= now]
        last = max(past) if past else None
        for t, _ in found:
            if t > now:
                moments.add(t)
            if aggregate.within_ms is not None:
                moments.add(t + aggregate.within_ms)
            if last is not None and t >= last:
                for threshold in aggregate.since_thresholds:
                    moments |= {t + threshold, t + threshold + 1}  # gte flips at, gt just after
    return {moment for moment in moments if moment > now}
