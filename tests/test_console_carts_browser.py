"""The Carts page checked as a person would, in Debian's Chromium (docs/console.md,
"Commerce"), with carts made by the shoppers' events and abandoned by the worker: no
serious accessibility violation and nothing wider than the screen on a phone or a desktop,
in English and French, with a cart's items opened (their pictures from the shop's CDN,
served here: no request leaves the machine); a viewer reads it."""

from __future__ import annotations

import re
from typing import Any

import pytest

from parcours.runtime.clock import SimulatedClock
from parcours.services import Services
from tests.browser import (
    DESKTOP,
    PHONE,
    SHOP_CDN,
    accessibility_problems,
    browser,
    image_width,
    no_horizontal_overflow,
    sign_in,
)
from tests.conftest import LiveServer
from tests.test_brand_settings import png
from tests.test_console_carts import carts, recovery_carts
from tests.test_console_commerce import PASSWORD, Member, team

__all__ = ["browser", "team"]  # the fixtures, used by name


@pytest.mark.parametrize("language", ["en", "fr"])
def test_the_carts_page_on_a_phone_with_a_carts_items_open(
    browser: Any,
    live_server: LiveServer,
    services: Services,
    clock: SimulatedClock,
    team: dict[str, Member],
    language: str,
) -> None:
    carts(services, clock)
    # A phone's browser in the language asked, the shop's pictures served here.
    context = browser.new_context(locale=language, viewport=PHONE, bypass_csp=True)
    picture = png(64, 64)
    context.route(
        SHOP_CDN,
        lambda route: route.fulfill(status=200, body=picture, content_type="image/png"),
    )
    page = context.new_page()
    sign_in(page, live_server.url, "viewer@brand.example", PASSWORD)
    answer = page.goto(f"{live_server.url}/console/carts")
    assert answer is not None and answer.status == 200
    title = {"en": "Carts", "fr": "Paniers"}[language]
    assert page.get_by_role("heading", level=1).inner_text() == title
    # Cleo's cart opened: its tee, three of them, with its picture.
    page.locator("tr.cart-row", has_text="c-cleo").locator("summary").click()
    shown = page.locator("tr.cart-row", has_text="c-cleo").locator("ul.cart-lines img")
    assert image_width(shown) == 64
    for width, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
        page.set_viewport_size(viewport)
        assert accessibility_problems(page) == [], (language, width)
        assert no_horizontal_overflow(page), (language, width)
    # The filter by status, from the form.
    page.set_viewport_size(PHONE)
    page.locator("#f-status").select_option("abandoned")
    page.locator("form.row button[type=submit]").click()
    page.wait_for_url(re.compile(r".*status=abandoned.*"))
    assert page.locator("tr.cart-row").count() == 2
    assert page.locator("tr.cart-abandoned").count() == 2
    assert no_horizontal_overflow(page)
    context.close()


def test_a_carts_recovery_message_on_a_phone(
    browser: Any,
    live_server: LiveServer,
    services: Services,
    clock: SimulatedClock,
    team: dict[str, Member],
) -> None:
    recovery_carts(services, clock)
    context = browser.new_context(locale="en", viewport=PHONE, bypass_csp=True)
    page = context.new_page()
    sign_in(page, live_server.url, "viewer@brand.example", PASSWORD)
    page.goto(f"{live_server.url}/console/carts")
    # Rita's push, seen on the phone with its status; Hugo's, held for want of consent.
    rita = page.locator("tr.cart-row", has_text="c-rita").locator("li.cart-message").first
    assert rita.is_visible() and "push · abandoned-cart-push" in rita.inner_text()
    hugo = page.locator("tr.cart-row", has_text="c-hugo").locator("li.cart-message").first
    assert "no marketing consent for push (never given)" in hugo.inner_text()
    assert accessibility_problems(page) == [] and no_horizontal_overflow(page)
    context.close()
