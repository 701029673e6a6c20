"""Journey YAML: a readable format, and every mistake named with its line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from parcours.cli import app
from parcours.journeys.definition import (
    Duration,
    JourneyError,
    journey_schema,
    load_journey,
    parse_duration,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = re.search(r"```yaml\n(.*?)```", (ROOT / "docs/journeys.md").read_text(), re.S)
assert EXAMPLE is not None
ABANDONED_CART = EXAMPLE.group(1)


def line_of(source: str, needle: str) -> int:
    return next(n for n, line in enumerate(source.splitlines(), 1) if needle in line)


def problems(source: str) -> list[str]:
    with pytest.raises(JourneyError) as caught:
        load_journey(source)
    return [str(p) for p in caught.value.problems]


def test_the_documented_example_is_valid() -> None:
    journey = load_journey(ABANDONED_CART)
    assert journey.id == "abandoned-cart"
    assert journey.entry.key == "properties.checkout_id"
    assert journey.steps[1].send is not None and journey.steps[1].send.channel == "push"
    assert journey.goals[0].event == "Order Completed"


def test_a_sector_send_names_its_fallback_and_choices_are_not_fallbacks() -> None:
    """`channel: sector` needs the chain to use after the sector's channel (alone without a
    sector); `best` and `sector` choose a channel, they are not one to fall back on."""
    base = "id: j\nname: J\nentry: {event: Go}\nsteps:\n  - send: {template: t, %s}\n"
    assert [p.split(": ", 1)[1] for p in problems(base % "channel: sector")] == [
        "steps[0].send.fallback: channel: sector needs a fallback: the channels to use after "
        "the sector's (alone when the brand has no sector)"
    ]
    found = problems(base % "channel: sms, fallback: [best]")
    assert [p.split(": ", 1)[1] for p in found] == [
        "steps[0].send.fallback: best is a choice of channel, not one to fall back on"
    ]
    assert load_journey(base % "channel: sector, fallback: [sms, email]").steps[0].send


def test_a_wrong_enum_names_the_line_and_path() -> None:
    source = ABANDONED_CART.replace("channel: sms", "channel: fax")
    line = line_of(ABANDONED_CART, "channel: sms")
    assert problems(source) == [
        f"line {line}: steps[5].branch[0].steps[0].send.channel: 'fax' is not one of email, sms, "
        "whatsapp, push, wallet, chat, best, sector"
    ]


def test_an_unknown_field_is_named() -> None:
    found = problems(ABANDONED_CART.replace("lateness: 24h", "latenes: 24h"))
    assert found == ["line 10: entry.latenes: is not a known field here"]


def test_every_semantic_problem_is_listed_with_its_line() -> None:
    source = (
        ABANDONED_CART.replace("wait: 45m", "wait: 45 minutes")
        .replace("gte: 150", "greater: 150")
        .replace("  - wait: 1d", "  - wait: 1d\n    send: {template: x}")
    )
    found = problems(source)
    line = line_of(source, "wait: 45 minutes")
    assert any(
        p.startswith(f"line {line}: steps[0].wait: '45 minutes' is not a duration") for p in found
    )
    assert any("greater: unknown operator" in p for p in found)
    assert any("a step does exactly one of" in p and "found wait, send" in p for p in found)


def test_missing_required_fields_and_bad_yaml() -> None:
    assert problems("id: x\nname: X\nsteps: []\n") == ["line 1: entry: is required"]
    assert problems("id: x\n  name: [") == [
        "line 2: not valid YAML: mapping values are not allowed here"
    ]
    assert problems("- a list") == [
        "line 1: a journey is a YAML mapping with id, name, entry and steps"
    ]


def test_entry_needs_exactly_one_trigger() -> None:
    source = "id: x\nname: X\nentry: {event: A, segment: vip}\nsteps: [{wait: 1h}]\n"
    assert problems(source) == [
        "line 3: entry: say exactly one of event, segment, date_trait or api: true "
        "(found event, segment)"
    ]


def test_step_ids_are_unique_across_nested_steps() -> None:
    source = """\
