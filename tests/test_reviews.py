"""Reviews (docs/commerce.md, "Reviews"), on SQLite and PostgreSQL: `Review Due` once per
order its sector's days after delivery, none after a return; the ready-made journey's one
email on the simulated clock; the hosted form in English and French, its submission
stored and appended, a bad photo refused with its reason, a link that opens its own
order and nothing else, a post from another site refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from litestar.testing import TestClient
from sqlalchemy import func, select

from parcours import commerce
from parcours.commerce.tables import commerce_review_photos, commerce_reviews
from parcours.customers import profiles as customers
from parcours.log import queries as log_queries
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.settings import Settings, SettingsError
from parcours.services import Services
from tests.conftest import START
from tests.test_brand_settings import _brand_form, _post, _team
from tests.test_console_providers import _signed_in
from tests.test_journeys_engine import DAY, HOUR, MINUTE, advance, opt_in, publish, sent, track

JOURNEY = (
    Path(__file__).resolve().parents[1] / "src/parcours/journeys/templates/review-request.yaml"
).read_text(encoding="utf-8")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
TEE = {"product_id": "p-tee", "name": "Linen tee", "price": 40, "quantity": 2}
CAP = {"product_id": "p-cap", "name": "Canvas cap", "price": 25, "quantity": 1}
SAME_SITE = {"Origin": "http://testserver.local"}


def bought(services: Services, user: str, order_id: str, *products: dict[str, Any]) -> None:
    track(
        services,
        user,
        "Order Completed",
        order_id=order_id,
        order_number=f"#{order_id.upper()}",
        currency="EUR",
        total=sum(p["price"] * p["quantity"] for p in products),
        products=list(products),
    )


def delivered(services: Services, user: str, order_id: str, shipment: str = "s-1") -> None:
    track(
        services,
        user,
        "Shipment Updated",
        order_id=order_id,
        shipment_id=f"{order_id}:{shipment}",
        status="delivered",
    )


def due(services: Services, user: str) -> list[dict[str, Any]]:
    with services.db.read() as conn:
        customer = customers.resolve(conn, user, "FR")
        return [
            json.loads(e.payload)["properties"]
            for e in log_queries.all_of(conn, customer)
            if e.name == "Review Due"
        ]


def submitted(services: Services, user: str) -> list[dict[str, Any]]:
    with services.db.read() as conn:
        customer = customers.resolve(conn, user, "FR")
        return [
            json.loads(e.payload)["properties"]
            for e in log_queries.all_of(conn, customer)
            if e.name == "Review Submitted"
        ]


def form_path(services: Services, order_id: str) -> str:
    return urlsplit(services.delivery.links.review(order_id)).path


def send(
    client: TestClient[Any],
    path: str,
    ratings: dict[str, str],
    text: str = "",
    photo: tuple[str, bytes, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    files = {"photo": photo} if photo else {"photo": ("", b"", "application/octet-stream")}
    return client.post(
        path,
        data={**ratings, "text": text},
        files=files,
        headers=SAME_SITE if headers is None else headers,
        follow_redirects=False,
    )


# ---- when a review is due, and the journey ------------------------------------------------


def test_one_email_a_week_after_delivery_then_none_for_a_second_parcel(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, JOURNEY)
    opt_in(services, "ana", timezone="Europe/Paris")
    bought(services, "ana", "o-1", TEE, CAP)
    delivered(services, "ana", "o-1")
    advance(services, clock, 7 * DAY - MINUTE, step=HOUR)
    assert due(services, "ana") == []
    advance(services, clock, DAY + 2 * HOUR, step=HOUR // 2)  # due, then 18:30 her time
    assert due(services, "ana") == [
        {
            "order_id": "o-1",
            "delivered_at": "2026-09-21T14:13:20.000Z",
            "review_after_days": 7,
            "products": [
                {"product_id": "p-tee", "name": "Linen tee"},
                {"product_id": "p-cap", "name": "Canvas cap"},
            ],
            "order_number": "#O-1",
        }
    ]
    assert sent(services, "ana") == [("email", "review-request-with-photo")]
    delivered(services, "ana", "o-1", "s-2")  # a late second parcel: the order had its email
    advance(services, clock, 9 * DAY, step=6 * HOUR)
    assert sent(services, "ana") == [("email", "review-request-with-photo")]


def test_no_request_after_a_return_nor_for_a_reviewed_order(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, JOURNEY)
    opt_in(services, "bo")
    bought(services, "bo", "o-2", TEE)
    delivered(services, "bo", "o-2")
    advance(services, clock, 2 * DAY, step=6 * HOUR)
    track(services, "bo", "Return Requested", return_id="r-1", order_id="o-2")
    bought(services, "bo", "o-3", CAP)
    delivered(services, "bo", "o-3")
    with services.db.write() as conn:  # reviewed before being asked
        commerce.reviews.submit_review(
            conn, "o-3", {"p-cap": 5}, "", None, "en", clock.now_ms(), services.reactions
        )
    advance(services, clock, 10 * DAY, step=6 * HOUR)
    assert due(services, "bo") == []
    assert sent(services, "bo") == []


def test_a_return_after_the_review_fell_due_ends_the_run_before_the_email(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, JOURNEY)
    opt_in(services, "cy", timezone="Europe/Paris")
    bought(services, "cy", "o-4", TEE)
    delivered(services, "cy", "o-4")  # 16:13 Paris: due a week later, before 18:30
    advance(services, clock, 7 * DAY + 30 * MINUTE, step=HOUR // 2)
    assert len(due(services, "cy")) == 1
    track(services, "cy", "Return Requested", return_id="r-2", order_id="o-4")
    advance(services, clock, DAY, step=HOUR)
    assert sent(services, "cy") == []


@pytest.fixture
def food(settings: Settings, clock: SimulatedClock) -> Iterator[Services]:
    services = Services.open(settings.with_overrides(sector="food"), clock=clock)
    yield services
    services.close()


def _review_asked_after(services: Services, clock: SimulatedClock, days: int) -> None:
    """Di's order delivered now: no review asked a minute before `days` days, then one,
    saying `days`."""
    opt_in(services, "di")
    bought(services, "di", "o-5", CAP)
    delivered(services, "di", "o-5")
    advance(services, clock, days * DAY - MINUTE, step=6 * HOUR)
    assert due(services, "di") == []
    advance(services, clock, MINUTE)
    assert [p["review_after_days"] for p in due(services, "di")] == [days]


def test_the_delay_is_the_sector_s(food: Services, clock: SimulatedClock) -> None:
    _review_asked_after(food, clock, 3)


def test_the_brands_setting_wins_over_the_sectors_delay(
    settings: Settings, clock: SimulatedClock
) -> None:
    """`review_after_days`: a food brand (the sector's custom: 3 days) that asks after 10."""
    services = Services.open(
        settings.with_overrides(sector="food", review_after_days=10), clock=clock
    )
    try:
        _review_asked_after(services, clock, 10)
    finally:
        services.close()
    with pytest.raises(SettingsError, match="review_after_days must be between 0"):
        settings.with_overrides(review_after_days=400)


def test_the_delay_set_on_the_settings_page_wins_over_the_configured_one(
    settings: Settings, clock: SimulatedClock
) -> None:
    """The owner sets the days on the Settings page (the brand form): they win over the
    configuration's `review_after_days` and the sector's custom, which the form names;
    a value out of range is refused in words, nothing saved."""
    services = Services.open(
        settings.with_overrides(sector="food", review_after_days=10), clock=clock
    )
    try:
        _team(services)
        with _signed_in(services) as client:
            page = client.get("/console/settings").text
            assert 'name="review_after_days"' in page and 'value="10"' in page
            assert "(3 days for the sector chosen)" in page
            for wrong in ("400", "abc", "-2"):
                refused = _post(
                    client,
                    "/console/settings/brand",
                    **_brand_form(sector="food"),
                    review_after_days=wrong,
                )
                assert refused.status_code == 400, wrong
                assert "must be a whole number from 0" in refused.text
            saved = _post(
                client,
                "/console/settings/brand",
                **_brand_form(sector="food"),
                review_after_days="5",
            )
            assert saved.status_code == 303
        _review_asked_after(services, clock, 5)
    finally:
        services.close()


def test_a_message_about_an_order_carries_its_review_link(services: Services) -> None:
    opt_in(services, "ana")
    with services.db.read() as conn:
        customer = customers.resolve(conn, "ana", "FR")
        context = services.delivery.renderer.context(
            conn,
            customer,
            "email",
            "marketing",
            {"event": "Review Due", "properties": {"order_id": "o-1"}},
            {},
        )
    assert context["links"]["review"] == services.delivery.links.review("o-1")


# ---- the form -----------------------------------------------------------------------------


def test_the_form_in_the_customer_s_language_english_and_french(
    services: Services, client: TestClient[Any]
) -> None:
    opt_in(services, "ana", locale="fr-FR")
    bought(services, "ana", "o-1", TEE, CAP)
    path = form_path(services, "o-1")
    page = client.get(path)
    assert page.status_code == 200
    assert '<html lang="fr">' in page.text
    assert "Votre avis sur la commande #O-1" in page.text
    assert "Linen tee" in page.text and "Canvas cap" in page.text
    assert page.text.count('type="radio"') == 10  # five stars for each product
    assert "1 étoile sur 5 : décevant" in page.text
    assert 'enctype="multipart/form-data"' in page.text
    assert page.headers["referrer-policy"] == "same-origin"  # the token stays here
    assert page.headers["cache-control"] == "no-store"
    english = client.get(f"{path}?lang=en")
    assert "Your review of order #O-1" in english.text
    assert "5 stars out of 5: excellent" in english.text
    assert "Send my review" in english.text


def test_a_submission_is_stored_and_appended_and_a_second_one_updates_it(
    services: Services, client: TestClient[Any]
) -> None:
    opt_in(services, "ana")
    bought(services, "ana", "o-1", TEE, CAP)
    path = form_path(services, "o-1")
    answer = send(
        client,
        path,
        {"rating-1": "5", "rating-2": "3"},
        "Soft linen, true to size.",
        ("tee.png", PNG, "image/png"),
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == f"{path}?saved=1"
    assert "Thank you! Your review is saved." in client.get(f"{path}?saved=1").text
    with services.db.read() as conn:
        review = commerce.review_of_order(conn, "o-1")
        photo = commerce.review_photo(conn, "o-1")
    assert review is not None and photo is not None
    assert [(r.product_id, r.rating) for r in review.ratings] == [("p-cap", 3), ("p-tee", 5)]
    assert (review.text, review.photo_type, review.photo_size) == (
        "Soft linen, true to size.",
        "image/png",
        len(PNG),
    )
    assert (photo.content, photo.content_type) == (PNG, "image/png")
    [event] = submitted(services, "ana")
    assert event == {
        "order_id": "o-1",
        "order_number": "#O-1",
        "rating": 4.0,
        "ratings": [
            {"product_id": "p-cap", "rating": 3, "name": "Canvas cap"},
            {"product_id": "p-tee", "rating": 5, "name": "Linen tee"},
        ],
        "text": "Soft linen, true to size.",
        "has_photo": True,
        "locale": "en",
        "submission": 1,
    }
    # Its page shows the photo, served as the image its bytes are and nothing else.
    shown = client.get(f"{path}/photo")
    assert (shown.status_code, shown.content) == (200, PNG)
    assert shown.headers["content-type"] == "image/png"
    assert shown.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in shown.headers["content-security-policy"]
    tracking = urlsplit(services.delivery.links.tracking("o-1")).path.removeprefix("/o/")
    assert client.get(f"/r/{tracking}/photo").status_code == 404  # another page's link
    # A second time: the ratings and text change, the photo stays.
    page = client.get(path)
    assert "Update my review" in page.text and "Your photo is kept" in page.text
    assert f'src="{path}/photo"' in page.text
    assert send(client, path, {"rating-1": "4"}, "Washed well.").status_code == 303
    with services.db.read() as conn:
        review = commerce.review_of_order(conn, "o-1")
        assert commerce.review_photo(conn, "o-1") is not None
    assert review is not None
    assert ([(r.product_id, r.rating) for r in review.ratings], review.submissions) == (
        [("p-tee", 4)],
        2,
    )
    assert [e["submission"] for e in submitted(services, "ana")] == [1, 2]


def test_a_bad_photo_or_no_rating_is_refused_with_the_reason(
    services: Services, client: TestClient[Any]
) -> None:
    opt_in(services, "ana", locale="fr")
    bought(services, "ana", "o-1", TEE)
    path = form_path(services, "o-1")
    cases = [
        (("cat.jpg", b"GIF89a" + b"\x00" * 32, "image/jpeg"), "doit être une image JPEG, PNG"),
        (("page.png", b"<svg onload=alert(1)>", "image/png"), "doit être une image JPEG, PNG"),
        (("big.png", PNG + b"\x00" * (5 * 1024 * 1024), "image/png"), "dépasse 5 Mo"),
        (("tee.png", PNG, "image/jpeg"), "doit être une image JPEG, PNG"),  # says it is not
    ]
    for photo, reason in cases:
        answer = send(client, path, {"rating-1": "4"}, "Kept on the form", photo)
        assert answer.status_code == 400, photo[0]
        assert reason in answer.text, photo[0]
        assert "Kept on the form" in answer.text  # what was typed is not lost
        assert 'aria-invalid="true"' in answer.text
    answer = send(client, path, {}, "No stars")
    assert answer.status_code == 400
    assert "Notez au moins un article" in answer.text
    answer = send(client, path, {"rating-1": "9"})
    assert "Une note va de 1 à 5" in answer.text
    with services.db.read() as conn:
        assert conn.execute(select(func.count()).select_from(commerce_reviews)).scalar() == 0
    assert submitted(services, "ana") == []


def test_a_link_opens_its_own_order_and_nothing_else(
    services: Services, client: TestClient[Any]
) -> None:
    opt_in(services, "ana")
    opt_in(services, "bo")
    bought(services, "ana", "o-1", TEE)
    bought(services, "bo", "o-2", CAP)
    page = client.get(form_path(services, "o-2"))
    assert "Canvas cap" in page.text and "Linen tee" not in page.text
    tracking = urlsplit(services.delivery.links.tracking("o-1")).path.removeprefix("/o/")
    path = form_path(services, "o-1")
    for bad in (
        path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB"),  # changed
        f"/r/{tracking}",  # signed for the tracking page, not this one
        form_path(services, "o-404"),  # an order not known
        "/r/nothing",
    ):
        answer = client.get(bad)
        assert answer.status_code == 404, bad
        assert "Linen tee" not in answer.text and "Canvas cap" not in answer.text
        posted = send(client, bad, {"rating-1": "5"})
        assert posted.status_code == 404, bad
    with services.db.read() as conn:
        assert conn.execute(select(func.count()).select_from(commerce_reviews)).scalar() == 0


def test_a_post_from_another_site_is_refused(services: Services, client: TestClient[Any]) -> None:
    opt_in(services, "ana")
    bought(services, "ana", "o-1", TEE)
    path = form_path(services, "o-1")
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # a sibling host of the same site
    ):
        answer = send(client, path, {"rating-1": "1"}, headers=headers)
        assert answer.status_code == 403, headers
        assert "can only be sent from its own page" in answer.text
    with services.db.read() as conn:
        assert conn.execute(select(func.count()).select_from(commerce_reviews)).scalar() == 0
    # Our own page under a policy that hides the origin: the browser's fetch metadata says.
    own = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
    assert send(client, path, {"rating-1": "1"}, headers=own).status_code == 303


def test_an_erasure_takes_the_review_and_its_photo(
    services: Services, client: TestClient[Any]
) -> None:
    opt_in(services, "ana")
    bought(services, "ana", "o-1", TEE)
    path = form_path(services, "o-1")
    send(client, path, {"rating-1": "5"}, "", ("tee.png", PNG, "image/png"))
    erased = customers.erase(services.db, services.people, "ana", "FR", START, "test")
    assert erased is not None
    with services.db.read() as conn:
        for table in (commerce_reviews, commerce_review_photos):
            assert conn.execute(select(func.count()).select_from(table)).scalar() == 0
    assert client.get(path).status_code == 404


def test_an_order_reported_without_its_lines_is_rated_as_a_whole(
    services: Services, client: TestClient[Any]
) -> None:
    opt_in(services, "ana")
    track(services, "ana", "Order Completed", order_id="o-9", total=30, currency="EUR")
    path = form_path(services, "o-9")
    page = client.get(path)
    assert "Your order" in page.text and page.text.count('type="radio"') == 5
    assert send(client, path, {"rating-1": "5"}, "Quick and kind.").status_code == 303
    [event] = submitted(services, "ana")
    assert (event["rating"], event["ratings"]) == (5.0, [{"product_id": "*", "rating": 5}])
