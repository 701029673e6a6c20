"""Segment definitions: every mistake named with its line; the evaluator on its own (no
database): who is in, and when that changes with no event."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from parcours.cli import app
from parcours.segments.definition import SegmentError, compile_segment, load_segment
from parcours.segments.evaluation import Facts, is_member, next_change

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = re.search(r"```yaml\n(.*?)```", (ROOT / "docs/segments.md").read_text(), re.S)
assert EXAMPLE is not None
VIP = EXAMPLE.group(1)
DAY = 86_400_000
NOW = 1_790_000_000_000


def problems(source: str) -> list[str]:
    with pytest.raises(SegmentError) as caught:
        load_segment(source)
    return [str(p) for p in caught.value.problems]


def line_of(source: str, needle: str) -> int:
    return next(n for n, line in enumerate(source.splitlines(), 1) if needle in line)


def test_the_documented_example_is_valid() -> None:
    segment = load_segment(VIP)
    compiled = compile_segment(segment)
    assert segment.id == "vip"
    assert compiled.time_dependent
    assert compiled.depends_on.events >= {"Order Completed"}
    assert "tier" in compiled.depends_on.traits


def test_a_json_definition_is_read_too() -> None:
    source = json.dumps(
        {
            "id": "gold",
            "name": "Gold",
            "conditions": [{"profile.traits.tier": {"eq": "gold"}}],
        },
        indent=2,
    )
    assert load_segment(source).conditions == [{"profile.traits.tier": {"eq": "gold"}}]
    broken = source.replace('"eq"', '"equals"')
    assert problems(broken) == [
        f"line {line_of(broken, 'equals')}: conditions[0].profile.traits.tier.equals: unknown "
        "operator; use one of contains, eq, exists, gt, gte, in, lt, lte, ne, not_in"
    ]


def test_every_problem_is_listed_with_its_line() -> None:
    source = (
        VIP.replace("within: 365d", "within: a year")
        .replace("profile.traits.tier", "traits.tier")
        .replace("since_last: {lte: 180d}", "since_last: {eq: 180d}")
    )
    assert problems(source) == [
        f"line {line_of(source, 'traits.tier')}: conditions[0].any[1].traits.tier: 'traits.tier' "
        "must start with one of profile.traits, profile.computed, events",
        f"line {line_of(source, 'a year')}: conditions[1].events.within: 'a year' is not a "
        "duration: write 90s, 45m, 2h, 3d, 2w or ISO 8601 such as PT2H or P1M",
        f"line {line_of(source, 'eq: 180d')}: conditions[2].events.since_last.eq: unknown "
        "operator; use one of exists, gt, gte, lt, lte",
    ]


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("{events: {within: 30d, count: {gte: 1}}}", "conditions[0].events.name: is required"),
        (
            "{events: {name: Order Completed}}",
            "conditions[0].events: say what to test: count, sum or since_last",
        ),
        (
            "{events: {name: Order Completed, sum: {gte: 100}}}",
            "conditions[0].events.sum.of: name the property to add up: of: properties.total",
        ),
        (
            "{events: {name: Order Completed, within: 30d, since_last: {gt: 10d}}}",
            "conditions[0].events.within: since_last looks at the whole history; leave within out",
        ),
        (
            "{events: {name: Order Completed, cnt: {gte: 1}}}",
            "conditions[0].events.cnt: is not a known field here",
        ),
        (
            "{events: {name: A, count: {gte: 1}, where: [{profile.traits.x: {eq: 1}}]}}",
            "conditions[0].events.where[0].profile.traits.x: 'profile.traits.x' must start with "
            "one of properties, context, traits",
        ),
        ("{any: [oops]}", "conditions[0].any[0]: a condition is a mapping such as {path: {eq: 3}}"),
        (
            "{profile.traits.vip: true}",
            "conditions[0].profile.traits.vip: write a test such as {eq: 3} or {gte: 100}",
        ),
    ],
)
def test_each_mistake_in_a_condition_is_named(condition: str, message: str) -> None:
    source = f"id: s\nname: S\nconditions:\n  - {condition}\n"
    assert problems(source) == [f"line 4: {message}"]


def test_a_segment_needs_an_id_in_lowercase_and_a_condition() -> None:
    assert problems("id: VIP\nname: V\nconditions: []\n") == [
        "line 1: id: use lowercase letters, digits and dashes",
        "line 3: conditions: a segment needs at least one condition",
    ]
    assert problems("- just a list") == [
        "line 1: a segment is a mapping with id, name and conditions"
    ]
    assert problems("id: [")[0].startswith("line 1: not valid YAML")


def test_the_cli_checks_segment_files(tmp_path: Path) -> None:
    good = tmp_path / "vip.yaml"
    good.write_text(VIP)
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: bad\nname: Bad\nconditions:\n  - {profile.traits.x: {equals: 1}}\n")
    result = CliRunner().invoke(app, ["segments", "validate", str(good), str(bad)])
    assert result.exit_code == 1
    assert "segment 'vip' is valid (3 conditions)" in result.output
    assert f"{bad}:line 4: conditions[0].profile.traits.x.equals: unknown operator" in result.output


# ---- the evaluator ------------------------------------------------------------------------


def test_a_thirty_day_window_slides_past_the_last_order() -> None:
    recent = compile_segment(
        load_segment(
            "id: s\nname: S\nconditions:\n"
            "  - events: {name: Order Completed, within: 30d, count: {gte: 2}}\n"
        )
    )
    facts = Facts(
        {"traits": {}, "computed": {}}, ([(NOW - 20 * DAY, None), (NOW - 5 * DAY, None)],)
    )
    assert is_member(recent, facts, NOW)
    # The older order leaves the window 10 days from now; one order is not enough.
    assert next_change(recent, facts, NOW) == NOW + 10 * DAY
    assert not is_member(recent, facts, NOW + 10 * DAY)
    assert next_change(recent, facts, NOW + 10 * DAY) is None


def test_the_time_since_the_last_event_and_a_sum() -> None:
    lapsed = compile_segment(
        load_segment(
            "id: s\nname: S\nconditions:\n"
            "  - events: {name: Order Completed, sum: {of: properties.total, gte: 100}}\n"
            "  - events: {name: Order Completed, since_last: {gte: 90d}}\n"
        )
    )
    orders = [(NOW - 100 * DAY, Decimal("60")), (NOW - 40 * DAY, Decimal("50"))]
    facts = Facts({"traits": {}, "computed": {}}, (orders, [(t, None) for t, _ in orders]))
    assert not is_member(lapsed, facts, NOW)
    assert next_change(lapsed, facts, NOW) == NOW + 50 * DAY  # 90 days after the last order
    small = Facts({"traits": {}, "computed": {}}, ([orders[0]], [(orders[0][0], None)]))
    assert not is_member(lapsed, small, NOW)  # lapsed, but 60 spent
    assert next_change(lapsed, small, NOW) is None


def test_any_and_profile_conditions_in_one_segment() -> None:
    either = compile_segment(
        load_segment(
            "id: s\nname: S\nconditions:\n"
            "  - any:\n"
            "      - profile.traits.vip: {eq: true}\n"
            "      - events: {name: Order Completed, within: 7d, count: {gte: 1}}\n"
        )
    )
    nobody = Facts({"traits": {}, "computed": {}}, ([],))
    assert not is_member(either, nobody, NOW)
    assert is_member(either, Facts({"traits": {"vip": True}, "computed": {}}, ([],)), NOW)
    buyer = Facts({"traits": {}, "computed": {}}, ([(NOW - DAY, None)],))
    assert is_member(either, buyer, NOW)
    assert next_change(either, buyer, NOW) == NOW + 6 * DAY
