"""The journey simulator: the real engine on a simulated clock, nothing sent."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from parcours.cli import app
from parcours.journeys.api import LifecycleError
from parcours.journeys.simulator import ScriptError, format_timeline, load_script, simulate
from parcours.messaging import templates
from parcours.runtime.clock import parse_iso
from parcours.runtime.db import Database
from tests.conftest import plain_templates
from tests.test_journeys_engine import CART

START = parse_iso("2026-11-24T10:00:00Z")
TEMPLATES = plain_templates(CART)


def test_the_timeline_says_what_would_happen_and_why() -> None:
    script = load_script(
        "- {at: +0m, type: identify, event: x, traits: {push_token: t-1, email: x@example.com,"
        " consent: {push: {marketing: true}}}}\n"
        "- {at: +0m, event: Checkout Started, properties: {checkout_id: c-1, total: 90}}\n"
    )
    timeline = format_timeline(
        simulate(CART, script, start=START, days=3, brand_templates=TEMPLATES), START
    )
    assert timeline.splitlines() == [
        "2026-11-24T10:00:00.000Z  (+00:00)  entered (trigger: Checkout Started)",
        "2026-11-24T10:00:00.000Z  (+00:00)  waits until 2026-11-24T11:00:00.000Z",
        "2026-11-24T11:00:00.000Z  (+01:00)  would send cart-push on push (marketing)",
        "2026-11-24T11:00:00.000Z  (+01:00)  waits until 2026-11-24T12:00:00.000Z",
        "2026-11-24T12:00:00.000Z  (+02:00)  held back cart-email: no marketing consent for "
        "email (never given)",
        "2026-11-24T12:00:00.000Z  (+02:00)  waits until 2026-11-25T12:00:00.000Z",
        "2026-11-25T12:00:00.000Z  (+1d02:00)  branched at s6: arm otherwise",
        "2026-11-25T12:00:00.000Z  (+1d02:00)  exited: completed",
    ]


def test_an_order_in_the_script_ends_the_run() -> None:
    script = load_script(
        "- {at: +0m, event: Checkout Started, properties: {checkout_id: c-1, total: 90}}\n"
        "- {at: +90m, event: Order Completed, properties: {checkout_id: c-1}}\n"
    )
    lines = [e.what for e in simulate(CART, script, start=START, days=3, brand_templates=TEMPLATES)]
    assert lines[-1] == "exited: goal reached: Order Completed"
    assert "would send cart-email on email (marketing)" not in lines


def test_a_bad_script_is_named() -> None:
    with pytest.raises(ScriptError, match="item 1: needs `event`"):
        simulate(CART, [{"at": "+1h"}], start=START, brand_templates=TEMPLATES)
    with pytest.raises(ScriptError, match="item 1: at: 'soon' is neither"):
        simulate(CART, [{"at": "soon", "event": "X"}], start=START, brand_templates=TEMPLATES)


@contextmanager
def closing_database(url: str) -> Iterator[Database]:
    db = Database(url)
    try:
        yield db
    finally:
        db.dispose()


def test_an_unknown_template_is_refused_before_anything_runs() -> None:
    with pytest.raises(LifecycleError, match="step push: unknown template 'cart-push'"):
        simulate(CART, [], start=START)


def test_simulate_command_starts_from_a_real_customer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'real.db'}"
    env = {"PARCOURS_DATABASE_URL": url}
    events = tmp_path / "history.jsonl"
    events.write_text(
        '{"type": "identify", "userId": "vip-1", "messageId": "h1",'
        ' "timestamp": "2025-01-01T00:00:00Z", "traits": {"tier": "gold",'
        ' "phone": "+33612345678", "consent": {"whatsapp": {"marketing": true}}}}\n'
    )
    runner = CliRunner()
    assert runner.invoke(app, ["migrate"], env=env).exit_code == 0  # import creates none
    assert runner.invoke(app, ["import", "events", str(events)], env=env).exit_code == 0
    # The brand's own template, in the real database, comes into the simulation.
    template = {
        "en": {"whatsapp": {"template": "vip_hello", "language": "en", "category": "marketing"}}
    }
    with closing_database(url) as db, db.write() as conn:
        templates.save(conn, "vip-hello", template, "ana", START)
    journey = tmp_path / "vip.yaml"
    journey.write_text(
        "id: vip\nname: VIP\nentry: {event: Signed In}\nsteps:\n"
        "  - branch:\n"
        "      - when: {profile.traits.tier: {eq: gold}}\n"
        "        steps: [{send: {channel: whatsapp, template: vip-hello}}]\n"
        "      - otherwise: []\n"
    )
    script = tmp_path / "script.yaml"
    script.write_text("- {at: +0m, event: Signed In}\n")
    result = runner.invoke(
        app,
        [
            "journeys",
            "simulate",
            str(journey),
            "--script",
            str(script),
            "--customer",
            "vip-1",
            "--start",
            "2026-11-24T10:00:00Z",
            "--days",
            "1",
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "would send vip-hello on whatsapp (marketing)" in result.output
