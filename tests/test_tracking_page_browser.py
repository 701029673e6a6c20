"""The tracking page of an order as a customer sees it on a phone, in Debian's Chromium
(docs/commerce.md, "The tracking page"): English and French, in the brand's logo and
colours, no horizontal scrolling, no serious or critical accessibility violation (axe),
and the page for a bad link too; saved as screenshots (PARCOURS_SCREENSHOTS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from parcours import brand
from parcours.services import Services
from tests.browser import (
    accessibility_problems,
    browser,
    no_horizontal_overflow,
    open_on_a_phone,
    screenshots_dir,
)
from tests.conftest import LiveServer, make_event
from tests.test_brand_settings import png
from tests.test_tracking_page import TEE, placed, two_parcels

__all__ = ["browser"]  # the fixture, used by name

PRIMARY = "#7a1f3d"


@pytest.mark.parametrize("language", ["en", "fr"])
def test_the_tracking_page_on_a_phone(
    browser: Any, live_server: LiveServer, services: Services, tmp_path: Path, language: str
) -> None:
    folder = screenshots_dir(tmp_path)
    now = services.clock.now_ms()
    defaults = brand.Defaults("Parcours demo shop", "", "UTC", "en")
    brand.save(services.db, defaults, brand.Changes(name="Maison Lune", primary=PRIMARY), now)
    brand.save_logo(services.db, png(120, 40), now)
    two_parcels(services, locale=language, timezone="Europe/Paris")
    # Another shopper bought the tee with a scarf: the page recommends the scarf.
    scarf = {"product_id": "p3", "name": "Wool scarf", "price": 35, "quantity": 1}
    services.writer.append_sync(
        [
            make_event(
                event="Product Updated",
                identity_required=False,
                properties={**scarf, "image_url": "https://cdn.shop.example/scarf.jpg"},
            ),
            placed("o-2", "bo", [{**TEE, "quantity": 1}, scarf]),
        ]
    )
    path = urlsplit(services.delivery.links.tracking("o-1")).path
    page = open_on_a_phone(browser, f"{live_server.url}{path}", png(64, 64))
    assert page.locator("html").get_attribute("lang") == language
    heading = {"en": "Order #PMK487123", "fr": "Commande #PMK487123"}[language]
    assert page.get_by_role("heading", level=1).inner_text() == heading
    assert page.locator("header.top .brand").inner_text() == "Maison Lune"
    assert page.locator("img.logo").evaluate("image => image.naturalWidth") == 120
    # The brand's primary colour draws the timelines.
    colour = page.locator("ol.stages").first.evaluate(
        "list => getComputedStyle(list).borderLeftColor"
    )
    assert colour == "rgb(122, 31, 61)"
    assert page.locator("ol.stages").count() == 2
    assert page.locator("li.stage.current").count() == 2
    assert page.locator("ul.items img").first.evaluate("image => image.naturalWidth") == 64
    follow = {"en": "Follow it on Colissimo’s site", "fr": "Le suivre sur le site de Colissimo"}
    assert page.get_by_role("link", name=follow[language]).is_visible()
    suggested = page.locator("#recommendations li")
    assert suggested.count() == 1 and "Wool scarf" in suggested.inner_text()
    assert no_horizontal_overflow(page)
    assert accessibility_problems(page) == []
    page.screenshot(path=folder / f"tracking-{language}-phone.png", full_page=True)
    # The other language from the page's own link.
    other = {"en": "Français", "fr": "English"}[language]
    page.get_by_role("link", name=other).click()
    assert page.locator("html").get_attribute("lang") == ("fr" if language == "en" else "en")
    assert no_horizontal_overflow(page)
    # A bad link: a plain page in the visitor's language, nothing of the order.
    lost = page.context.new_page()
    answer = lost.goto(f"{live_server.url}/o/not-a-link?lang={language}")
    assert answer is not None and answer.status == 404
    title = {"en": "Order not found", "fr": "Commande introuvable"}[language]
    assert lost.get_by_role("heading", level=1).inner_text() == title
    assert lost.get_by_text("Colissimo").count() == 0
    assert no_horizontal_overflow(lost)
    assert accessibility_problems(lost) == []
    lost.screenshot(path=folder / f"tracking-not-found-{language}-phone.png", full_page=True)
    page.context.close()
