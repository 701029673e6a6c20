"""Message templates stay small: the sandbox's limits (range() size, repeated and padded
text, loop steps and calls, output size) refuse a template when it is saved, if its text
alone shows it, and when it renders otherwise; either way a 400 naming the field, never a
500, and a message that cannot render fails with the reason."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from litestar.testing import TestClient

from parcours.messaging import templates
from tests.conftest import WRITE_KEY, admin_headers

FIELD = "t.en.sms.text"


def save(client: TestClient[Any], text: str) -> Any:
    body = json.dumps({"en": {"sms": {"text": text}}}).encode()
    return client.put("/api/templates/t", content=body, headers=admin_headers())


def preview(client: TestClient[Any], text: str, event: dict[str, Any]) -> Any:
    saved = save(client, text)
    assert saved.status_code == 200, saved.text
    basic = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    client.post(
        "/v1/identify",
        content=json.dumps({"userId": "ana", "traits": {"first_name": "Ana"}}).encode(),
        headers={"Authorization": f"Basic {basic}", "Content-Type": "application/json"},
    )
    body = {"customer": "ana", "channel": "sms", "event": event}
    return client.post(
        "/api/templates/t/preview", content=json.dumps(body).encode(), headers=admin_headers()
    )


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("{{ range(10**9)|list|length }}", "range() of 1000000000 items: the limit is 10,000"),
        ("{% for i in range(20000) %}{% endfor %}", "range() of 20000 items"),
        ("{{ 'x' * 10**9 }}", "repeating a text or list 1000000000 times makes it too long"),
        ("{{ ('ab' * 50000) * 2 }}", "repeating a text or list 2 times makes it too long"),
        ("{{ 'x'|center(1000000000) }}", "center(1000000000) would make too long a text"),
        ("{{ '%0999999999d'|format(1) }}", "a width of 999999999 in '%0999999999d' is too wide"),
        ("{{ 2 ** 100000 }}", "2 ** 100000 is too large a number"),
    ],
)
def test_a_template_over_the_limits_is_refused_when_saved(
    client: TestClient[Any], text: str, said: str
) -> None:
    response = save(client, text)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == "template"
    assert response.json()["message"].startswith(f"{FIELD}: {said}")
    assert client.get("/api/templates/t", headers=admin_headers()).status_code == 404


@pytest.mark.parametrize(
    ("text", "event", "said"),
    [
        ("{{ 'x' * event.n }}", {"n": 1_000_000}, "repeating a text or list 1000000 times"),
        ("{% for i in range(event.n) %}{% endfor %}", {"n": 20_000}, "range() of 20000 items"),
        (
            "{% for a in range(event.n) %}{% for b in range(event.n) %}{% endfor %}{% endfor %}",
            {"n": 400},  # 160,400 steps
            "the template takes more than 100000 loop steps and calls",
        ),
        (
            "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
            "{{ f(event.n) }}",
            {"n": 20},  # about two million calls
            "the template takes more than 100000 loop steps and calls",
        ),
        (
            "{% for i in range(9000) %}{{ event.s }}{% endfor %}",
            {"s": "x" * 100},
            "the text rendered is longer than 524,288 characters",
        ),
        ("{{ event.s.ljust(event.n) }}", {"s": "x", "n": 200_000}, "ljust() to a width of more"),
        (
            "{{ '{:>{w}}'.format(event.s, w=event.n) }}",
            {"s": "x", "n": 200_000},
            "a format width given by another field is not accepted",
        ),
        ("{{ event.s|replace('', event.s) }}", {"s": "x" * 1000}, "replace() would make"),
        ("{{ 1 / event.n }}", {"n": 0}, "ZeroDivisionError: division by zero"),
    ],
)
def test_a_render_over_the_limits_is_a_400_naming_the_field(
    client: TestClient[Any], text: str, event: dict[str, Any], said: str
) -> None:
    response = preview(client, text, event)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == "template"
    assert response.json()["message"].startswith(f"{FIELD}: {said}")


def test_a_template_cannot_grow_a_list_or_a_namespace() -> None:
    grows = templates.check("t", {"en": {"sms": {"text": "{% set l = [] %}{{ l.append(1) }}"}}})
    with pytest.raises(templates.TemplateProblem, match="access to attribute 'append'"):
        templates.render(grows, "sms", {}, "en")
    with pytest.raises(templates.TemplateProblem, match="unknown variable 'namespace'"):
        templates.check("t", {"en": {"sms": {"text": "{% set n = namespace(s='') %}"}}})


def test_ordinary_templates_render_as_before() -> None:
    text = (
        "{{ customer.first_name }}: {% for p in cart.products %}{{ p.name }} x{{ p.quantity }}"
        "{% if not loop.last %}, {% endif %}{% endfor %} - {{ '%05d'|format(7) }} "
        "{{ 'ab' * 3 }} {{ 2 ** 10 }} {{ 7 % 3 }} {{ '{:>4}'.format('x') }} {{ range(3)|list }}"
    )
    template = templates.check("t", {"en": {"sms": {"text": text}}})
    context = {
        "customer": {"first_name": "Ana"},
        "cart": {"products": [{"name": "Scarf", "quantity": 2}, {"name": "Boots", "quantity": 1}]},
    }
    rendered = templates.render(template, "sms", context, "en")
    assert rendered.fields["text"] == "Ana: Scarf x2, Boots x1 - 00007 ababab 1024 1    x [0, 1, 2]"
