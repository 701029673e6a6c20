"""The tracking page of an order (docs/commerce.md, "The tracking page"), over HTTP on
SQLite and PostgreSQL: an order with two parcels at different stages, from events sent
through the writer; a bad, tampered or borrowed link shows nothing; another order's data
never shows; French; the stages in the order they happened whatever order the scans came
in; an erased customer's page is gone; messages about an order carry its link."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from typing import Any
from urllib.parse import urlsplit

import pytest
from litestar.testing import TestClient
from sqlalchemy import event

from parcours import commerce
from parcours.console.tracking_pages import Stage, timeline
from parcours.customers import profiles
from parcours.log import Event
from parcours.runtime.clock import SimulatedClock, iso
from parcours.services import Services
from tests.conftest import START, make_event

HOUR = 3_600_000
DAY = 24 * HOUR
IMAGE = "https://cdn.shop.example/tee.jpg"


def append(services: Services, *events: Event) -> None:
    services.writer.append_sync(list(events))


def identify(user: str, **traits: Any) -> Event:
    return make_event("identify", userId=user, traits={"email": f"{user}@example.com", **traits})


def placed(order_id: str, user: str, products: list[dict[str, Any]], **extra: Any) -> Event:
    return make_event(
        userId=user,
        event="Order Completed",
        at=START,
        properties={
            "order_id": order_id,
            "currency": "EUR",
            "total": sum(p["price"] * p["quantity"] for p in products),
            "products": products,
            **extra,
        },
    )


def scan(user: str, order_id: str, shipment_id: str, status: str, at: int, **extra: Any) -> Event:
    return make_event(
        userId=user,
        event="Shipment Updated",
        at=at,
        properties={"shipment_id": shipment_id, "order_id": order_id, "status": status, **extra},
    )


TEE = {"product_id": "p1", "name": "Linen tee", "price": 40, "quantity": 2, "image_url": IMAGE}
CAP = {"product_id": "p2", "name": "Canvas cap", "price": 25, "quantity": 1}


def two_parcels(services: Services, user: str = "ana", **traits: Any) -> None:
    """Order o-1: parcel s-1 out for delivery with an estimate and the carrier's link,
    parcel s-2 delivered."""
    append(services, identify(user, **traits))
    append(services, placed("o-1", user, [TEE, CAP], order_number="#PMK487123"))
    append(services, scan(user, "o-1", "s-1", "label_created", START + HOUR))
    append(
        services,
        scan(
            user,
            "o-1",
            "s-1",
            "in_transit",
            START + 3 * HOUR,
            carrier="Colissimo",
            tracking_number="6A123456789",
            tracking_url="https://www.laposte.fr/outils/suivre-vos-envois?code=6A123456789",
            location="Paris",
            estimated_delivery_from=iso(START + DAY - 4 * HOUR),
            estimated_delivery_to=iso(START + DAY),
        ),
    )
    append(services, scan(user, "o-1", "s-1", "out_for_delivery", START + 20 * HOUR))
    append(services, scan(user, "o-1", "s-2", "in_transit", START + 2 * HOUR, carrier="DPD"))
    append(services, scan(user, "o-1", "s-2", "delivered", START + 6 * HOUR, location="Lyon"))


def path_of(services: Services, order_id: str) -> str:
    return urlsplit(services.delivery.links.tracking(order_id)).path


def stages_of(html: str) -> list[list[tuple[str, str]]]:
    """Each parcel's timeline: (stage's words, its class) in order."""
    parcels = []
    for block in re.findall(r'<ol class="stages".*?</ol>', html, re.S):
        parcels.append(
            [
                (re.sub(r"<[^>]+>", "", unescape(name)).strip(), kind.strip())
                for kind, name in re.findall(
                    r'<li class="stage ?([^"]*)".*?<span class="stage-name">(.*?)</span>\n',
                    block,
                    re.S,
                )
            ]
        )
    return parcels


@pytest.fixture
def page(client: TestClient[Any]) -> Iterator[Any]:
    def get(path: str, **headers: str) -> Any:
        return client.get(path, headers=headers)

    yield get


def test_an_order_with_two_parcels_at_different_stages(services: Services, page: Any) -> None:
    two_parcels(services, timezone="Europe/Paris")
    answer = page(path_of(services, "o-1"), **{"accept-language": "en-GB"})
    assert answer.status_code == 200
    html = unescape(answer.text)
    assert "Order #PMK487123" in html and "Parcours demo shop" in html
    # The items: name, image, quantity, price (Babel, the order's currency).
    assert "Linen tee" in html and "Canvas cap" in html
    assert f'src="{IMAGE}"' in html and "Quantity: 2" in html
    assert "€80.00" in html and "€25.00" in html and "€105.00" in html
    # Each parcel its own timeline, the next stage expected while on its way.
    first, second = stages_of(answer.text)
    assert first == [
        ("Order prepared, carrier informed", ""),
        ("On its way", ""),
        ("Out for delivery", "current"),
        ("Next · Delivered", "expected"),
    ]
    assert second == [("On its way", ""), ("Delivered", "current")]
    assert "Parcel 1 of 2" in html and "Parcel 2 of 2" in html
    # Times in the customer's zone (Paris: UTC+2 in September); START is 14:13 UTC.
    assert re.search(r"Delivered on [^<]*, 10:13\s?PM", html), html  # 20:13 UTC
    assert 'datetime="2026-09-21T17:13+02:00"' in html  # the label, START + 1 h
    # The estimate, one day between two hours; the carrier, its number and its link.
    assert re.search(r"Expected on Tue, September 22 between 12:13\s?PM and 4:13\s?PM", html), html
    assert "Carrier: Colissimo" in html and "Tracking number: 6A123456789" in html
    assert 'href="https://www.laposte.fr/outils/suivre-vos-envois?code=6A123456789"' in html
    assert "Follow it on Colissimo’s site" in html and "Paris" in html and "Lyon" in html
    # Return conditions: 14 days after the (last) delivery, still open; the contact.
    assert "You can return items within 14 days of delivery, until" in html
    assert 'href="https://shop.example.com"' in html and "A question? Contact" in html
    # No recommendations yet: their section is not drawn.
    assert 'id="recommendations"' not in answer.text
    # The console's public pages' headers, product images from https hosts allowed.
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "img-src 'self' data: https:" in policy
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["referrer-policy"] == "no-referrer"


def test_a_bad_tampered_or_borrowed_link_shows_nothing(services: Services, page: Any) -> None:
    two_parcels(services)
    good = path_of(services, "o-1").removeprefix("/o/")
    body, _, mac = good.partition(".")
    other_body = path_of(services, "o-2").removeprefix("/o/").partition(".")[0]
    preferences = urlsplit(services.delivery.links.preferences(1)).path.removeprefix("/p/")
    for token in (
        "not-a-token",
        f"{body}x.{mac}",
        f"{body}.{mac[:-2]}AA",
        f"{other_body}.{mac}",  # another order's id under this order's signature
        preferences,  # signed by us, but for another page
    ):
        answer = page(f"/o/{token}")
        assert answer.status_code == 404, token
        assert "Order not found" in answer.text, token
        assert "Linen tee" not in answer.text and "Colissimo" not in answer.text
    # A link we signed for an order we do not know: the same page.
    answer = page(path_of(services, "o-unknown"))
    assert answer.status_code == 404 and "Order not found" in answer.text
    # In the visitor's language.
    answer = page("/o/nothing", **{"accept-language": "fr-FR,fr;q=0.9"})
    assert answer.status_code == 404 and "Commande introuvable" in answer.text
    assert 'lang="fr"' in answer.text


def test_another_orders_data_never_shows(services: Services, page: Any) -> None:
    two_parcels(services)
    append(services, identify("bob"))
    secret = {"product_id": "p9", "name": "Velvet gown", "price": 990, "quantity": 1}
    append(services, placed("o-2", "bob", [secret]))
    append(
        services,
        scan(
            "bob",
            "o-2",
            "s-9",
            "in_transit",
            START + HOUR,
            carrier="Chronopost",
            tracking_number="XY999",
        ),
    )
    mine = unescape(page(path_of(services, "o-1")).text)
    theirs = unescape(page(path_of(services, "o-2")).text)
    for word in ("Velvet gown", "Chronopost", "XY999", "bob@example.com", "o-2"):
        assert word not in mine
    for word in ("Linen tee", "Colissimo", "6A123456789", "ana@example.com", "Lyon"):
        assert word not in theirs
    assert "Velvet gown" in theirs and "Your parcel" in theirs  # one parcel: no "1 of 1"


def test_in_french_from_the_customers_language_or_the_link(services: Services, page: Any) -> None:
    two_parcels(services, locale="fr-FR")
    answer = page(path_of(services, "o-1"), **{"accept-language": "en-US"})
    html = unescape(answer.text)
    assert '<html lang="fr">' in answer.text
    assert "Commande #PMK487123" in html and "Vos articles" in html
    assert "Quantité : 2" in html and "80,00\u00a0€" in html
    first, _ = stages_of(answer.text)
    assert [name for name, _ in first] == [
        "Commande préparée, transporteur informé",
        "En route",
        "En cours de livraison",
        "Prochaine étape · Livré",
    ]
    assert "Le suivre sur le site de Colissimo" in html
    assert "Vous pouvez retourner vos articles dans les 14 jours suivant la livraison" in html
    # No zone of their own: the brand's (UTC here).
    assert re.search(r"Livraison prévue le mar\. 22 septembre entre 10:13 et 14:13", html), html
    # `?lang=` wins (the page's language links).
    english = page(path_of(services, "o-1") + "?lang=en")
    assert "Your items" in english.text and 'hreflang="fr"' in english.text
    # A customer with no language of their own: the browser's.
    append(services, identify("cy"))
    append(services, placed("o-3", "cy", [CAP]))
    answer = page(path_of(services, "o-3"), **{"accept-language": "fr-CA,en;q=0.5"})
    assert "Vos articles" in unescape(answer.text)
    assert "Votre commande est en préparation" in unescape(answer.text)


def test_the_stages_follow_the_scans_times_not_their_arrival(services: Services, page: Any) -> None:
    append(services, identify("ana"))
    append(services, placed("o-1", "ana", [CAP]))
    # Delivered arrives first, then what happened before it, then a wrong late scan.
    append(services, scan("ana", "o-1", "s-1", "delivered", START + 5 * HOUR))
    append(services, scan("ana", "o-1", "s-1", "in_transit", START + HOUR))
    append(services, scan("ana", "o-1", "s-1", "out_for_delivery", START + 4 * HOUR))
    append(services, scan("ana", "o-1", "s-1", "in_transit", START + 9 * HOUR))
    (parcel,) = stages_of(page(path_of(services, "o-1")).text)
    assert parcel == [
        ("On its way", ""),
        ("Out for delivery", ""),
        ("Delivered", "current"),
    ]
    # A missed delivery then a pickup point, and a problem that came after it all.
    append(services, scan("ana", "o-1", "s-2", "out_for_delivery", START + 2 * HOUR))
    append(services, scan("ana", "o-1", "s-2", "available_for_pickup", START + 7 * HOUR))
    append(services, scan("ana", "o-1", "s-2", "failed_attempt", START + 3 * HOUR))
    append(services, scan("ana", "o-1", "s-2", "exception", START + 8 * HOUR))
    _, second = stages_of(page(path_of(services, "o-1")).text)
    assert second == [
        ("Out for delivery", ""),
        ("Delivery attempted, nobody in", ""),
        ("Ready for pickup", ""),
        ("A problem on the way", "current"),
        ("Next · Delivered", "expected"),
    ]


def test_the_timeline_of_a_parcel_with_no_stage_yet_and_one_not_collected() -> None:
    def parcel(*scans: tuple[str | None, int]) -> commerce.Shipment:
        return commerce.Shipment(
            shipment_id="s",
            order_id="o",
            order_known=True,
            customer_id=1,
            carrier=None,
            tracking_number=None,
            tracking_url=None,
            status="info_received",
            status_at=START,
            first_status="info_received",
            estimated_from=None,
            estimated_to=None,
            delivered_at=None,
            scans=tuple(
                commerce.Scan(
                    reported=status or "delayed",
                    status=status,
                    location=None,
                    source="api",
                    applied=True,
                    occurred_at=at,
                    recorded_at=at,
                )
                for status, at in scans
            ),
        )

    assert timeline(parcel((None, START))) == [
        Stage("info_received", START, current=True),
        Stage("in_transit", None, expected=True),
    ]
    assert [s.status for s in timeline(parcel(("available_for_pickup", 1), ("expired", 2)))] == [
        "available_for_pickup",
        "expired",
        "returned_to_sender",
    ]


def test_the_return_window_closed_and_a_return_under_way(services: Services, page: Any) -> None:
    two_parcels(services)
    append(
        services,
        make_event(
            userId="ana",
            event="Return Requested",
            at=START + 2 * DAY,
            properties={"return_id": "r-1", "order_id": "o-1"},
        ),
    )
    html = unescape(page(path_of(services, "o-1")).text)
    assert "Return requested on" in html
    clock = services.clock
    assert isinstance(clock, SimulatedClock)
    clock.advance_ms(30 * DAY)
    html = unescape(page(path_of(services, "o-1")).text)
    assert "The return period (14 days after delivery) ended on" in html


def test_an_erased_customers_order_page_is_gone(services: Services, page: Any) -> None:
    two_parcels(services)
    assert page(path_of(services, "o-1")).status_code == 200
    profiles.erase(services.db, services.people, "ana", "FR", services.clock.now_ms(), "test")
    answer = page(path_of(services, "o-1"))
    assert answer.status_code == 404 and "Linen tee" not in answer.text


def test_the_page_reads_a_handful_of_rows_by_key(services: Services, page: Any) -> None:
    two_parcels(services)
    path = path_of(services, "o-1")
    page(path)  # the brand's short caches filled
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(services.db.engine, "before_cursor_execute", count)
    try:
        assert page(path).status_code == 200
    finally:
        event.remove(services.db.engine, "before_cursor_execute", count)
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # The brand (2); the order, its lines and refunds, its parcels, their scans, the order
    # known, its returns (7), each by a primary key or an index; the customer's row (their
    # language and zone) is a tenth, read straight through the driver, unseen here. Then
    # the recommendations (8): the customer's recent orders and their lines, their
    # consumables due, what sells with the order, their views, the best sellers of those
    # categories, the products shown and their variants (commerce/recommendations.py).
    assert len(reads) <= 17, reads


def test_a_message_about_an_order_links_to_its_page(services: Services) -> None:
    two_parcels(services)
    with services.db.read() as conn:
        customer = profiles.resolve(conn, "ana", "FR")
        for name in ("Order Completed", "Shipment Updated", "Return Requested"):
            context = services.delivery.renderer.context(
                conn,
                customer,
                "sms",
                "transactional",
                {"event": name, "properties": {"order_id": "o-1", "shipment_id": "s-1"}},
                {},
            )
            assert context["links"]["tracking"] == services.delivery.links.tracking("o-1")
        context = services.delivery.renderer.context(
            conn, customer, "sms", "marketing", {"event": "Product Viewed", "properties": {}}, {}
        )
        assert "tracking" not in context["links"]
