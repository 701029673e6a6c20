"""Validation says everything at once: every mistake of form in a definition (msgspec alone
stops at the first), and, for a journey, every send whose template is unknown or lacks
content, in `parcours journeys validate` as in the API's submit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from typer.testing import CliRunner

from parcours.cli import app
from parcours.journeys import versions as journeys
from parcours.journeys.definition import JourneyError, load_journey
from parcours.messaging import templates
from parcours.runtime.definitions import DefinitionError
from parcours.segments.definition import SegmentError, load_segment
from parcours.services import Services
from tests.conftest import admin_headers

MISTAKES = """\
id: cart
name: Cart
colour: blue
entry:
  event: Checkout Started
  reentry: sometimes
steps:
  - id: first
    wait: 45m
    sned: {channel: push}
  - send: {channel: pigeon, template: abandoned-cart-push}
  - wait_for: {event: Cart Viewed}
  - branch:
      - when: {entry.properties.total: {gte: 150}}
        steps:
          - send: {template: 3}
"""

UNKNOWN_TEMPLATES = """\
id: cart
name: Cart
entry: {event: Checkout Started}
steps:
  - id: push
    send: {channel: push, template: cart-reminder}
  - wait: 1h
  - id: email
    send: {channel: email, template: abandoned-cart-push}
  - split:
      paths:
        - weight: 1
          steps:
            - send: {channel: sms, template: nowhere, purpose: transactional}
  - id: fine
    send: {channel: push, template: abandoned-cart-push}
"""


def problems(error: DefinitionError) -> list[str]:
    return [str(problem) for problem in error.problems]


def test_every_mistake_of_form_is_named_at_once() -> None:
    with pytest.raises(JourneyError) as caught:
        load_journey(MISTAKES)
    assert problems(caught.value) == [
        "line 3: colour: is not a known field here",
        "line 6: entry.reentry: 'sometimes' is not one of once, once_per_period, every_time",
        "line 10: steps[0].sned: is not a known field here",
        "line 11: steps[1].send.channel: 'pigeon' is not one of email, sms, whatsapp, push, "
        "wallet, chat, best, sector",
        "line 12: steps[2].wait_for.timeout: is required",
        "line 16: steps[3].branch[0].steps[0].send.template: expected `str`, got `int`",
    ]


def test_a_segment_names_every_mistake_of_form_too() -> None:
    source = "id: vip\nnames: VIP\nconditions: {a: 1}\ndescription: [x]\n"
    with pytest.raises(SegmentError) as caught:
        load_segment(source)
    assert problems(caught.value) == [
        "line 1: name: is required",
        "line 2: names: is not a known field here",
        "line 3: conditions: expected `array`, got `object`",
        "line 4: description: expected `str`, got `array`",
    ]


def test_every_unknown_template_is_named_with_its_line() -> None:
    with pytest.raises(JourneyError) as caught:
        journeys.validate(UNKNOWN_TEMPLATES, templates.shipped().get)
    assert problems(caught.value) == [
        "line 6: steps[0].send.template: unknown template 'cart-reminder'",
        "line 9: steps[2].send.template: template 'abandoned-cart-push' has no email content "
        "(it has push)",
        "line 14: steps[3].split.paths[0].steps[0].send.template: unknown template 'nowhere'",
    ]


def test_the_validate_command_names_unknown_templates(tmp_path: Path) -> None:
    journey = tmp_path / "cart.yaml"
    journey.write_text(UNKNOWN_TEMPLATES)
    broken = tmp_path / "broken.yaml"
    broken.write_text(MISTAKES)
    result = CliRunner().invoke(
        app, ["journeys", "validate", str(journey), str(broken), "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert f"{journey}:line 6: steps[0].send.template: unknown template 'cart-reminder'" in lines
    assert (
        f"{journey}:line 14: steps[3].split.paths[0].steps[0].send.template: unknown template "
        "'nowhere'" in lines
    )
    assert sum(line.startswith(f"{broken}:") for line in lines) == 6
    assert not (tmp_path / "parcours.db").exists()  # validating made no database


def test_the_validate_command_knows_the_brands_templates(
    services: Services, tmp_path: Path
) -> None:
    with services.db.write() as conn:
        for name in ("cart-reminder", "nowhere"):
            content = {"en": {"push": {"title": "t", "body": "b"}, "sms": {"text": "t"}}}
            templates.save(conn, name, content, "test", 0)
        both = {"email": {"subject": "s", "text": "t"}, "push": {"title": "t", "body": "b"}}
        templates.save(conn, "abandoned-cart-push", {"en": both}, "test", 0)
    journey = tmp_path / "cart.yaml"
    journey.write_text(UNKNOWN_TEMPLATES)
    result = CliRunner().invoke(
        app,
        ["journeys", "validate", str(journey)],
        env={"PARCOURS_DATABASE_URL": services.settings.resolved_database_url},
    )
    assert result.output == f"{journey}: journey 'cart' is valid (5 steps)\n"
    assert result.exit_code == 0


def test_submit_names_every_unknown_template(client: TestClient[Any]) -> None:
    created = client.post("/api/journeys", content=UNKNOWN_TEMPLATES, headers=admin_headers())
    assert created.status_code == 201  # a draft may name templates not made yet
    refused = client.post("/api/journeys/cart/versions/1/submit", headers=admin_headers())
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["message"] == (
        "cart: step push: unknown template 'cart-reminder'; step email: template "
        "'abandoned-cart-push' has no email content (it has push); step "
        "steps[3].split.paths[0].steps[0]: unknown template 'nowhere'"
    )
    assert [(p["line"], p["path"]) for p in error["problems"]] == [
        (6, "steps[0].send.template"),
        (9, "steps[2].send.template"),
        (14, "steps[3].split.paths[0].steps[0].send.template"),
    ]
    version = client.get("/api/journeys/cart/versions/1", headers=admin_headers()).json()
    assert version["status"] == "draft"  # nothing changed
