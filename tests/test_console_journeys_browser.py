"""The journey pages checked as a marketer would use them, in Debian's Chromium: the live
version drawn with its counts, a simulation for a real customer read on the page without
a reload, two versions compared; no serious accessibility violation and nothing wider
than a phone's screen (docs/console.md, "A journey's page")."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from parcours.journeys import ready_made_source, versions
from parcours.services import Services
from tests.browser import DESKTOP, PHONE, accessibility_problems, browser, screenshots_dir, sign_in
from tests.conftest import LiveServer
from tests.test_console_browser import PASSWORD, _team
from tests.test_journeys_engine import opt_in

__all__ = ["browser"]  # the fixture, used by name


def _sign_in(
    browser: Any, live_server: LiveServer, email: str, locale: str, viewport: dict[str, int]
) -> Any:
    """A page signed in as `email`; axe-core is injected into it, past the console's own
    CSP, for these tests only."""
    context = browser.new_context(locale=locale, viewport=viewport, bypass_csp=True)
    page = context.new_page()
    sign_in(page, live_server.url, email, PASSWORD)
    return page


def _overflow(page: Any) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth - innerWidth"))


def test_a_marketer_simulates_a_journey_for_a_customer_and_compares_two_versions(
    browser: Any, live_server: LiveServer, services: Services, tmp_path: Path
) -> None:
    folder = screenshots_dir(tmp_path)
    _team(services, "marketer")
    source = ready_made_source("abandoned-cart")
    assert source is not None
    versions.publish(services.db, source, "mia@brand.example", "rob@brand.example", 0)
    changed = source.replace("wait: 1h", "wait: 30m")
    versions.save_draft(services.db, changed, "marketer@brand.example", services.clock.now_ms())
    opt_in(services, "ana")

    page = _sign_in(browser, live_server, "marketer@brand.example", "en-GB", DESKTOP)
    page.get_by_role("link", name="Journeys").click()
    page.get_by_role("link", name="abandoned-cart").click()
    graph = page.locator("figure.jgraph")
    assert "Entry on an event" in graph.inner_text()
    assert graph.get_by_text("No arm matched: goes on").count() == 0  # the branch has one
    assert graph.get_by_text("Otherwise").first.is_visible()

    # The simulator, for a real customer: the timeline comes onto the open page.
    page.evaluate("window.stillTheSamePage = true")
    page.locator("#f-sim-version").select_option("2")
    page.get_by_label("Customer (any id, optional)").fill("ana")
    page.get_by_label("What happens, in YAML").fill(
        "- at: +0m\n  event: Cart Abandoned\n"
        "  properties: {cart_id: c-9, total: 40, currency: EUR}\n"
    )
    page.get_by_role("button", name="Run the simulation").click()
    timeline = page.locator("ol.sim-timeline")
    timeline.wait_for(timeout=60_000)
    assert page.evaluate("window.stillTheSamePage") is True
    words = timeline.inner_text()
    assert "Entered" in words and "Would send" in words
    assert "would send abandoned-cart-recap on email" in words
    assert "+00:30" in words  # version 2 waits 30 minutes before the recap, not an hour
    assert page.locator(".sim-message").first.is_visible()  # a message as it would go
    assert accessibility_problems(page) == []
    page.screenshot(path=folder / "journey-simulated-desktop.png", full_page=True)
    page.set_viewport_size(PHONE)
    assert _overflow(page) <= 1
    page.screenshot(path=folder / "journey-simulated-phone.png", full_page=True)

    # A mistake in the script: said with its line, still without a reload.
    page.get_by_label("What happens, in YAML").fill(
        "- at: +0m\n  event: Checkout Started\n- at: x\n"
    )
    page.get_by_role("button", name="Run the simulation").click()
    page.get_by_role("alert").filter(has_text="line 3").wait_for(timeout=60_000)
    assert page.evaluate("window.stillTheSamePage") is True

    # Version 2 against the live one, side by side: the changed line marked in words.
    page.get_by_role("link", name="Compare v2 with another version").click()
    page.wait_for_url(re.compile(r".*/compare\?b=2$"))
    assert "Lines changed: 1, removed: 0, added: 0." in page.get_by_role("status").inner_text()
    changed_row = page.locator("tr.diff-changed")
    assert changed_row.count() == 1
    assert "wait: 1h" in changed_row.inner_text() and "wait: 30m" in changed_row.inner_text()
    assert "changed to:" in changed_row.locator("td.diff-right").text_content()
    assert _overflow(page) <= 1
    page.screenshot(path=folder / "journey-compare-phone.png", full_page=True)
    page.locator("#f-a").select_option("2")
    page.get_by_role("button", name="Compare").click()
    assert page.get_by_role("status").inner_text() == "The two versions are the same."
    page.context.close()


def test_the_journey_pages_pass_the_accessibility_check_in_french(
    browser: Any, live_server: LiveServer, services: Services
) -> None:
    _team(services, "viewer")
    source = ready_made_source("abandoned-cart")
    assert source is not None
    versions.publish(services.db, source, "mia@brand.example", "rob@brand.example", 0)
    versions.save_draft(services.db, source.replace("wait: 1h", "wait: 2h"), "mia@brand.example", 0)
    page = _sign_in(browser, live_server, "viewer@brand.example", "fr-FR", PHONE)
    for path in ("/console/journeys/abandoned-cart", "/console/journeys/abandoned-cart/compare"):
        answer = page.goto(f"{live_server.url}{path}")
        assert answer is not None and answer.status == 200
        assert accessibility_problems(page) == [], path
        assert _overflow(page) <= 1, path
    page.goto(f"{live_server.url}/console/journeys/abandoned-cart")
    assert "Embranchement" in page.locator("figure.jgraph").inner_text()
    page.context.close()
