"""The demo data set: a few customers of a small French fashion brand, seeded on first run."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from parcours.log import Event
from parcours.runtime.clock import iso
from parcours.tracking import parse_event

if TYPE_CHECKING:
    from parcours.services import Services

_encode = msgspec.json.Encoder().encode

_PRODUCTS = [
    {"product_id": "sku-trench", "name": "Trench coat", "price": 189.0, "quantity": 1},
    {"product_id": "sku-scarf", "name": "Silk scarf", "price": 49.0, "quantity": 2},
    {"product_id": "sku-boots", "name": "Ankle boots", "price": 129.0, "quantity": 1},
]


def _script(now: int) -> list[dict[str, Any]]:
    hour = int(timedelta(hours=1).total_seconds() * 1000)
    day = 24 * hour
    context_fr = {"locale": "fr-FR", "timezone": "Europe/Paris"}
    return [
        {
            "type": "page",
            "anonymousId": "demo-anon-1",
            "name": "Home",
            "at": now - 30 * day,
            "context": context_fr,
        },
        {
            "type": "identify",
            "anonymousId": "demo-anon-1",
            "userId": "demo-camille",
            "at": now - 30 * day + 60_000,
            "context": context_fr,
            "traits": {
                "email": "camille@example.com",
                "first_name": "Camille",
                "phone": "06 12 34 56 78",
                "consent": {
                    "email": {"marketing": True},
                    "sms": {"marketing": True},
                    "source": "signup form",
                    "wording_version": "2026-01",
                },
            },
        },
        {
            "type": "track",
            "userId": "demo-camille",
            "event": "Order Completed",
            "at": now - 20 * day,
            "context": context_fr,
            "properties": {
                "order_id": "demo-1001",
                "total": 287.0,
                "currency": "EUR",
                "products": [_PRODUCTS[0], _PRODUCTS[1]],
            },
        },
        {
            "type": "track",
            "userId": "demo-camille",
            "event": "Product Viewed",
            "at": now - 2 * day,
            "context": context_fr,
            "properties": _PRODUCTS[2],
        },
        {
            "type": "track",
            "userId": "demo-camille",
            "event": "Product Added",
            "at": now - 2 * day + 120_000,
            "context": context_fr,
            "properties": {"cart_id": "demo-cart-7", **_PRODUCTS[2]},
        },
        {
            "type": "identify",
            "userId": "demo-jonas",
            "at": now - 10 * day,
            "context": {"locale": "de-DE", "location": {"country": "DE"}},
            "traits": {
                "email": "Jonas@Example.com",
                "first_name": "Jonas",
                "consent": {"email": {"marketing": False}},
            },
        },
        {
            "type": "track",
            "userId": "demo-jonas",
            "event": "Checkout Started",
            "at": now - 3 * hour,
            "properties": {
                "checkout_id": "demo-co-9",
                "total": 129.0,
                "currency": "EUR",
                "products": [_PRODUCTS[2]],
            },
        },
        {
            "type": "track",
            "anonymousId": "demo-anon-2",
            "event": "Product Viewed",
            "at": now - hour,
            "properties": _PRODUCTS[1],
        },
        {
            "type": "track",
            "userId": "demo-camille",
            "event": "Order Completed",
            "at": now - 60_000,
            "context": context_fr,
            "properties": {
                "order_id": "demo-1002",
                "total": 129.0,
                "currency": "EUR",
                "products": [_PRODUCTS[2]],
            },
        },
    ]


# Shipped journeys the demo puts live, so that the outbox shows what they send.
DEMO_JOURNEYS = ("order-confirmation", "abandoned-cart")


def seed(services: Services) -> int:
    """Put the demo journeys live (once), then append the demo events (deduplicated by
    messageId, so a second run adds nothing): Camille's recent order gets its
    confirmation, in French, in the sandbox outbox (GET /api/outbox)."""
    from parcours.journeys import ready_made_source as journeys_ready_made
    from parcours.journeys import versions as journeys

    now = services.clock.now_ms()
    with services.db.read() as conn:
        present = {version.journey_id for version in journeys.versions(conn)}
    for name in DEMO_JOURNEYS:
        if name not in present:
            source = journeys_ready_made(name)
            assert source is not None, name
            journeys.publish(services.db, source, "demo", "demo reviewer", now)
    events: list[Event] = []
    for number, item in enumerate(_script(now)):
        document = {k: v for k, v in item.items() if k != "at"}
        document["timestamp"] = iso(item["at"])
        document["messageId"] = f"demo-{number}"
        events.append(parse_event(_encode(document), source="demo", received_at=now))
    return services.writer.append_sync(events).stored
