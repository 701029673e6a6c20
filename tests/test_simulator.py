"""The journey simulator: the real engine on a simulated clock, nothing sent."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient
from typer.testing import CliRunner

from parcours import brand
from parcours.cli import app
from parcours.journeys import simulator
from parcours.journeys.simulator import ScriptError, TimelineEntry, format_timeline, load_script
from parcours.journeys.versions import LifecycleError
from parcours.messaging import templates
from parcours.runtime.clock import parse_iso
from parcours.runtime.db import Database
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.conftest import admin_headers, plain_templates
from tests.test_journeys_engine import CART

START = parse_iso("2026-11-24T10:00:00Z")


def simulate(*args: Any, **options: Any) -> list[TimelineEntry]:
    """The simulator on a scratch Parcours opened as the composition root opens it."""
    return simulator.simulate(*args, open_scratch=Services.open_scratch, **options)


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


# ---- no side effects ---------------------------------------------------------------------


class _Receiver(ThreadingHTTPServer):
    """A real HTTP server on loopback that records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.requests.append((self.command, self.path))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                return None

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self) -> _Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.shutdown()
        self.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


def webhook_journey(url: str) -> str:
    return (
        "id: crm-sync\nname: CRM sync\nentry: {event: Signed Up}\nsteps:\n"
        "  - id: tell-crm\n"
        f'    webhook: {{url: "{url}", secret: crm, body: {{plan: gold}}}}\n'
        "  - id: after\n"
        "    emit: {event: CRM Told}\n"
    )


SIGNING_KEY = "outbound-signing-key-0123456789"


def test_a_simulated_webhook_calls_nothing_and_shows_the_call_it_would_make() -> None:
    with _Receiver() as receiver:
        # Even a brand that allows this host and holds the step's key: nothing is called.
        brand = Settings(webhooks={"allow_hosts": ["127.0.0.1"], "secrets": {"crm": SIGNING_KEY}})
        entries = simulate(
            webhook_journey(receiver.url),
            [{"at": "+0m", "event": "Signed Up"}],
            start=START,
            days=1,
            brand_settings=brand,
        )
        assert receiver.requests == []
    calls = [e for e in entries if e.call is not None]
    assert [e.what for e in calls] == [f"would call POST {receiver.url} (nothing is sent)"]
    call = calls[0].call
    assert call is not None
    assert call.method == "POST" and call.url == receiver.url
    assert call.body["data"] == {"plan": "gold"}
    assert call.body["step"] == "tell-crm" and call.body["entry_event"] == "Signed Up"
    assert SIGNING_KEY not in msgspec.json.encode(call).decode()  # never read, let alone shown
    assert "'crm'" in call.headers["Parcours-Signature"]
    assert [e.what for e in entries][-2:] == ["emits CRM Told", "exited: completed"]


def test_the_simulate_command_calls_nothing_either(tmp_path: Path) -> None:
    with _Receiver() as receiver:
        journey = tmp_path / "crm.yaml"
        journey.write_text(webhook_journey(receiver.url))
        script = tmp_path / "script.yaml"
        script.write_text("- {at: +0m, event: Signed Up}\n")
        result = CliRunner().invoke(
            app,
            ["journeys", "simulate", str(journey), "--script", str(script), "--days", "1"],
            env={"PARCOURS_DATA_DIR": str(tmp_path / "data")},
        )
        assert receiver.requests == []
    assert result.exit_code == 0, result.output
    assert f"would call POST {receiver.url} (nothing is sent)" in result.output
    assert '"data":{"plan":"gold"}' in result.output
    assert not (tmp_path / "data").exists()  # and it wrote nothing outside its scratch


# ---- what journeys do: the brand's policies, segments, several customers -----------------

TWO_EMAILS = """\
id: two-emails
name: Two emails
entry: {event: Signed Up}
steps:
  - id: first
    send: {channel: email, template: first-email}
  - wait: 1h
  - id: second
    send: {channel: email, template: second-email, if_held: drop}
"""

