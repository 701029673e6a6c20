"""Recommendations (issue 21): bought together, viewed but not bought, replenish and the
best sellers of the category, counted as orders and views arrive; never a product out of
stock nor one the customer bought; in a message's template and on the tracking page, in
English and French. SQLite and PostgreSQL (docs/commerce.md, "Recommendations")."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import pytest
from litestar.testing import TestClient
from sqlalchemy import func, select

from parcours import commerce
from parcours.app import create_app
from parcours.commerce.tables import commerce_bought_together, commerce_product_sales
from parcours.customers import profiles as customers
from parcours.messaging import templates as message_templates
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.conftest import make_event
from tests.test_journeys_engine import DAY, advance, track

WEEK = 7 * DAY

CATALOG = [
    # product, category, stock, consumable usage days
    ("serum", "skincare", 10, 30),
    ("cream", "skincare", 10, None),
    ("mask", "skincare", 10, None),
    ("tee", "clothing", 10, None),
    ("cap", "clothing", 10, None),
    ("socks", "clothing", 0, None),  # out of stock
    ("scarf", "clothing", 10, None),
]


def stock_catalog(services: Services) -> None:
    services.writer.append_sync(
        [
            make_event(
                event="Product Updated",
                at=services.clock.now_ms(),
                identity_required=False,
                properties={
                    "product_id": product_id,
                    "name": product_id.title(),
                    "category": category,
                    "url": f"https://shop.example/{product_id}",
                    "image_url": f"https://cdn.shop.example/{product_id}.jpg",
                    "price": 20,
                    "currency": "EUR",
                    "stock": stock,
                    "consumable": usage is not None,
                    **({"usage_days": usage} if usage else {}),
                },
            )
            for product_id, category, stock, usage in CATALOG
        ]
    )


def buy(services: Services, user: str, order_id: str, *products: str) -> None:
    track(
        services,
        user,
        "Order Completed",
        order_id=order_id,
        currency="EUR",
        total=20 * len(products),
        products=[{"product_id": p, "price": 20, "quantity": 1} for p in products],
    )


def others_shop(services: Services) -> None:
    """Tee and cap bought together twice, tee with socks once and with a scarf once."""
    buy(services, "bo", "b-1", "tee", "cap")
    buy(services, "cy", "c-1", "tee", "cap", "socks")
    buy(services, "di", "d-1", "tee", "scarf")


def recommended(
    services: Services, user: str, for_order: str | None = None, limit: int = 4
) -> list[tuple[str, str]]:
    with services.db.read() as conn:
        customer = customers.resolve(conn, user, "FR")
        found = commerce.recommendations(
            conn, customer, now=services.clock.now_ms(), for_order=for_order, limit=limit
        )
    return [(r.product_id, r.reason) for r in found]


def test_bought_together_is_counted_as_orders_arrive(services: Services) -> None:
    stock_catalog(services)
    others_shop(services)
    buy(services, "bo", "b-1", "tee", "cap")  # the same order reported again: counted once
    pairs, sales = counts(services)
    assert pairs == {"cap": 2, "scarf": 1, "socks": 1}
    assert sales == {"tee": 3, "cap": 2, "socks": 1, "scarf": 1}


def counts(services: Services, product_id: str = "tee") -> tuple[dict[str, int], dict[str, int]]:
    """The orders counted, all weeks together: with `product_id` per other product, and
    per product."""
    pairs, sales = commerce_bought_together, commerce_product_sales
    with services.db.read() as conn:
        together = conn.execute(
            select(pairs.c.other_id, func.sum(pairs.c.orders))
            .where(pairs.c.product_id == product_id)
            .group_by(pairs.c.other_id)
        ).all()
        sold = conn.execute(
            select(sales.c.product_id, func.sum(sales.c.orders)).group_by(sales.c.product_id)
        ).all()
    return {str(p): int(n) for p, n in together}, {str(p): int(n) for p, n in sold}


def test_bought_together_with_the_order_never_what_it_holds_nor_out_of_stock(
    services: Services,
) -> None:
    stock_catalog(services)
    others_shop(services)
    buy(services, "ana", "a-1", "tee")
    assert recommended(services, "ana", for_order="a-1") == [
        ("cap", "bought_together"),
        ("scarf", "bought_together"),  # socks were bought with a tee too: out of stock
    ]
    # The cap sold out: it goes.
    services.writer.append_sync(
        [
            make_event(
                event="Product Updated",
                at=services.clock.now_ms() + 1,
                identity_required=False,
                properties={"product_id": "cap", "stock": 0},
            )
        ]
    )
    assert recommended(services, "ana", for_order="a-1") == [("scarf", "bought_together")]


def test_a_product_deleted_from_the_catalog_is_never_recommended(services: Services) -> None:
    """Deleted (Shopify's products/delete): withdrawn whatever its stock, even a product
    whose variants' stock was never reported (in stock until then)."""
    stock_catalog(services)
    others_shop(services)
    buy(services, "ana", "a-1", "tee")
    services.writer.append_sync(
        [
            make_event(
                event="Product Updated",
                at=services.clock.now_ms() + 1,
                identity_required=False,
                properties={"product_id": "scarf", "name": "Scarf", "stock": None},
            ),
            make_event(
                event="Product Deleted",
                at=services.clock.now_ms() + 2,
                identity_required=False,
                properties={"product_id": "cap"},
            ),
        ]
    )
    assert recommended(services, "ana", for_order="a-1") == [("scarf", "bought_together")]
    with services.db.read() as conn:
        cap = commerce.product(conn, "cap")
    assert cap is not None and cap.deleted_at == services.clock.now_ms() + 2
    assert [variant.stock for variant in cap.variants] == [0]


def test_viewed_but_not_bought(services: Services, clock: SimulatedClock) -> None:
    stock_catalog(services)
    for product in ("mask", "mask", "mask", "cream", "tee"):
        track(services, "eve", "Product Viewed", product_id=product)
    buy(services, "eve", "e-1", "cream")  # bought after viewing it: not recommended
    assert recommended(services, "eve") == [
        ("mask", "viewed"),
        ("tee", "viewed"),
    ]
    advance(services, clock, 31 * DAY, step=DAY)  # views older than 30 days: forgotten
    assert [reason for _, reason in recommended(services, "eve")] == []


def test_replenish_a_consumable_due_but_not_on_the_page_of_the_order_that_holds_it(
    services: Services, clock: SimulatedClock
) -> None:
    stock_catalog(services)
    buy(services, "fay", "f-1", "serum")
    assert recommended(services, "fay") == []  # just bought: due in 30 days
    advance(services, clock, 20 * DAY, step=DAY)  # due within two weeks
    assert recommended(services, "fay") == [("serum", "replenish")]
    buy(services, "fay", "f-2", "mask")
    assert recommended(services, "fay", for_order="f-1") == []


def test_best_sellers_of_the_category(services: Services, clock: SimulatedClock) -> None:
    stock_catalog(services)
    others_shop(services)
    buy(services, "gus", "g-1", "scarf")
    assert recommended(services, "gus") == [
        ("tee", "bought_together"),
        ("cap", "best_seller"),  # clothing; socks out of stock; the scarf is his
    ]
    # Someone the shop knows nothing of: the best sellers of the whole shop.
    track(services, "new", "Signed Up")
    assert recommended(services, "new", limit=2) == [
        ("tee", "best_seller"),
        ("cap", "best_seller"),
    ]


def test_best_sellers_and_pairs_of_the_last_twelve_weeks(
    services: Services, clock: SimulatedClock
) -> None:
    stock_catalog(services)
    others_shop(services)  # the tee in three orders, the cap in two, the scarf in one
    track(services, "new", "Signed Up")
    assert recommended(services, "new", limit=3) == [
        ("tee", "best_seller"),
        ("cap", "best_seller"),
        ("scarf", "best_seller"),
    ]
    advance(services, clock, 8 * WEEK, step=WEEK)
    for user in ("jo", "kim", "lou"):
        buy(services, user, f"{user}-1", "scarf")
    # Eight weeks on, the first orders still count: the scarf is in four orders.
    assert recommended(services, "new", limit=3) == [
        ("scarf", "best_seller"),
        ("tee", "best_seller"),
        ("cap", "best_seller"),
    ]
    buy(services, "ned", "n-1", "tee")
    assert render_recommendations(services, "ned", "n-1") == [
        "Cap €20.00 bought_together https://shop.example/cap",
        "Scarf €20.00 bought_together https://shop.example/scarf",
    ]
    # Thirteen weeks after the first orders, their week is out of the last twelve.
    advance(services, clock, 5 * WEEK, step=WEEK)
    assert recommended(services, "new", limit=3) == [
        ("scarf", "best_seller"),
        ("tee", "best_seller"),  # ned's, eight weeks ago
    ]
    assert render_recommendations(services, "ned", "n-1") == [
        "Scarf €20.00 best_seller https://shop.example/scarf",
    ]
    # The next order counted deletes the weeks no more read.
    buy(services, "max", "m-1", "cream")
    assert counts(services) == ({}, {"scarf": 3, "tee": 1, "cream": 1})


def test_a_cancelled_order_is_taken_back_once(services: Services, client: TestClient[Any]) -> None:
    stock_catalog(services)
    others_shop(services)  # b-1 tee and cap, c-1 tee, cap and socks, d-1 tee and scarf
    buy(services, "ida", "i-1", "tee")
    path = urlsplit(services.delivery.links.tracking("i-1")).path

    def shown() -> str:
        html = client.get(f"{path}?lang=en").text
        return html.split('id="recommendations"', 1)[1].split("</section>", 1)[0]

    assert "https://shop.example/cap" in shown()
    for _ in range(2):  # reported twice: taken back once
        track(services, "bo", "Order Cancelled", order_id="b-1")
    assert counts(services) == (
        {"cap": 1, "scarf": 1, "socks": 1},
        {"tee": 3, "cap": 1, "socks": 1, "scarf": 1},
    )
    for _ in range(2):
        track(services, "cy", "Order Cancelled", order_id="c-1")
    taken_back = ({"cap": 0, "scarf": 1, "socks": 0}, {"tee": 2, "cap": 0, "socks": 0, "scarf": 1})
    assert counts(services) == taken_back
    assert "Cap" not in shown() and "https://shop.example/scarf" in shown()
    assert render_recommendations(services, "ida", "i-1") == [
        "Scarf €20.00 bought_together https://shop.example/scarf",
    ]
    # An order not counted (its lines came after it), or not known: nothing taken back.
    track(services, "nat", "Order Completed", order_id="n-1", currency="EUR", total=0)
    track(
        services,
        "nat",
        "Order Updated",
        order_id="n-1",
        currency="EUR",
        total=40,
        products=[{"product_id": p, "price": 20, "quantity": 1} for p in ("tee", "scarf")],
    )
    track(services, "nat", "Order Cancelled", order_id="n-1")
    track(services, "nat", "Order Cancelled", order_id="unknown")
    assert counts(services) == taken_back


def render_recommendations(services: Services, user: str, order_id: str) -> list[str]:
    """A message's template listing `recommendations(3)`, rendered for the user's order."""
    source = {
        "en": {
            "email": {
                "subject": "Hello",
                "text": "{% for p in recommendations(3) %}{{ p.name }} {{ p.price | money"
                "(p.currency) }} {{ p.reason }} {{ p.url }}\n{% endfor %}",
            }
        }
    }
    template = message_templates.check("recs", source)
    renderer = services.delivery.renderer
    with services.db.read() as conn:
        customer = customers.resolve(conn, user, "FR")
        event = {"event": "Order Completed", "properties": {"order_id": order_id}}
        context = renderer.context(conn, customer, "email", "marketing", event, {})
        rendered = message_templates.render(template, "email", context, "en")
    return rendered.fields["text"].splitlines()


def test_a_template_places_them_with_recommendations(
    services: Services, clock: SimulatedClock
) -> None:
    stock_catalog(services)
    others_shop(services)
    buy(services, "hal", "h-1", "tee")
    assert render_recommendations(services, "hal", "h-1") == [
        "Cap €20.00 bought_together https://shop.example/cap",
        "Scarf €20.00 bought_together https://shop.example/scarf",
    ]


@pytest.mark.parametrize(
    ("lang", "heading", "reason"),
    [
        ("en", "You may also like", "Often bought together"),
        ("fr", "Vous aimerez aussi", "Souvent achetés ensemble"),
    ],
)
def test_the_tracking_page_shows_them(
    services: Services, client: TestClient[Any], lang: str, heading: str, reason: str
) -> None:
    stock_catalog(services)
    others_shop(services)
    buy(services, "ida", "i-1", "tee")
    path = urlsplit(services.delivery.links.tracking("i-1")).path
    html = client.get(f"{path}?lang={lang}").text
    section = html.split('id="recommendations"', 1)[1].split("</section>", 1)[0]
    assert heading in section
    assert "https://shop.example/cap" in section and "Scarf" in section
    assert "Socks" not in section and "Tee<" not in section
    assert reason in section
    # An order with nothing to recommend draws no section.
    buy(services, "solo", "s-1", "mask")
    alone = client.get(urlsplit(services.delivery.links.tracking("s-1")).path).text
    assert 'id="recommendations"' not in alone


def test_recommendations_and_replenishment_read_by_key(tmp_path: Any) -> None:
    """On SQLite, what the order projection's new work and a recommendation read is found
    by key or index: no statement scans the orders, their lines, the pairs, the views or
    the replenishments whole (the catalog-sized best sellers of the whole shop may)."""
    import re
    import sqlite3
    from pathlib import Path

    from sqlalchemy import Engine, event

    from parcours.runtime.settings import Settings
    from tests.conftest import START

    statements: list[str] = []

    def trace(dbapi_conn: object, _record: object) -> None:
        if isinstance(dbapi_conn, sqlite3.Connection):
            dbapi_conn.set_trace_callback(statements.append)

    path = Path(tmp_path) / "parcours.db"
    event.listen(Engine, "connect", trace)
    try:
        services = Services.open(
            Settings(data_dir=Path(tmp_path), database_url=f"sqlite:///{path}"),
            clock=SimulatedClock(START),
        )
        try:
            stock_catalog(services)
            others_shop(services)
            for user in ("ana", "eve"):
                track(services, user, "Product Viewed", product_id="mask")
                buy(services, user, f"{user}-1", "serum", "tee")
            advance(services, services.clock, 20 * DAY, step=DAY)  # type: ignore[arg-type]
            statements.clear()
            buy(services, "ana", "ana-2", "serum", "cap")
            recommended(services, "ana", for_order="ana-2")
            recommended(services, "eve")
        finally:
            services.close()
    finally:
        event.remove(Engine, "connect", trace)
    watched = {
        "commerce_counted_orders",
        "commerce_orders",
        "commerce_order_lines",
        "commerce_bought_together",
        "commerce_product_views",
        "commerce_replenishments",
    }
    read = {table for table in watched for statement in statements if table in statement}
    assert read == watched  # each was read
    plans = sqlite3.connect(path)
    whole: dict[str, str] = {}
    for statement in set(statements):
        if not re.match(r"\s*(SELECT|UPDATE|DELETE|WITH)\b", statement, re.IGNORECASE):
            continue
        if not any(table in statement for table in watched):
            continue
        for row in plans.execute("EXPLAIN QUERY PLAN " + statement):
            scanned = re.match(r"SCAN (\w+)", row[3])
            if scanned and scanned.group(1) in watched:
                whole[statement[:300]] = row[3]
    assert whole == {}


def test_the_brand_chooses_how_many_weeks_count(settings: Settings, clock: SimulatedClock) -> None:
    """`recommendation_weeks`: 4, and orders of five weeks ago are no longer best sellers
    nor bought together, in messages and on the tracking page alike."""
    services = Services.open(replace(settings, recommendation_weeks=4), clock=clock)
    try:
        stock_catalog(services)
        others_shop(services)  # the tee in three orders, the cap in two
        advance(services, clock, 5 * WEEK, step=WEEK)
        for user in ("jo", "kim"):
            buy(services, user, f"{user}-1", "scarf")
        buy(services, "ned", "n-1", "tee")
        # Four weeks: only this week's orders count (the scarf in two, ned's tee in one).
        assert render_recommendations(services, "ned", "n-1") == [
            "Scarf €20.00 best_seller https://shop.example/scarf",
        ]
        with services.db.read() as conn:
            weeks = conn.execute(select(func.min(commerce_product_sales.c.week))).scalar_one()
        assert weeks == clock.now_ms() // WEEK  # the weeks before the window deleted
        path = urlsplit(services.delivery.links.tracking("n-1")).path
        with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
            html = client.get(f"{path}?lang=en").text
        shown = html.split('id="recommendations"', 1)[1].split("</section>", 1)[0]
        assert "https://shop.example/scarf" in shown and "https://shop.example/cap" not in shown
    finally:
        services.close()
