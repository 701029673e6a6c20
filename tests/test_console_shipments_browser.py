"""The Shipments page checked as a person would, in Debian's Chromium (docs/console.md,
"Commerce"), with orders and parcels sent through the writer as a shop's carrier reports
would come, each scan recorded at its own time: the stalled parcel (nothing for longer
than the stalled delay), the delayed one (its estimate passed) and the one with a problem
come first, in that order, each saying why; the others after, the latest reported first;
the counts per status in the filter; the filter by status; the "stalled after" hours
changed from the keyboard alone; a parcel's order and its tracking page followed from
their links. In English and French (the viewer's language) on a phone, nothing wider
than the screen and no serious accessibility violation (axe) on a phone, a small laptop or
a desktop, where each parcel's id stays whole on one line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from parcours.log import Event
from parcours.runtime.clock import SimulatedClock, iso
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
from tests.conftest import START, LiveServer, make_event
from tests.test_console_commerce import PASSWORD, Member, placed, team

__all__ = ["browser", "team"]  # the fixtures, used by name

HOUR = 3_600_000
NARROW = {"width": 800, "height": 900}  # a small laptop's: where ids once broke mid-word
NOW = START + 73 * HOUR  # when the page is read: s-quiet silent for 68 hours


def report(user: str, order_id: str, shipment_id: str, status: str, at: int, **extra: Any) -> Event:
    return make_event(
        userId=user,
        event="Shipment Updated",
        at=at,
        properties={"shipment_id": shipment_id, "order_id": order_id, "status": status, **extra},
    )


def at(services: Services, clock: SimulatedClock, hours: int, *events: Event) -> None:
    """The reports of `hours` after START, recorded then (a parcel's last report is when
    it was recorded)."""
    clock.advance_ms(START + hours * HOUR - clock.now_ms())
    services.writer.append_sync(list(events))


def parcels(services: Services, clock: SimulatedClock) -> None:
    """Léa's and Marc's six orders and their parcels, scan by scan over three days; the
    clock at NOW. s-quiet left Lyon and went quiet after Mâcon; s-late's estimate passed
    at hour 66; s-problem failed at Dijon; s-moving is on its way, expected in two days;
    s-home and s-early were delivered."""
    colissimo = {"carrier": "Colissimo"}
    at(
        services,
        clock,
        0,
        make_event("identify", userId="lea", traits={"email": "lea@example.com"}),
        make_event("identify", userId="marc", traits={"email": "marc@example.com"}),
        placed("o-1", user="lea", order_number="#2041"),
        placed("o-5", user="marc"),
    )
    at(
        services,
        clock,
        1,
        report("lea", "o-1", "s-quiet", "label_created", START + HOUR),
        report("marc", "o-5", "s-early", "label_created", START + HOUR),
    )
    at(
        services,
        clock,
        3,
        report(
            "lea",
            "o-1",
            "s-quiet",
            "in_transit",
            START + 3 * HOUR,
            location="Lyon",
            tracking_number="6A0000000001",
            **colissimo,
        ),
        report("marc", "o-5", "s-early", "in_transit", START + 3 * HOUR),
    )
    at(
        services,
        clock,
        5,
        report("lea", "o-1", "s-quiet", "in_transit", START + 5 * HOUR, location="Mâcon"),
    )
    at(services, clock, 20, report("marc", "o-5", "s-early", "out_for_delivery", START + 20 * HOUR))
    at(services, clock, 24, report("marc", "o-5", "s-early", "delivered", START + 24 * HOUR))
    at(
        services,
        clock,
        60,
        placed("o-2", at=START + 60 * HOUR, user="lea"),
        placed("o-3", at=START + 60 * HOUR, user="marc"),
        placed("o-4", at=START + 60 * HOUR, user="lea"),
        placed("o-6", at=START + 60 * HOUR, user="marc"),
        report(
            "lea",
            "o-2",
            "s-late",
            "label_created",
            START + 60 * HOUR,
            carrier="DPD",
            estimated_delivery_from=iso(START + 62 * HOUR),
            estimated_delivery_to=iso(START + 66 * HOUR),
        ),
        report("marc", "o-3", "s-problem", "label_created", START + 60 * HOUR, **colissimo),
        report("lea", "o-4", "s-moving", "label_created", START + 60 * HOUR),
        report("marc", "o-6", "s-home", "label_created", START + 60 * HOUR),
    )
    at(
        services,
        clock,
        64,
        report("lea", "o-2", "s-late", "in_transit", START + 64 * HOUR),
        report("marc", "o-3", "s-problem", "in_transit", START + 64 * HOUR),
        report("marc", "o-6", "s-home", "in_transit", START + 64 * HOUR),
        report(
            "lea",
            "o-4",
            "s-moving",
            "in_transit",
            START + 64 * HOUR,
            estimated_delivery_at=iso(START + 120 * HOUR),
        ),
    )
    at(
        services,
        clock,
        68,
        report("marc", "o-3", "s-problem", "failed", START + 68 * HOUR, location="Dijon"),
        report("marc", "o-6", "s-home", "out_for_delivery", START + 68 * HOUR),
    )
    at(services, clock, 70, report("marc", "o-6", "s-home", "delivered", START + 70 * HOUR))
    at(
        services,
        clock,
        72,
        report("lea", "o-4", "s-moving", "in_transit", START + 72 * HOUR, location="Dijon"),
    )
    clock.advance_ms(NOW - clock.now_ms())


WORDS = {
    "en": {
        "title": "Shipments",
        "all": "All (6)",
        "in_transit": "On its way (3)",
        "delivered": "Delivered (2)",
        "exception": "A problem on the way (1)",
        "stalled": "stalled",
        "delayed": "delayed",
        "problem": "problem",
        "none": "Nothing here.",
        "tracking": "Tracking page o-1",
        "order": "Order #2041",
        "expected": "Expected ",
        "until": " – ",
    },
    "fr": {
        "title": "Expéditions",
        "all": "Tous (6)",
        "in_transit": "En route (3)",
        "delivered": "Livré (2)",
        "exception": "Un incident en cours d’acheminement (1)",
        "stalled": "bloqué",
        "delayed": "en retard",
        "problem": "incident",
        "none": "Rien ici.",
        "tracking": "Page de suivi o-1",
        "order": "Commande #2041",
        "expected": "Attendu le ",
        "until": " et ",
    },
}


def shown(page: Any, section: str) -> list[str]:
    """The parcels listed under the heading `section` (h-attention, h-others), in order."""
    rows = page.locator(f"section[aria-labelledby={section}] tr.shipment-row td:first-child code")
    return [str(text) for text in rows.all_inner_texts()]


def flags(page: Any, shipment_id: str) -> list[str]:
    row = page.locator("tr.shipment-row", has=page.locator("code", has_text=shipment_id))
    return [str(text) for text in row.locator("span.flag").all_inner_texts()]


@pytest.mark.parametrize("language", ["en", "fr"])
def test_the_shipments_page_on_a_phone_attention_first(
    browser: Any,
    live_server: LiveServer,
    services: Services,
    clock: SimulatedClock,
    team: dict[str, Member],
    tmp_path: Path,
    language: str,
) -> None:
    parcels(services, clock)
    words = WORDS[language]
    context = browser.new_context(locale=language, viewport=PHONE, bypass_csp=True)
    page = context.new_page()
    sign_in(page, live_server.url, "viewer@brand.example", PASSWORD)
    answer = page.goto(f"{live_server.url}/console/shipments")
    assert answer is not None and answer.status == 200
    assert page.locator("html").get_attribute("lang") == language
    assert page.get_by_role("heading", level=1).inner_text() == words["title"]
    # Stalled, then delayed, then the problem; then the others, the latest reported first.
    assert shown(page, "h-attention") == ["s-quiet", "s-late", "s-problem"]
    assert shown(page, "h-others") == ["s-moving", "s-home", "s-early"]
    assert flags(page, "s-quiet") == [words["stalled"]]
    assert flags(page, "s-late") == [words["delayed"]]
    assert flags(page, "s-problem") == [words["problem"]]
    assert flags(page, "s-moving") == flags(page, "s-home") == []
    # A parcel expected at one time is expected then (not "from then to then").
    moving = page.locator("tr.shipment-row", has=page.locator("code", has_text="s-moving"))
    expected = moving.locator("td").nth(3).inner_text()
    assert expected.startswith(words["expected"]) and words["until"] not in expected, expected
    late = page.locator("tr.shipment-row", has=page.locator("code", has_text="s-late"))
    assert words["until"] in late.locator("td").nth(3).inner_text()
    quiet = page.locator("tr.shipment-row", has=page.locator("code", has_text="s-quiet"))
    assert "Colissimo" in quiet.inner_text() and "6A0000000001" in quiet.inner_text()
    # The counts per status, in the filter.
    options = page.locator("#f-status option").all_inner_texts()
    assert options[0] == words["all"]
    for status in ("in_transit", "delivered", "exception"):
        assert words[status] in options, (status, options)
    assert page.locator("#f-stalled").input_value() == "48"
    folder = screenshots_dir(tmp_path)
    for width, viewport in (("phone", PHONE), ("narrow", NARROW), ("desktop", DESKTOP)):
        page.set_viewport_size(viewport)
        assert accessibility_problems(page) == [], (language, width)
        assert no_horizontal_overflow(page), (language, width)
        # Each parcel's id on one line, whole ("s-moving", never "s-movin" then "g").
        broken = page.locator("tr.shipment-row > td:first-child > code").evaluate_all(
            "codes => codes.filter(c => c.getClientRects().length > 1).map(c => c.textContent)"
        )
        assert broken == [], (language, width)
        page.screenshot(path=folder / f"shipments-{language}-{width}.png", full_page=True)
    page.set_viewport_size(PHONE)
    # Stalled after 80 hours, from the keyboard alone: s-quiet is no longer stalled.
    field = page.locator("#f-stalled")
    for _ in range(40):
        page.keyboard.press("Tab")
        if field.evaluate("input => input === document.activeElement"):
            break
    else:
        raise AssertionError("the stalled-after field is not reached with Tab")
    page.keyboard.press("Control+A")
    page.keyboard.type("80")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*stalled_after=80.*"))
    assert shown(page, "h-attention") == ["s-late", "s-problem"]
    assert shown(page, "h-others") == ["s-moving", "s-home", "s-early", "s-quiet"]
    assert flags(page, "s-quiet") == []
    assert page.locator("#f-stalled").input_value() == "80"
    # By status: the delivered ones, none needing attention.
    page.locator("#f-status").select_option("delivered")
    page.locator("form.row button[type=submit]").click()
    page.wait_for_url(re.compile(r".*status=delivered.*"))
    assert shown(page, "h-attention") == []
    assert words["none"] in page.locator("section[aria-labelledby=h-attention]").inner_text()
    assert shown(page, "h-others") == ["s-home", "s-early"]
    assert no_horizontal_overflow(page)
    # The problems: s-problem alone.
    page.locator("#f-status").select_option("exception")
    page.locator("form.row button[type=submit]").click()
    page.wait_for_url(re.compile(r".*status=exception.*"))
    assert shown(page, "h-attention") == ["s-problem"]
    assert shown(page, "h-others") == []
    # s-quiet's order, from its link: its parcel's stages, on its way since Lyon.
    page.goto(f"{live_server.url}/console/shipments")
    page.locator("tr.shipment-row", has=page.locator("code", has_text="s-quiet")).get_by_role(
        "link", name="o-1", exact=True
    ).click()
    page.wait_for_url(re.compile(r".*/console/orders/o-1$"))
    assert words["order"] in page.get_by_role("heading", level=1).inner_text()
    assert page.locator("ol.timeline li").count() == 3  # two reached, the next expected
    current = page.locator("ol.timeline li[aria-current=step]").inner_text()
    assert current.startswith(words["in_transit"].split(" (")[0]) and "Lyon" in current
    assert no_horizontal_overflow(page)
    # Its tracking page, as the customer would open it.
    page.go_back()
    link = page.get_by_role("link", name=words["tracking"])
    path = urlsplit(str(link.get_attribute("href"))).path
    assert path.startswith("/o/")
    answer = page.goto(f"{live_server.url}{path}")
    assert answer is not None and answer.status == 200
    assert "#2041" in page.get_by_role("heading", level=1).inner_text()
    assert "6A0000000001" in page.locator("main").inner_text()
    context.close()