OPT_IN = (
    "- {at: +0m, type: identify, traits: {email: ana@example.com,"
    " consent: {email: {marketing: true}}}}\n"
    "- {at: +1m, event: Signed Up}\n"
)


def test_the_brands_policies_file_applies(tmp_path: Path) -> None:
    rules = tmp_path / "policies.toml"
    rules.write_text(
        '[[caps]]\nchannel = "email"\npurpose = "marketing"\ncount = 1\nwindow = "7d"\n'
    )
    kept = [
        e.what
        for e in simulate(
            TWO_EMAILS,
            load_script(OPT_IN),
            start=START,
            days=1,
            brand_templates=plain_templates(TWO_EMAILS),
            brand_settings=Settings(policies_file=str(rules)),
        )
    ]
    assert "would send first-email on email (marketing)" in kept
    assert (
        "held back second-email: frequency cap: 1 marketing message(s) per 168h on email"
    ) in kept
    assert "would send second-email on email (marketing)" not in kept
    # Without the brand's file, both go.
    plain = [
        e.what
        for e in simulate(
            TWO_EMAILS,
            load_script(OPT_IN),
            start=START,
            days=1,
            brand_templates=plain_templates(TWO_EMAILS),
        )
    ]
    assert "would send second-email on email (marketing)" in plain


VIP_WELCOME = """\
id: vip-welcome
name: Welcome to VIP
entry: {segment: vip, on: enter}
steps:
  - wait: 1d
  - branch:
      - when: {segment.vip: {eq: true}}
        steps:
          - id: still
            send: {channel: email, template: vip-still, purpose: transactional}
      - otherwise: []
"""


def test_a_segment_entry_journey_with_scripted_membership_and_several_customers() -> None:
    script = load_script(
        "- {at: +0m, customer: ana, type: identify, traits: {email: ana@example.com}}\n"
        "- {at: +0m, customer: bo, type: identify, traits: {email: bo@example.com}}\n"
        "- {at: +1h, customer: ana, enters: vip}\n"
        "- {at: +1h, customer: bo, enters: vip}\n"
        "- {at: +3h, customer: ana, leaves: vip}\n"
    )
    entries = simulate(
        VIP_WELCOME, script, start=START, days=2, brand_templates=plain_templates(VIP_WELCOME)
    )
    said = [(e.customer, e.what) for e in entries]
    assert said == [
        ("ana", "enters segment vip"),
        ("ana", "entered (trigger: Segment Entered)"),
        ("ana", "waits until 2026-11-25T11:00:00.000Z"),
        ("bo", "enters segment vip"),
        ("bo", "entered (trigger: Segment Entered)"),
        ("bo", "waits until 2026-11-25T11:00:00.000Z"),
        ("ana", "leaves segment vip"),
        ("ana", "branched at s2: arm otherwise"),
        ("ana", "exited: completed"),
        ("bo", "branched at s2: arm 1"),
        ("bo", "would send vip-still on email (transactional)"),
        ("bo", "exited: completed"),
    ]
    lines = format_timeline(entries, START).splitlines()
    assert lines[0] == "2026-11-24T11:00:00.000Z  (+01:00)  [ana] enters segment vip"


def test_a_segment_the_brand_defines_is_evaluated_as_the_brand_defines_it() -> None:
    gold = "id: vip\nname: VIP\nconditions:\n  - profile.traits.tier: {eq: gold}\n"
    script = load_script(
        "- {at: +1h, type: identify, traits: {email: cy@example.com, tier: gold}}\n"
    )
    entries = simulate(
        VIP_WELCOME,
        script,
        start=START,
        days=2,
        brand_templates=plain_templates(VIP_WELCOME),
        brand_segments={"vip": gold},
    )
    assert [e.what for e in entries][:2] == [
        "enters segment vip",
        "entered (trigger: Segment Entered)",
    ]
    assert "would send vip-still on email (transactional)" in [e.what for e in entries]


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"at": "+1h", "event": "X", "colour": "red"}, "item 1: unknown key 'colour'"),
        ({"event": "X", "enters": "vip"}, "item 1: say one of event, enters or leaves"),
        ({"enters": "v ip"}, "item 1: enters: 'v ip' is not a segment id"),
        ({"event": "X", "customer": ""}, "item 1: customer: a name"),
        ({"event": "X", "type": "shout"}, "item 1: type: 'shout' is not one of"),
        ({"event": "X", "properties": [1]}, "item 1: properties: must be a mapping"),
        ("just text", "item 1: an item is a mapping"),
    ],
)
def test_a_bad_script_item_is_named(item: object, message: str) -> None:
    with pytest.raises(ScriptError, match=re.escape(message)):
        simulate(CART, [item], start=START, brand_templates=TEMPLATES)  # type: ignore[list-item]