id: x
name: X
entry: {event: A}
steps:
  - id: s
    wait: 1h
  - branch:
      - when: {profile.traits.vip: {eq: true}}
        steps:
          - id: s
            exit: {}
      - otherwise: []
"""
    assert problems(source) == [
        "line 10: steps[1].branch[0].steps[0].id: 's' is used twice (also at steps[0])"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", Duration(90)),
        ("45m", Duration(2700)),
        ("2h", Duration(7200)),
        ("3d", Duration(3 * 86400)),
        ("2w", Duration(14 * 86400)),
        ("PT2H30M", Duration(9000)),
        ("P1M", Duration(0, 1)),
        ("P1Y2M3D", Duration(3 * 86400, 14)),
    ],
)
def test_durations_from_seconds_to_months(text: str, expected: Duration) -> None:
    assert parse_duration(text) == expected


def test_signed_offsets() -> None:
    assert parse_duration("-7d", signed=True) == Duration(-7 * 86400)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("-7d")


def test_the_published_schema_is_current() -> None:
    published = json.loads((ROOT / "docs/journey.schema.json").read_text())
    assert published == journey_schema()
    assert "Step" in published["$defs"]


def test_validate_command_reports_file_and_line(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(ABANDONED_CART)
    bad = tmp_path / "bad.yaml"
    bad.write_text(ABANDONED_CART.replace("wait: 1d", "wait: tomorrow"))
    result = CliRunner().invoke(app, ["journeys", "validate", str(good), str(bad)])
    assert result.exit_code == 1
    assert "journey 'abandoned-cart' is valid (6 steps)" in result.output
    line = line_of(bad.read_text(), "wait: tomorrow")
    assert f"{bad}:line {line}: steps[4].wait: 'tomorrow' is not a duration" in result.output


def test_on_and_yes_are_words_not_booleans() -> None:
    # YAML 1.1 reads `on` as true; the format reads YAML 1.2 booleans only.
    journey = load_journey(
        "id: x\nname: X\nentry: {segment: vip, on: leave}\nsteps:\n"
        "  - emit: {event: Noted, properties: {answer: yes}}\n"
    )
    assert journey.entry.on == "leave"
    assert journey.steps[0].emit is not None
    assert journey.steps[0].emit.properties == {"answer": "yes"}


HELD_OUT = """\
id: ab
name: A/B
entry: {event: Signed Up}
goals:
  - {event: Order Completed, window: 7d}
  - {event: Subscribed}
exits:
  - {event: Unsubscribed, window: 2d}
steps:
  - split:
      holdout: 10
      paths: [{weight: 1, steps: [{send: {channel: email, template: hello}}]}]
"""


def test_goals_have_a_window_and_a_control_group_needs_one() -> None:
    found = problems(HELD_OUT)
    assert found == [
        f"line {line_of(HELD_OUT, 'Subscribed}')}: goals[1]: a split holds out a control group: "
        "give each goal a window (for example window: 7d), over which both groups' "
        "conversions are measured",
        f"line {line_of(HELD_OUT, 'Unsubscribed')}: exits[0].window: only goals have a "
        "conversion window",
    ]
    fixed = HELD_OUT.replace("{event: Subscribed}", "{event: Subscribed, window: P1M}").replace(
        ", window: 2d}", "}"
    )
    journey = load_journey(fixed)
    assert [goal.window for goal in journey.goals] == ["7d", "P1M"]
    assert problems(fixed.replace("window: 7d", "window: a week")) == [
        "line 5: goals[0].window: 'a week' is not a duration: write 90s, 45m, 2h, 3d, 2w or "
        "ISO 8601 such as PT2H or P1M"
    ]
    assert "window" in journey_schema()["$defs"]["Goal"]["properties"]
