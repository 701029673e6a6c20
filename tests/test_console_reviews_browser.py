"""The Back in stock and Reviews pages checked as a person would, in Debian's Chromium
(docs/console.md, "Commerce"), with requests and reviews sent through their real doors:
no serious accessibility violation and nothing wider than a phone's screen on either; a
marketer hides a review from the keyboard alone, and the page says it is hidden."""

from __future__ import annotations

from typing import Any

from litestar.testing import TestClient

from parcours import commerce
from parcours.runtime.clock import SimulatedClock
from parcours.services import Services
from tests.browser import (
    DESKTOP,
    PHONE,
    accessibility_problems,
    browser,
    no_horizontal_overflow,
    sign_in,
)
from tests.conftest import LiveServer
from tests.test_console_commerce import PASSWORD, Member, opinions, shop, team, wishes

__all__ = ["browser", "team"]  # the fixtures, used by name


def test_the_pages_on_a_phone_and_a_review_hidden_from_the_keyboard(
    browser: Any,
    live_server: LiveServer,
    services: Services,
    clock: SimulatedClock,
    client: TestClient[Any],
    team: dict[str, Member],
) -> None:
    shop(services, clock)
    wishes(services, client, clock)
    opinions(client, services, clock)
    context = browser.new_context(locale="en-GB", viewport=PHONE, bypass_csp=True)
    page = context.new_page()
    sign_in(page, live_server.url, "marketer@brand.example", PASSWORD)
    for path in ("/console/back-in-stock", "/console/reviews"):
        page.goto(f"{live_server.url}{path}")
        for width, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
            page.set_viewport_size(viewport)
            assert accessibility_problems(page) == [], (path, width)
            assert no_horizontal_overflow(page), (path, width)
    # From the keyboard alone: tab to o-2's Hide button and press Enter.
    page.set_viewport_size(PHONE)
    hide = page.get_by_role("button", name="Hide o-2")
    for _ in range(60):
        page.keyboard.press("Tab")
        if hide.evaluate("button => button === document.activeElement"):
            break
    else:
        raise AssertionError("o-2's Hide button is not reached with Tab")
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Publish o-2").wait_for()
    with services.db.read() as conn:
        review = commerce.review_of_order(conn, "o-2")
    assert review is not None and review.status == "hidden"
    photo = page.request.get(f"{live_server.url}/console/reviews/o-1/photo")
    assert photo.status == 200 and photo.headers["content-type"] == "image/png"
    context.close()