def test_simulation_through_the_api_shows_customers_and_the_call(
    client: TestClient[Any], services: Services
) -> None:
    with _Receiver() as receiver:
        response = client.post(
            "/api/journeys/simulate",
            json={
                "journey": webhook_journey(receiver.url),
                "start": "2026-11-24T10:00:00Z",
                "days": 1,
                "script": [{"at": "+0m", "customer": "dee", "event": "Signed Up"}],
            },
            headers=admin_headers(),
        )
        assert receiver.requests == []
    assert response.status_code == 200, response.text
    timeline = response.json()["timeline"]
    assert {item["customer"] for item in timeline} == {"dee"}
    [call] = [item["call"] for item in timeline if "call" in item]
    assert call["url"] == receiver.url and call["body"]["data"] == {"plan": "gold"}
    too_long = client.post(
        "/api/journeys/simulate",
        json={"journey": CART, "script": [], "days": 10**9},
        headers=admin_headers(),
    )
    assert too_long.status_code == 400 and too_long.json()["error"]["field"] == "days"


def test_the_documented_script_runs() -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs/journeys.md").read_text()
    found = re.search(r"a simulation script.*?```yaml\n(.*?)```", docs, re.S)
    assert found is not None
    script = load_script(found.group(1))
    cart = [
        (e.customer, e.what)
        for e in simulate(CART, script, start=START, days=1, brand_templates=TEMPLATES)
    ]
    assert cart[:2] == [
        ("ana", "entered (trigger: Checkout Started)"),
        ("ana", "waits until 2026-11-24T11:05:00.000Z"),
    ]
    vip = [
        (e.customer, e.what)
        for e in simulate(
            VIP_WELCOME, script, start=START, days=3, brand_templates=plain_templates(VIP_WELCOME)
        )
    ]
    assert vip == [
        ("bo", "enters segment vip"),
        ("bo", "entered (trigger: Segment Entered)"),
        ("bo", "waits until 2026-11-25T11:00:00.000Z"),
        ("bo", "branched at s2: arm 1"),
        ("bo", "would send vip-still on email (transactional)"),
        ("bo", "exited: completed"),
        ("bo", "leaves segment vip"),
    ]


MORNING = """\
id: morning
name: Good morning
entry: {event: Signed Up}
steps:
  - wait_until: {time: "09:00"}
  - emit: {event: Morning Came}
"""


def test_a_simulation_waits_in_the_zone_set_on_the_settings_page(
    client: TestClient[Any], services: Services
) -> None:
    settings = services.settings
    defaults = brand.Defaults(
        settings.brand_name, settings.sector, settings.brand_timezone, settings.brand_locale
    )
    brand.save(services.db, defaults, brand.Changes(timezone="Asia/Tokyo"), 0)
    response = client.post(
        "/api/journeys/simulate",
        json={
            "journey": MORNING,
            "start": "2026-11-24T10:00:00Z",  # 19:00 in Tokyo
            "days": 1,
            "script": [{"at": "+0m", "customer": "dee", "event": "Signed Up"}],
        },
        headers=admin_headers(),
    )
    assert response.status_code == 200, response.text
    whats = [item["what"] for item in response.json()["timeline"]]
    assert whats[1] == (  # 09:00 in Tokyo
        "waits until 2026-11-25T00:00:00.000Z "
        "(Asia/Tokyo: no time zone is known for the customer: the brand's)"
    )
