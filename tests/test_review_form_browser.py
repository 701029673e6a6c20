"""The hosted review form as a customer fills it on a phone, in Debian's Chromium
(docs/commerce.md, "Reviews"): English and French, in the brand's colours, no horizontal
scrolling, no serious or critical accessibility violation (axe); stars chosen, a text
typed, a file that is not an image refused with its reason, then a photo sent and the
review stored; saved as screenshots (PARCOURS_SCREENSHOTS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from parcours import brand, commerce
from parcours.services import Services
from tests.browser import (
    accessibility_problems,
    browser,
    image_width,
    no_horizontal_overflow,
    open_on_a_phone,
    screenshots_dir,
)
from tests.conftest import LiveServer
from tests.test_brand_settings import png
from tests.test_journeys_engine import opt_in
from tests.test_reviews import CAP, bought

__all__ = ["browser"]  # the fixture, used by name

PRIMARY = "#7a1f3d"
TEE = {
    **CAP,
    "product_id": "p-tee",
    "name": "Linen tee",
    "image_url": "https://cdn.shop.example/tee.jpg",
}
WORDS = {
    "en": {
        "heading": "Your review of order #O-1",
        "four": "4 stars out of 5: very good",
        "five": "5 stars out of 5: excellent",
        "text": "Your review (optional)",
        "photo": "A photo (optional)",
        "send": "Send my review",
        "type": "Your photo must be a JPEG, PNG or WebP image.",
        "saved": "Thank you! Your review is saved.",
        "yours": "Your photo",
    },
    "fr": {
        "heading": "Votre avis sur la commande #O-1",
        "four": "4 étoiles sur 5 : très bien",
        "five": "5 étoiles sur 5 : excellent",
        "text": "Votre avis (facultatif)",
        "photo": "Une photo (facultatif)",
        "send": "Envoyer mon avis",
        "type": "Votre photo doit être une image JPEG, PNG ou WebP.",
        "saved": "Merci ! Votre avis est enregistré.",
        "yours": "Votre photo",
    },
}


@pytest.mark.parametrize("language", ["en", "fr"])
def test_the_review_form_filled_and_sent_on_a_phone(
    browser: Any, live_server: LiveServer, services: Services, tmp_path: Path, language: str
) -> None:
    folder = screenshots_dir(tmp_path)
    words = WORDS[language]
    now = services.clock.now_ms()
    defaults = brand.Defaults("Parcours demo shop", "", "UTC", "en")
    brand.save(services.db, defaults, brand.Changes(name="Maison Lune", primary=PRIMARY), now)
    opt_in(services, "ana", locale=language)
    bought(services, "ana", "o-1", TEE, CAP)
    path = urlsplit(services.delivery.links.review("o-1")).path
    image = png(64, 64)
    page = open_on_a_phone(browser, f"{live_server.url}{path}", image)
    assert page.locator("html").get_attribute("lang") == language
    assert page.get_by_role("heading", level=1).inner_text() == words["heading"]
    assert page.locator("header.top .brand").inner_text() == "Maison Lune"
    assert page.get_by_role("group", name="Linen tee").is_visible()
    assert page.get_by_role("group", name="Canvas cap").is_visible()
    assert no_horizontal_overflow(page)
    assert accessibility_problems(page) == []
    page.screenshot(path=folder / f"review-{language}-phone.png", full_page=True)

    # Four stars for the tee, five for the cap, a text, and a file that is no image.
    tee = page.get_by_role("group", name="Linen tee")
    # A finger taps the star (its label): the radio button under it is hidden.
    tee.locator(f"label[title='{words['four']}']").click()
    cap = page.get_by_role("group", name="Canvas cap")
    cap.locator(f"label[title='{words['five']}']").click()
    assert cap.get_by_role("radio", name=words["five"]).is_checked()
    assert tee.locator("input:checked").get_attribute("value") == "4"
    page.get_by_label(words["text"]).fill("Soft linen, true to size.")
    page.get_by_label(words["photo"]).set_input_files(
        {"name": "notes.png", "mimeType": "image/png", "buffer": b"not an image at all"}
    )
    page.get_by_role("button", name=words["send"]).click()
    page.wait_for_load_state()
    assert page.get_by_role("alert").inner_text().strip().endswith(words["type"])
    assert page.get_by_label(words["text"]).input_value() == "Soft linen, true to size."
    assert tee.locator("input:checked").get_attribute("value") == "4"  # kept
    assert no_horizontal_overflow(page)
    assert accessibility_problems(page) == []
    page.screenshot(path=folder / f"review-refused-{language}-phone.png", full_page=True)

    # A real photo this time: stored, and the page thanks them.
    page.get_by_label(words["photo"]).set_input_files(
        {"name": "tee.png", "mimeType": "image/png", "buffer": image}
    )
    page.get_by_role("button", name=words["send"]).click()
    page.wait_for_url(f"**{path}?saved=1")
    assert page.get_by_role("status").first.inner_text() == words["saved"]
    shown = page.get_by_role("img", name=words["yours"])
    assert image_width(shown) == 64  # the photo sent, shown back
    assert no_horizontal_overflow(page)
    page.screenshot(path=folder / f"review-saved-{language}-phone.png", full_page=True)
    with services.db.read() as conn:
        review = commerce.review_of_order(conn, "o-1")
        photo = commerce.review_photo(conn, "o-1")
    assert review is not None and photo is not None
    assert [(r.product_id, r.rating) for r in review.ratings] == [("p-cap", 5), ("p-tee", 4)]
    assert (review.text, review.locale, photo.content) == (
        "Soft linen, true to size.",
        language,
        image,
    )
    page.context.close()
