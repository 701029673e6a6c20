"""The Back in stock page checked as a person would, in Debian's Chromium (docs/console.md,
"Commerce"), with "notify me" requests asked at the public endpoint for boots out of
stock and their stock returned through the catalog's events, for a brand that notifies
no more requests than the stock returned: before the return, each variant's requests
waiting in the order they came, each who asked named (else by their email) and linked to
their page; after it, the first two notified (with the stock that notified them) and the
third still waiting, first in its list; the filter by status from the keyboard. In
English and French (the viewer's language) on a phone, nothing wider than the screen and
no serious accessibility violation (axe) on a phone or a desktop."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from parcours.customers import profiles
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.browser import (
    DESKTOP,
    PHONE,
    accessibility_problems,
    browser,
    no_horizontal_overflow,
    screenshots_dir,
    sign_in,
)
from tests.conftest import LiveServer, make_event
from tests.test_console_commerce import PASSWORD, Member, notify_me, team

__all__ = ["browser", "team"]  # the fixtures, used by name

HOUR = 3_600_000
SHOPPERS = ("ines@example.com", "jon@example.com", "kim@example.com")  # in the order they ask
INES = "Inès Martin"  # the first shopper's name: she is listed by it, the others by email


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The brand notifies no more waiting requests than the stock returned."""
    return settings.with_overrides(back_in_stock_limit_to_stock=True)


def boots(services: Services, **stock: int) -> None:
    """The catalog's report of the Chelsea boots now, their sizes with this stock."""
    services.writer.append_sync(
        [
            make_event(
                event="Product Updated",
                at=services.clock.now_ms(),
                identity_required=False,
                properties={
                    "product_id": "p-boots",
                    "name": "Chelsea boots",
                    "variants": [
                        {
                            "variant_id": v,
                            "variant": v.removeprefix("boots-"),
                            "sku": f"BOOT-{v.removeprefix('boots-')}",
                            "stock": n,
                        }
                        for v, n in stock.items()
                    ],
                },
            )
        ]
    )


