"""The console's Segments and Templates pages over HTTP (no browser): a segment built with
the form of conditions, the YAML and the form kept in step, the count it would hold shown
as one edits without anything saved, each problem on its field, its entries and exits per
day; a template's push card, WhatsApp bubble and Wallet pass drawn as they look, its
preview following the YAML being typed, and a test sent to an address through delivery
and the configured provider (the sandbox, and a real SMTP server), marked as a test,
audited, refused to a viewer (docs/console.md)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from litestar.testing import TestClient

from parcours import accounts
from parcours.app import create_app
from parcours.customers import profiles
from parcours.log import queries
from parcours.messaging import outbox_page, templates
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.settings import Settings
from parcours.segments import catalog, drafts
from parcours.services import Services
from tests.conftest import make_event
from tests.peers import RunningSmtp, SmtpPeer

PASSWORD = "a long enough passphrase"
DAY = 24 * 3_600_000


def _team(services: Services) -> None:
    db, now = services.db, services.clock.now_ms()
    token = accounts.setup_link_token(db, now)
    assert token is not None
    owner = accounts.accept_invitation(
        db, token, email="owner@brand.example", name="Owner", password=PASSWORD, now=now
    )
    for role in ("marketer", "viewer"):
        _, link = accounts.invite(db, owner, email=f"{role}@brand.example", role=role, now=now)
        accounts.accept_invitation(db, link, email="", name=role, password=PASSWORD, now=now)


class Console:
    """A browser without a browser: one user's session, its CSRF token on every POST."""

    def __init__(self, services: Services, role: str) -> None:
        self.client: TestClient[Any] = TestClient(app=create_app(services, close_on_shutdown=False))
        self.client.__enter__()
        answer = self.client.post(
            "/console/login",
            data={"email": f"{role}@brand.example", "password": PASSWORD},
            follow_redirects=False,
        )
        assert answer.status_code == 303, answer.text
        page = self.client.get("/console/segments").text
        found = re.search(r'name="csrf" value="([^"]+)"', page)
        assert found is not None
        self.csrf = found.group(1)

    def get(self, path: str, **params: str) -> Any:
        return self.client.get(path, params=params)

    def post(self, path: str, data: dict[str, str], **kwargs: Any) -> Any:
        return self.client.post(path, data={"csrf": self.csrf, **data}, **kwargs)

    def close(self) -> None:
        self.client.__exit__(None, None, None)


@pytest.fixture
def marketer(services: Services) -> Iterator[Console]:
    _team(services)
    console = Console(services, "marketer")
    yield console
    console.close()


def _buyers(services: Services) -> None:
    """u-1: two orders and gold; u-2: one order; u-3: nothing but a visit."""
    services.writer.append_sync(
        [
            make_event(
                "identify", userId="u-1", traits={"email": "ana@example.com", "tier": "gold"}
            ),
            make_event("identify", userId="u-2", traits={"email": "bob@example.com"}),
            make_event("identify", userId="u-3", traits={"email": "cyd@example.com"}),
        ]
        + [
            make_event(userId="u-1", event="Order Completed", properties={"order_id": f"o{n}"})
            for n in range(2)
        ]
        + [make_event(userId="u-2", event="Order Completed", properties={"order_id": "o9"})]
    )


