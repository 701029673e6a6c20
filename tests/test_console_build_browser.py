"""The Segments and Templates pages checked as a marketer uses them, in Debian's Chromium
(docs/console.md): a segment built with the form of conditions, its count changing as the
conditions change, then saved; a template's preview following the YAML as it is typed;
a test email sent from the page and received by a real SMTP server; no serious
accessibility violation and nothing wider than a phone's screen."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from parcours import accounts
from parcours.messaging import templates
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.browser import DESKTOP, PHONE, accessibility_problems, browser, screenshots_dir, sign_in
from tests.conftest import LiveServer, make_event, wait_until
from tests.peers import RunningSmtp, SmtpPeer

__all__ = ["browser"]  # the fixture, used by name

PASSWORD = "a long enough passphrase"


def _marketer(services: Services) -> None:
    db, now = services.db, services.clock.now_ms()
    token = accounts.setup_link_token(db, now)
    assert token is not None
    owner = accounts.accept_invitation(
        db, token, email="owner@brand.example", name="Owner", password=PASSWORD, now=now
    )
    _, link = accounts.invite(db, owner, email="marketer@brand.example", role="marketer", now=now)
    accounts.accept_invitation(db, link, email="", name="Mia", password=PASSWORD, now=now)


def _sign_in(browser: Any, live_server: LiveServer) -> Any:
    # axe-core is injected into the page: past the console's own CSP, for this test only.
    context = browser.new_context(locale="en-GB", viewport=DESKTOP, bypass_csp=True)
    page = context.new_page()
    sign_in(page, live_server.url, "marketer@brand.example", PASSWORD)
    return page


def _checked(page: Any, what: str) -> None:
    """No serious accessibility violation, and nothing wider than a phone's screen; a
    screenshot of each width (tests/browser.py `screenshots_dir`)."""
    folder = screenshots_dir(Path(tempfile.gettempdir()) / "parcours-console-build")
    for width, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(viewport)
        assert accessibility_problems(page) == [], (what, viewport)
        overflow = page.evaluate("document.documentElement.scrollWidth - innerWidth")
        assert overflow <= 1, (what, viewport, overflow)
        page.screenshot(path=folder / f"{what.replace(' ', '-')}-{width}.png", full_page=True)
    page.set_viewport_size(DESKTOP)


def test_a_marketer_builds_a_segment_with_the_form_and_sees_the_count_change(
    browser: Any, live_server: LiveServer, services: Services
) -> None:
    _marketer(services)
    services.writer.append_sync(
        [
            make_event("identify", userId="u-1", traits={"email": "ana@example.com"}),
            make_event("identify", userId="u-2", traits={"email": "bob@example.com"}),
            make_event("identify", userId="u-3", traits={"email": "cyd@example.com"}),
        ]
        + [
            make_event(userId="u-1", event="Order Completed", properties={"order_id": f"o{n}"})
            for n in range(2)
        ]
        + [make_event(userId="u-2", event="Order Completed", properties={"order_id": "o9"})]
    )
    services.start_worker()
    page = _sign_in(browser, live_server)
    page.get_by_role("link", name="Segments").click()
    draft = page.locator("#draft")
    # The form holds the example; changing its value changes the count, nothing saved.
    page.get_by_label("Value").fill("1")
    page.get_by_text("2 customer(s) now").wait_for()
    page.get_by_label("Value").fill("2")
    page.get_by_text("1 customer(s) now").wait_for()
    # A second condition: any of the two.
    page.get_by_role("button", name="Add a condition").click()
    page.locator("#f-kind-1").wait_for()
    page.locator("#f-kind-1").select_option("trait")
    page.locator("#f-name-1").fill("email")
    page.locator("#f-value-1").fill("cyd@example.com")
    page.locator("#f-match").select_option("any")
    page.get_by_text("2 customer(s) now").wait_for()
    assert "cus_" in draft.inner_text()
    yaml_text = page.get_by_label("The segment, in YAML")
    wait_until(lambda: "cyd@example.com" in yaml_text.input_value(), 10, what="the YAML")
    assert "any:" in yaml_text.input_value()
    # A mistake is named on its field.
    page.locator("#f-value-0").fill("two")
    page.locator("#e-row-0").get_by_text("whole number").wait_for()
    page.locator("#f-value-0").fill("2")
    page.get_by_text("2 customer(s) now").wait_for()
    _checked(page, "segments")
    page.get_by_label("Id (lowercase letters, digits, dashes)").fill("buyers-or-cyd")
    page.get_by_label("Name", exact=True).fill("Buyers or Cyd")
    page.get_by_text("2 customer(s) now").wait_for()
    page.get_by_role("button", name="Save these conditions").click()
    page.wait_for_url(re.compile(r".*/console/segments/buyers-or-cyd$"))

    def evaluated() -> bool:
        page.reload()
        return "up to date" in page.locator(".figures").inner_text()

    wait_until(evaluated, 30, what="the segment to be evaluated")
    assert page.locator(".figures .value").first.inner_text() == "2"
    # Its entries per day: the chart, and the same figures as a table.
    page.get_by_text("The same as a table").click()
    assert page.locator("table.changes tbody tr").count() == 30
    _checked(page, "segment")
    with services.db.read() as conn:
        assert accounts.entries(conn, action="segment.saved")[0].user_email == (
            "marketer@brand.example"
        )


GIFT = {
    "en": {
        "email": {
            "subject": "Hello {{ customer.first_name }}",
            "text": "Dear {{ customer.first_name }}",
        },
        "push": {"title": "A gift for {{ customer.first_name }}", "body": "Open to see it"},
        "whatsapp": {
            "text": "Hi {{ customer.first_name }}",
            "template": "gift_ready",
            "language": "en",
            "category": "marketing",
            "parameters": ["{{ customer.first_name }}"],
        },
        "wallet": {"header": "Your gift", "body": "20% off today"},
    }
}


def _eva(services: Services) -> None:
    services.writer.append_sync(
        [
            make_event(
                "identify", userId="u-5", traits={"email": "eva@example.com", "first_name": "Eva"}
            )
        ]
    )
    with services.db.write() as conn:
        templates.save(conn, "gift", GIFT, "test", services.clock.now_ms())


def test_a_marketer_sees_the_preview_follow_the_yaml(
    browser: Any, live_server: LiveServer, services: Services
) -> None:
    _marketer(services)
    _eva(services)
    page = _sign_in(browser, live_server)
    page.goto(f"{live_server.url}/console/templates/gift")
    page.get_by_label("Customer (any id)").fill("eva@example.com")
    page.locator("#f-channel").select_option("push")
    page.get_by_role("button", name="Show").click()
    card = page.locator(".notification")
    assert "A gift for Eva" in card.inner_text()
    editor = page.get_by_label("Language, channel, fields (YAML)")
    editor.fill(editor.input_value().replace("A gift for", "A present for"))
    page.locator(".notification", has_text="A present for Eva").wait_for()
    assert page.get_by_text("Not saved yet.").is_visible()
    with services.db.read() as conn:
        assert templates.get(conn, "gift").content == GIFT
    _checked(page, "template push")
    for channel, drawn in (("whatsapp", ".device.whatsapp"), ("wallet", ".pass")):
        page.locator("#f-channel").select_option(channel)
        page.get_by_role("button", name="Show").click()
        page.locator(drawn).wait_for()
        _checked(page, f"template {channel}")


def test_a_test_email_sent_from_the_page_reaches_the_smtp_server(
    browser: Any, settings: Settings, clock: SimulatedClock
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
            }
        }
        services = Services.open(settings.with_overrides(channels=channels), clock=clock)
        try:
            _marketer(services)
            _eva(services)
            services.start_worker()
            with LiveServer(services) as live_server:
                page = _sign_in(browser, live_server)
                page.goto(f"{live_server.url}/console/templates/gift")
                page.get_by_label("With the data of (any id)").fill("eva@example.com")
                page.get_by_label("Channel of the test").select_option("email")
                page.get_by_label(re.compile(r"^Send to \(an email address")).fill(
                    "qa@brand.example"
                )
                page.get_by_role("button", name="Send the test").click()
                status = page.get_by_role("status").filter(has_text="on its way")
                assert "qa@brand.example" in status.inner_text()
                wait_until(lambda: bool(peer.received), 30, what="the test email")
                page.context.close()
        finally:
            services.close()
    [mail] = peer.received
    assert mail.recipients == ["qa@brand.example"]
    assert mail.message["Subject"] == "[TEST] Hello Eva"