def requested(services: Services, client: TestClient[Any], clock: SimulatedClock) -> None:
    """Both sizes out of stock; Inès (whom the shop knows by her name), Jon and Kim ask
    for the 38, an hour apart, and Lou for the 40 in between."""
    boots(services, **{"boots-38": 0, "boots-40": 0})
    services.writer.append_sync(
        [make_event("identify", userId="ines", traits={"email": SHOPPERS[0], "name": INES})]
    )
    notify_me(client, SHOPPERS[0], "boots-38")
    clock.advance_ms(HOUR)
    notify_me(client, SHOPPERS[1], "boots-38")
    clock.advance_ms(HOUR // 2)
    notify_me(client, "lou@example.com", "boots-40")
    clock.advance_ms(HOUR // 2)
    notify_me(client, SHOPPERS[2], "boots-38")
    clock.advance_ms(HOUR)


WORDS = {
    "en": {
        "title": "Back in stock",
        "out": "out of stock",
        "two": "2 in stock",
        "waiting": "waiting",
        "notified": "notified",
        "returned": "(2 back in stock)",
        "email": "Email",
        "all": "All (4)",
    },
    "fr": {
        "title": "Retour en stock",
        "out": "en rupture",
        "two": "2 en stock",
        "waiting": "en attente",
        "notified": "prévenu",
        "returned": "(2 de retour en stock)",
        "email": "E-mail",
        "all": "Tous (4)",
    },
}


def variants(page: Any) -> list[tuple[str, str, str]]:
    """Each variant listed, in order: its id, how many wait, how many were notified."""
    return [
        (
            str(section.locator("h2 code").inner_text()),
            str(section.locator("dd.count-waiting").inner_text()),
            str(section.locator("dd.count-notified").inner_text()),
        )
        for section in page.locator("section.variant-requests").all()
    ]


def requests_of(page: Any, variant_id: str) -> list[tuple[str, str]]:
    """A variant's requests as listed: who asked, and their status's words."""
    section = page.locator(
        "section.variant-requests", has=page.locator("code", has_text=variant_id)
    )
    return [
        (
            str(row.locator("td").nth(1).inner_text()),
            str(row.locator("td").nth(3).inner_text()),
        )
        for row in section.locator("tr.request-row").all()
    ]


@pytest.mark.parametrize("language", ["en", "fr"])
def test_the_back_in_stock_page_before_and_after_a_restock(
    browser: Any,
    live_server: LiveServer,
    services: Services,
    clock: SimulatedClock,
    client: TestClient[Any],
    team: dict[str, Member],
    tmp_path: Path,
    language: str,
) -> None:
    requested(services, client, clock)
    words = WORDS[language]
    # Who asked, by name, else by the email they asked with (never by their bare id).
    ines, jon, kim = INES, SHOPPERS[1], SHOPPERS[2]
    context = browser.new_context(locale=language, viewport=PHONE, bypass_csp=True)
    page = context.new_page()
    sign_in(page, live_server.url, "viewer@brand.example", PASSWORD)
    answer = page.goto(f"{live_server.url}/console/back-in-stock")
    assert answer is not None and answer.status == 200
    assert page.locator("html").get_attribute("lang") == language
    assert page.get_by_role("heading", level=1).inner_text() == words["title"]
    # Before the return: the 38 with the most waiting first, its requests as they came.
    assert variants(page) == [("boots-38", "3", "0"), ("boots-40", "1", "0")]
    waiting = words["waiting"]
    assert requests_of(page, "boots-38") == [(ines, waiting), (jon, waiting), (kim, waiting)]
    small = page.locator("section.variant-requests").first
    with services.db.read() as conn:
        ines_id = profiles.resolve(conn, SHOPPERS[0], "FR")
    assert small.get_by_role("link", name=INES).get_attribute("href") == (
        f"/console/customers/{ines_id}"
    )
    assert "Chelsea boots · 38" in small.locator("h2").inner_text()
    assert "BOOT-38" in small.locator("h2").inner_text()
    assert words["out"] in small.locator("dl").inner_text()
    assert words["email"] in small.locator("tr.request-row").first.inner_text()
    folder = screenshots_dir(tmp_path)
    page.screenshot(path=folder / f"back-in-stock-{language}-before.png", full_page=True)
    # Two pairs of the 38 come back: Inès and Jon are told, Kim waits for the next.
    boots(services, **{"boots-38": 2, "boots-40": 0})
    page.reload()
    assert variants(page) == [("boots-38", "1", "2"), ("boots-40", "1", "0")]
    notified = words["notified"]
    assert requests_of(page, "boots-38") == [(kim, waiting), (ines, notified), (jon, notified)]
    assert words["two"] in small.locator("dl").inner_text()
    told = small.locator("tr.request-notified")
    assert told.count() == 2
    for n in range(2):
        assert words["returned"] in told.nth(n).locator("td").nth(4).inner_text()
    assert small.locator("tr.request-waiting td").nth(4).inner_text() == "—"
    for width, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
        page.set_viewport_size(viewport)
        assert accessibility_problems(page) == [], (language, width)
        assert no_horizontal_overflow(page), (language, width)
        page.screenshot(path=folder / f"back-in-stock-{language}-{width}.png", full_page=True)
    page.set_viewport_size(PHONE)
    # The filter, from the keyboard alone: the notified only.
    options = page.locator("#f-status option").all_inner_texts()
    assert options[0] == words["all"]
    choice = page.locator("#f-status")
    for _ in range(40):
        page.keyboard.press("Tab")
        if choice.evaluate("select => select === document.activeElement"):
            break
    else:
        raise AssertionError("the status filter is not reached with Tab")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert choice.input_value() == "notified"
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*status=notified.*"))
    assert [v[0] for v in variants(page)] == ["boots-38"]
    assert requests_of(page, "boots-38") == [(ines, notified), (jon, notified)]
    assert no_horizontal_overflow(page)
    # The waiting: Kim for the 38, Lou for the 40.
    page.locator("#f-status").select_option("waiting")
    page.locator("form.row button[type=submit]").click()
    page.wait_for_url(re.compile(r".*status=waiting.*"))
    assert [v[0] for v in variants(page)] == ["boots-38", "boots-40"]
    assert requests_of(page, "boots-38") == [(kim, waiting)]
    context.close()