def _text(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", " ", html))


def _slot(html: str, slot: str) -> str:
    """What a field's problem slot says."""
    found = re.search(rf'<small id="{slot}"[^>]*>(.*?)</small>', html, re.S)
    assert found is not None, slot
    return unescape(found.group(1)).strip()


FORM = {
    "segment": "",
    "id": "buyers",
    "name": "Buyers",
    "description": "",
    "match": "all",
    "rows": "1",
    "kind-0": "event",
    "name-0": "Order Completed",
    "op-0": "gte",
    "value-0": "2",
    "days-0": "30",
}


# ---- segments ------------------------------------------------------------------------------


def test_a_segment_built_with_the_form_is_counted_as_one_edits_and_saved(
    services: Services, marketer: Console
) -> None:
    _buyers(services)
    # The form's draft: who it would hold now, and the YAML it writes, nothing saved.
    answer = marketer.post("/console/segments/draft?side=form", FORM)
    assert answer.status_code == 200, answer.text
    assert "1 customer(s) now" in _text(answer.text)
    with services.db.read() as conn:
        ana = profiles.resolve(conn, "ana@example.com", "FR")
        assert catalog.listing(conn).segments == []
    assert f'href="/console/customers/{ana}"' in answer.text
    written = re.search(
        r'<textarea id="f-source"[^>]*hx-swap-oob="true"[^>]*>(.*?)</textarea>', answer.text, re.S
    )
    assert written is not None
    yaml_text = unescape(written.group(1))
    assert "within: 30d" in yaml_text and "count: {gte: 2}" in yaml_text
    # Any of two conditions: a second row added, then filled: the count follows.
    added = marketer.post("/console/segments/draft?side=form", {**FORM, "action": "add"})
    assert 'id="f-kind-1"' in added.text and 'hx-swap-oob="true"' in added.text
    both = {
        **FORM,
        "match": "any",
        "rows": "2",
        "kind-1": "trait",
        "name-1": "email",
        "op-1": "eq",
        "value-1": "bob@example.com",
    }
    assert "2 customer(s) now" in _text(
        marketer.post("/console/segments/draft?side=form", both).text
    )
    # Removing the first row leaves the second.
    removed = marketer.post("/console/segments/draft?side=form", {**both, "action": "remove-0"})
    assert 'value="bob@example.com"' in removed.text and 'id="f-kind-1"' not in removed.text
    # Saved from the form: the definition is the YAML the form wrote; audited.
    saved = marketer.post(
        "/console/segments", {**both, "from": "form", "source": ""}, follow_redirects=False
    )
    assert saved.status_code == 303 and saved.headers["location"] == "/console/segments/buyers"
    with services.db.read() as conn:
        view = catalog.describe(conn, "buyers")
        assert accounts.entries(conn, action="segment.saved")[0].user_email == (
            "marketer@brand.example"
        )
    assert "any:" in view.source and "profile.traits.email: {eq: bob@example.com}" in view.source
    page = marketer.get("/console/segments/buyers").text
    assert 'value="Order Completed"' in page and 'value="bob@example.com"' in page


def test_the_yaml_brings_the_form_in_step_or_says_it_goes_beyond_it(
    services: Services, marketer: Console
) -> None:
    _buyers(services)
    source = (
        "id: gold\nname: Gold\nconditions:\n"
        "  - profile.traits.tier: {in: [gold, platinum]}\n"
        "  - events: {name: Order Completed, since_last: {lt: 7d}}\n"
    )
    answer = marketer.post("/console/segments/draft?side=yaml", {"source": source})
    assert "1 customer(s) now" in _text(answer.text)
    builder = re.search(
        r'<fieldset id="builder"[^>]*hx-swap-oob="true".*?</fieldset>', answer.text, re.S
    )
    assert builder is not None
    form = builder.group(0)
    assert 'value="gold, platinum"' in form and 'value="gold"' in form  # the id and the values
    assert re.search(r'<option value="last_event" selected>', form)
    assert re.search(r'name="value-1" value="7"', form)
    # Events filtered by a property: the form cannot say it; the YAML stays the way.
    beyond = source.replace(
        "since_last: {lt: 7d}", "where: [{properties.order_id: {eq: o1}}], count: {gte: 1}"
    )
    answer = marketer.post("/console/segments/draft?side=yaml", {"source": beyond})
    assert "says more than the form can" in _text(answer.text)
    assert "1 customer(s) now" in _text(answer.text)
    # A broken YAML names its line.
    broken = marketer.post(
        "/console/segments/draft?side=yaml", {"source": "id: x\nname: X\nconditionz: []\n"}
    )
    assert "line" in _text(broken.text)


def test_each_problem_is_named_on_its_field(services: Services, marketer: Console) -> None:
    bad = {**FORM, "id": "Not An Id", "value-0": "two"}
    answer = marketer.post("/console/segments/draft?side=form", bad)
    assert "whole number" in _slot(answer.text, "e-row-0")
    answer = marketer.post("/console/segments/draft?side=form", {**bad, "value-0": "2"})
    assert _slot(answer.text, "e-row-0") == ""
    assert "lowercase" in _slot(answer.text, "e-id")
    # Saved as it is, the page says the same on the same fields, and nothing is saved.
    refused = marketer.post(
        "/console/segments", {**bad, "value-0": "2", "from": "form", "source": ""}
    )
    assert refused.status_code == 400
    assert "lowercase" in _slot(refused.text, "e-id") and 'aria-invalid="true"' in refused.text
    with services.db.read() as conn:
        assert catalog.listing(conn).segments == []


def test_rows_are_added_and_removed_without_a_script(services: Services, marketer: Console) -> None:
    page = marketer.post("/console/segments/form", {**FORM, "action": "add", "source": ""})
    assert page.status_code == 200
    assert 'id="f-kind-1"' in page.text and "<title>Segments" in page.text
    assert "count: {gte: 2}" in unescape(page.text)  # the YAML written from the form
    page = marketer.post("/console/segments/form", {**FORM, "action": "remove-0", "source": ""})
    assert 'id="f-kind-0"' not in page.text


def test_a_draft_is_counted_within_bounds_and_writes_nothing(services: Services) -> None:
    _buyers(services)
    source = (
        "id: all\nname: All\nconditions:\n  - events: {name: Order Completed, count: {gte: 0}}\n"
    )
    with services.db.read() as conn:
        before = queries.last_seq(conn)
    counted = drafts.count_draft(services.db, source, services.clock.now_ms())
    assert (counted.members, counted.examined, counted.customers, counted.complete) == (
        3,
        3,
        3,
        True,
    )
    assert len(counted.sample) == 3
    bounded = drafts.count_draft(services.db, source, services.clock.now_ms(), max_customers=2)
    assert (bounded.examined, bounded.complete, bounded.estimate) == (2, False, 3)
    with services.db.read() as conn:
        assert queries.last_seq(conn) == before
        assert catalog.listing(conn).segments == []


def test_a_viewer_cannot_count_nor_save_a_segment(services: Services) -> None:
    _team(services)
    viewer = Console(services, "viewer")
    try:
        assert "Save these conditions" not in viewer.get("/console/segments").text
        for path in ("/console/segments/draft?side=form", "/console/segments/form"):
            assert viewer.post(path, FORM).status_code == 403
        refused = viewer.post("/console/segments", {**FORM, "from": "form"})
        assert refused.status_code == 403
    finally:
        viewer.close()


def test_a_segments_entries_and_exits_per_day(
    services: Services, marketer: Console, clock: SimulatedClock
) -> None:
    _buyers(services)
    source = "id: gold\nname: Gold\nconditions:\n  - profile.traits.tier: {eq: gold}\n"
    assert marketer.post("/console/segments", {"source": source, "segment": ""}).status_code == 200
    services.worker.run_due()  # the batch evaluation: u-1 enters
    clock.advance_ms(DAY)
    services.writer.append_sync(
        [
            make_event("identify", userId="u-2", traits={"tier": "gold"}, at=clock.now_ms()),
            make_event("identify", userId="u-1", traits={"tier": "silver"}, at=clock.now_ms()),
        ]
    )
    services.worker.run_due()
    again = Console(services, "marketer")  # a day later: the first session has ended
    try:
        page = again.get("/console/segments/gold").text
    finally:
        again.close()
    rows = re.findall(r"<tr><td data-label=\"Day\">([^<]+)</td>(.*?)</tr>", page)
    assert len(rows) == 30
    figures = [re.findall(r">(\d+)</td>", cells) for _, cells in rows]
    # Yesterday: one entry, by the batch; today: one entry of the customer's own, one exit.
    assert figures[-2] == ["1", "1", "0"] and figures[-1] == ["1", "0", "1"]
    assert all(f == ["0", "0", "0"] for f in figures[:-2])
    assert "<svg viewBox" in page and 'class="bar-entered"' in page


# ---- templates -----------------------------------------------------------------------------

EVERY_CHANNEL = {
    "en": {
        "email": {
            "subject": "Hello {{ customer.first_name }}",
            "html": "<html><body><p>Dear {{ customer.first_name }}</p></body></html>",
        },
        "sms": {"text": "Hi {{ customer.first_name }}, 20% off"},
        "push": {
            "title": "A gift for {{ customer.first_name }}",
            "body": "Open to see it",
            "image": "https://cdn.example.com/gift.png",
            "url": "https://shop.example.com/gift",
        },
        "whatsapp": {
            "text": "Hi {{ customer.first_name }}",
            "template": "gift_ready",
            "language": "en",
            "category": "marketing",
            "parameters": ["{{ customer.first_name }}", "GIFT20"],
        },
        "wallet": {"header": "Your gift", "body": "{{ customer.first_name }}, 20% off today"},
    }
}


def _eva(services: Services) -> None:
    services.writer.append_sync(
        [
            make_event(
                "identify",
                userId="u-5",
                traits={
                    "email": "eva@example.com",
                    "first_name": "Eva",
                    "consent": {"email": {"marketing": True}, "source": "signup form"},
                },
            )
        ]
    )
    with services.db.write() as conn:
        templates.save(conn, "gift", EVERY_CHANNEL, "test", services.clock.now_ms())


def test_each_channel_is_drawn_as_it_looks(services: Services, marketer: Console) -> None:
    _eva(services)

    def preview(channel: str) -> str:
        answer = marketer.get(
            "/console/templates/gift", customer="eva@example.com", channel=channel
        )
        assert answer.status_code == 200, answer.text
        found = re.search(
            r'<div class="message message-[a-z]+">.*</div>\s*</div>', answer.text, re.S
        )
        assert found is not None, channel
        return found.group(0)

    push = preview("push")
    assert re.search(r'<div class="notification">', push)
    assert "A gift for Eva" in push and "Open to see it" in push
    assert '<img class="push-image" src="https://cdn.example.com/gift.png"' in push
    whatsapp = preview("whatsapp")
    assert "<p>Hi Eva</p>" in whatsapp  # inside the 24 hours
    assert "gift_ready" in whatsapp and "<dt>{{1}}</dt><dd>Eva</dd>" in whatsapp
    assert "<dd>GIFT20</dd>" in whatsapp
    wallet = preview("wallet")
    for part in ("pass-header", "pass-primary", "pass-secondary", "pass-barcode"):
        assert f'class="{part}"' in wallet
    assert "Eva, 20% off today" in wallet
    sms = preview("sms")
    assert 'class="bubble">Hi Eva, 20% off' in sms and "1 SMS segment(s), GSM-7" in _text(sms)
    email = preview("email")
    assert "Hello Eva" in email and 'sandbox="" src="/console/templates/gift/preview.html?' in email
    # The page lets the push's image load from the template's https address.
    answer = marketer.get("/console/templates/gift", customer="eva@example.com", channel="push")
    assert "img-src 'self' data: https:" in answer.headers["content-security-policy"]


def test_the_preview_follows_the_yaml_being_typed_without_saving_it(
    services: Services, marketer: Console
) -> None:
    _eva(services)
    draft = (
        "en:\n  email:\n    subject: Now {{ customer.first_name }}\n"
        "    html: '<html><body><p>Typed for {{ customer.first_name }}</p></body></html>'\n"
        "  push: {title: 'Typed {{ customer.first_name }}', body: Live}\n"
    )
    form = {"customer": "eva@example.com", "channel": "push", "locale": "", "source": draft}
    answer = marketer.post("/console/templates/gift/draft", form)
    assert answer.status_code == 200, answer.text
    assert "Not saved yet." in answer.text and "Typed Eva" in answer.text
    # The email's frames get the draft's HTML from their address.
    answer = marketer.post("/console/templates/gift/draft", {**form, "channel": "email"})
    found = re.search(r'src="(/console/templates/gift/preview\.html\?[^"]+)"', answer.text)
    assert found is not None and "draft=" in found.group(1)
    frame = marketer.client.get(unescape(found.group(1)))
    assert frame.status_code == 200 and "Typed for Eva" in frame.text
    # A mistake is shown in its place; nothing was saved.
    broken = marketer.post("/console/templates/gift/draft", {**form, "source": "en: {push: {}}\n"})
    assert "missing body, title" in broken.text
    with services.db.read() as conn:
        assert templates.get(conn, "gift").content == EVERY_CHANNEL
    # Without a customer chosen, the preview asks for one.
    asks = marketer.post("/console/templates/gift/draft", {**form, "customer": ""})
    assert "Choose a customer" in asks.text


def _messages(services: Services) -> list[Any]:
    with services.db.read() as conn:
        return outbox_page(conn, 10, None)


def test_a_test_goes_through_the_sandbox_marked_as_a_test(
    services: Services, marketer: Console
) -> None:
    _eva(services)
    form = {"customer": "eva@example.com", "channel": "email", "to": "not an address"}
    refused = marketer.post("/console/templates/gift/test", form)
    assert refused.status_code == 400 and "is not an email address" in refused.text
    refused = marketer.post("/console/templates/gift/test", {**form, "channel": "sms", "to": "12"})
    assert refused.status_code == 400 and "is not a phone number" in refused.text
    assert _messages(services) == []

    sent = marketer.post("/console/templates/gift/test", {**form, "to": "QA@Brand.example"})
    assert sent.status_code == 202, sent.text
    assert "The test is on its way to qa@brand.example" in sent.text
    services.worker.run_due()
    [message] = _messages(services)
    assert (message.purpose, message.state, message.to) == ("test", "sent", "qa@brand.example")
    assert message.provider == "sandbox" and message.content is not None
    assert message.content["subject"] == "[TEST] Hello Eva"
    with services.db.read() as conn:
        eva = profiles.resolve(conn, "eva@example.com", "FR")
        names = [e.name for e in queries.all_of(conn, eva)]
        [entry] = accounts.entries(conn, action="template.test_sent")
    assert not any(name and name.startswith("Message ") for name in names)  # off her timeline
    assert entry.user_email == "marketer@brand.example"
    assert entry.after == {
        "channel": "email",
        "to": "qa@brand.example",
        "customer": f"cus_{eva}",
        "message": message.id,
    }
    # A phone number is written as the provider wants it.
    sms = marketer.post(
        "/console/templates/gift/test", {**form, "channel": "sms", "to": "06 12 34 56 78"}
    )
    assert sms.status_code == 202 and "+33612345678" in sms.text


def test_a_viewer_cannot_send_a_test_nor_preview_a_draft(services: Services) -> None:
    _team(services)
    _eva(services)
    viewer = Console(services, "viewer")
    try:
        page = viewer.get("/console/templates/gift").text
        assert "Send the test" not in page
        form = {"customer": "eva@example.com", "channel": "email", "to": "qa@brand.example"}
        assert viewer.post("/console/templates/gift/test", form).status_code == 403
        draft = {"customer": "eva@example.com", "channel": "push", "source": "en: {}"}
        assert viewer.post("/console/templates/gift/draft", draft).status_code == 403
        forged = viewer.client.post("/console/templates/gift/test", data=form)
        assert forged.status_code == 403
    finally:
        viewer.close()
    assert _messages(services) == []


def test_a_test_email_reaches_a_real_smtp_server(
    settings: Settings, clock: SimulatedClock, tmp_path: Path
) -> None:
    peer = SmtpPeer(dns={})
    with RunningSmtp(peer) as smtp:
        channels = {
            "email": {
                "provider": "smtp",
                "host": "127.0.0.1",
                "port": smtp.port,
                "security": "none",
                "from_address": "news@maison.example",
                "from_name": "Maison",
            }
        }
        services = Services.open(settings.with_overrides(channels=channels), clock=clock)
        try:
            _team(services)
            _eva(services)
            marketer = Console(services, "marketer")
            try:
                form = {"customer": "u-5", "channel": "email", "to": "qa@brand.example"}
                assert marketer.post("/console/templates/gift/test", form).status_code == 202
            finally:
                marketer.close()
            services.worker.run_due()
            deadline = time.monotonic() + 10
            while not peer.received and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            services.close()
    [mail] = peer.received
    assert mail.recipients == ["qa@brand.example"]
    assert mail.message["Subject"] == "[TEST] Hello Eva"
    assert urlsplit(mail.message["List-Unsubscribe"].strip("<>")).path.startswith("/u/")


def test_every_template_compiles_before_its_first_page() -> None:
    """A process's first page has the console's templates compiled in the background (a
    page's first view is not the one that pays for it): each one compiles, and each is then
    in Jinja's cache."""
    from parcours.console import warm_templates
    from parcours.console.rendering import _ENV

    files = sorted(
        p.name
        for p in (Path(__file__).parents[1] / "src/parcours/console/templates").glob("*.html")
    )
    assert warm_templates() == len(files) > 40
    cached = {template.name for template in _ENV.cache.values()} if _ENV.cache else set()
    assert set(files) <= cached
