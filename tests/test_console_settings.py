"""The Settings page's form for quiet hours and frequency caps (docs/console.md,
"Settings"), over HTTP without a browser, on SQLite and PostgreSQL: the owner adds,
changes and removes rules with fields, posting what the page shows, and what is saved is
in force and audited; a wrong value is named on its field and changes nothing; the form
and the text edit the same rules, under the same checks; a viewer is refused."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import time
from html import unescape
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from parcours import accounts, brand
from parcours.messaging import policies
from parcours.services import Services
from tests.test_brand_settings import DEFAULTS, _csrf, _decide, team
from tests.test_journeys_engine import opt_in

__all__ = ["team"]  # the fixture, used by name


class _Fields(HTMLParser):
    """The fields of one form of a page as a browser would post them: text, time and
    number inputs, checked boxes, each select's chosen option (no submit button)."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id = form_id
        self.inside = False
        self.select: str | None = None
        self.first_option: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        if not self.inside:
            return
        if tag == "input" and a.get("name"):
            if a.get("type") != "checkbox" or "checked" in a:
                self.fields[a["name"]] = a.get("value", "on" if a.get("type") == "checkbox" else "")
        elif tag == "select":
            self.select, self.first_option = a["name"], None
        elif tag == "option" and self.select is not None:
            if self.first_option is None:
                self.first_option = a["value"]
                self.fields.setdefault(self.select, a["value"])
            if "selected" in a:
                self.fields[self.select] = a["value"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "select":
            self.select = None


def _form(html: str) -> dict[str, str]:
    parser = _Fields("rules-form")
    parser.feed(html)
    assert parser.fields, "no rules form on the page"
    return parser.fields


def _send(client: TestClient[Any], fields: dict[str, str], **headers: str) -> httpx.Response:
    return client.post(
        "/console/settings/rules/form",
        data={**fields, "csrf": _csrf(client)},
        headers=headers,
        follow_redirects=False,
    )


def _rules(services: Services) -> policies.Policies:
    with services.db.read() as conn:
        return policies.in_force(conn, services.delivery.rules)


def _problem(html: str, slot: str) -> str:
    found = re.search(rf'<small id="{slot}" class="field-error">([^<]*)</small>', html)
    assert found is not None, slot
    return unescape(found.group(1))


def test_a_rule_added_with_the_form_is_in_force_and_audited(
    services: Services, team: dict[str, TestClient[Any]]
) -> None:
    opt_in(services, "ana")
    assert _decide(services).allowed  # no shipped rule holds marketing email
    owner = team["owner"]
    shipped = _rules(services)
    fields = _form(owner.get("/console/settings").text)
    assert (fields["quiet-rules"], fields["cap-rules"]) == ("2", "2")
    assert fields["quiet-0-country"] == "FR" and "quiet-0-day-sun" not in fields

    # "Add a quiet-hours rule" draws the form again with one more, saving nothing.
    added = _send(owner, {**fields, "action": "add-quiet"})
    assert added.status_code == 200
    assert "Not saved yet" in added.text
    assert 'id="f-quiet-2-country" autofocus' in added.text  # the new rule's first field
    fields = _form(added.text)
    assert fields["quiet-rules"] == "3"
    # With HTMX, the form alone comes back, to be swapped in.
    fragment = _send(owner, {**fields, "action": "add-cap"}, **{"hx-request": "true"})
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert _form(fragment.text)["cap-rules"] == "3"
    assert _rules(services) == shipped
    # France, email, every day from 20:00 to 21:00: at 14:13 marketing email waits.
    fields.update(
        {
            "quiet-2-country": "FR",
            "quiet-2-channel-email": "on",
            "quiet-2-from": "20:00",
            "quiet-2-until": "21:00",
        }
    )
    saved = _send(owner, fields)
    assert saved.status_code == 303
    assert saved.headers["location"] == "/console/settings?saved=rules#rules"
    rules = _rules(services)
    new = policies.QuietHours(
        "FR",
        ("email",),
        "marketing",
        frozenset(range(7)),
        time(20, 0),
        time(21, 0),
        True,
    )
    # The boxes list the channels in one order, which says nothing of a rule.
    assert [replace(r, channels=tuple(sorted(r.channels))) for r in rules.quiet_hours] == [
        replace(r, channels=tuple(sorted(r.channels))) for r in (*shipped.quiet_hours, new)
    ]
    assert (rules.caps, rules.duplicate_window_ms) == (shipped.caps, shipped.duplicate_window_ms)
    held = _decide(services)
    assert not held.allowed and held.reason.startswith("quiet hours (FR:20:00-21:00)")

    # The audit log has the rules before (the files') and after, as text.
    with services.db.read() as conn:
        [entry] = accounts.entries(conn, action="settings.rules_changed")
    assert entry.before is not None and entry.before["send_rules"] is None
    assert entry.after is not None and entry.after["send_rules"] == policies.as_text(rules)
    # The text in the advanced section is what the form saved, and the form reads it back.
    page = owner.get("/console/settings").text
    assert unescape(page).count(policies.as_text(rules)) == 1
    assert _form(page)["quiet-rules"] == "3"


def test_a_rule_changed_and_one_removed_with_the_form(
    services: Services, team: dict[str, TestClient[Any]]
) -> None:
    owner = team["owner"]
    fields = _form(owner.get("/console/settings").text)
    # Remove the French SMS rule (the first), then allow 5 marketing messages a day.
    fields = _form(_send(owner, {**fields, "action": "remove-quiet-0"}).text)
    assert fields["quiet-rules"] == "1" and fields["quiet-0-country"] == "*"
    fields.update({"cap-1-count": "5", "cap-0-per": "rolling", "cap-0-hours": "72"})
    fields["duplicates-hours"] = "48"
    assert _send(owner, fields).status_code == 303
    rules = _rules(services)
    assert [rule.country for rule in rules.quiet_hours] == ["*"]
    assert [(cap.channel, cap.count, cap.per, cap.window_ms) for cap in rules.caps] == [
        ("sms", 1, "rolling", 72 * 3_600_000),
        ("all", 5, "local_day", 24 * 3_600_000),
    ]
    assert rules.duplicate_window_ms == 48 * 3_600_000


@pytest.mark.parametrize(
    ("field", "value", "slot", "message"),
    [
        ("quiet-0-until", "", "e-quiet-0-until", "Give the time they stop, later than the start"),
        ("quiet-1-until", "07:30", "e-quiet-1-until", "later than the start"),
        ("cap-0-count", "0", "e-cap-0-count", "Give a number of messages: 1 or more."),
        ("quiet-1-country", "ZZ", "e-quiet-1-country", "Choose everywhere or a country."),
        ("quiet-0-day-mon", "", "e-quiet-0-days", "Choose at least one day."),
        ("cap-1-purpose", "gossip", "e-cap-1-purpose", "Choose a purpose."),
    ],
)
def test_a_wrong_value_is_named_on_its_field_and_changes_nothing(
    services: Services,
    team: dict[str, TestClient[Any]],
    field: str,
    value: str,
    slot: str,
    message: str,
) -> None:
    owner = team["owner"]
    shipped = _rules(services)
    fields = _form(owner.get("/console/settings").text)
    if field.startswith("quiet-0-day-"):  # no day at all
        fields = {k: v for k, v in fields.items() if not k.startswith("quiet-0-day-")}
    else:
        fields[field] = value
    fields["cap-1-count"] = "4"  # a change beside it, not saved either
    refused = _send(owner, fields)
    assert refused.status_code == 400
    assert message in _problem(refused.text, slot)
    assert "Nothing was changed." in refused.text
    # Only the wrong field is marked, the focus is on it, and the form keeps what was typed.
    if slot.endswith("-days"):  # a group of boxes: its fieldset is described by it
        assert f'<fieldset aria-describedby="{slot}">' in refused.text
        assert 'aria-invalid="true"' not in refused.text
    else:
        assert refused.text.count('aria-invalid="true"') == 1
        assert re.search(rf'aria-describedby="[^"]*{slot}[^"]*" aria-invalid="true"', refused.text)
    assert "autofocus" in refused.text
    assert _form(refused.text)["cap-1-count"] == "4"
    assert _rules(services) == shipped
    with services.db.read() as conn:
        assert brand.current(conn, DEFAULTS).version == 0
        assert accounts.entries(conn, action="settings.") == []


def test_a_wrong_value_is_named_in_the_viewers_language(
    services: Services, team: dict[str, TestClient[Any]]
) -> None:
    owner = team["owner"]
    fields = _form(owner.get("/console/settings").text)
    fields["quiet-0-until"] = ""
    refused = _send(owner, fields, **{"accept-language": "fr-FR"})
    assert refused.status_code == 400
    assert _problem(refused.text, "e-quiet-0-until") == (
        "Donnez l’heure où ils s’arrêtent, après le début, par exemple 20:00."
    )
    assert "Rien n’a changé." in refused.text
    assert ">Heures calmes, règle 1</legend>" in refused.text


def test_the_text_meets_the_checks_the_form_does(
    services: Services, team: dict[str, TestClient[Any]]
) -> None:
    owner = team["owner"]
    text = policies.as_text(_rules(services)).replace("count = 1", "count = 0", 1)
    refused = owner.post(
        "/console/settings/rules",
        data={"csrf": _csrf(owner), "rules": text},
        follow_redirects=False,
    )
    assert refused.status_code == 400
    assert "caps rule 1: count must be 1 or more, got 0" in unescape(refused.text)
    assert '<details class="rules-text" open>' in refused.text  # the text, shown again
    with services.db.read() as conn:
        assert brand.current(conn, DEFAULTS).version == 0
    # A rule saved as text is what the form then shows.
    text = text.replace("count = 0", "count = 2", 1)
    saved = owner.post("/console/settings/rules", data={"csrf": _csrf(owner), "rules": text})
    assert saved.status_code == 200  # followed to the page
    assert _form(owner.get("/console/settings").text)["cap-0-count"] == "2"


def test_a_viewer_sees_the_rules_but_no_form_and_cannot_change_them(
    services: Services, team: dict[str, TestClient[Any]]
) -> None:
    owner_fields = _form(team["owner"].get("/console/settings").text)
    viewer = team["viewer"]
    page = viewer.get("/console/settings").text
    assert 'id="rules-form"' not in page
    assert "<caption>Quiet hours" in page and "France" in page  # the rules, read only
    assert re.search(r'<textarea id="f-rules"[^>]* readonly>', page)
    csrf = re.search(r'"X-CSRF-Token": "([^"]+)"', page)
    assert csrf is not None
    for action in ("", "add-quiet"):
        refused = viewer.post(
            "/console/settings/rules/form",
            data={**owner_fields, "cap-0-count": "9", "action": action, "csrf": csrf.group(1)},
        )
        assert refused.status_code == 403
    with services.db.read() as conn:
        assert brand.current(conn, DEFAULTS).version == 0
