"""Carts and checkouts, their abandonment, and the catalog with stock (docs/commerce.md,
"Carts and checkouts" and "The catalog"), on SQLite and PostgreSQL, on a simulated clock:
`Cart Abandoned` once after the delay without activity and not before; an activity pushes
it back; an order closes the cart; an abandoned cart ordered later is recovered; merges
and erasure; products and variants with prices per currency and stock per variant."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import event, func, select

from parcours import commerce
from parcours.commerce.tables import commerce_carts
from parcours.customers import profiles as customers
from parcours.log import Event, append_events
from parcours.log import queries as log_queries
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.queue import jobs
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests import shopify_payloads as shopify
from tests.conftest import START, make_event
from tests.test_commerce import shop  # noqa: F401  (the fixture, with Shopify configured)
from tests.test_shopify import SHOP, deliver

MINUTE = 60_000
HOUR = 60 * MINUTE
TEE = {
    "product_id": "p-tee",
    "variant_id": "v-tee-m",
    "sku": "TEE-M",
    "name": "Tee",
    "variant": "M",
    "price": 40,
    "currency": "EUR",
    "image_url": "https://shop.example/tee.jpg",
}
CAP = {"product_id": "p-cap", "sku": "CAP", "name": "Cap", "price": 25, "currency": "EUR"}


def append(services: Services, *events: Event) -> None:
    services.writer.append_sync(list(events))


def added(user: str, at: int, product: dict[str, Any] = TEE, **extra: Any) -> Event:
    return make_event(userId=user, event="Product Added", at=at, properties={**product, **extra})


def ordered(user: str, at: int, order_id: str = "o-1", **extra: Any) -> Event:
    properties = {"order_id": order_id, "total": 40, "currency": "EUR", **extra}
    return make_event(userId=user, event="Order Completed", at=at, properties=properties)


def run_at(services: Services, clock: SimulatedClock, at: int) -> None:
    """Move the clock to `at` and run what is due."""
    clock.advance_ms(at - clock.now_ms())
    services.worker.run_due()


def abandoned_events(services: Services) -> list[dict[str, Any]]:
    with services.db.read() as conn:
        rows = log_queries.from_sources(conn, ("system",))
    return [json.loads(row.payload) for row in rows if row.name == "Cart Abandoned"]


def customer_id(services: Services, ref: str) -> int:
    with services.db.read() as conn:
        return customers.resolve(conn, ref, "FR")


def carts(services: Services, ref: str) -> list[commerce.Cart]:
    with services.db.read() as conn:
        return commerce.carts_of(conn, customer_id(services, ref))


# ---- carts --------------------------------------------------------------------------------


def test_a_cart_keeps_its_items_value_and_recovery_link(services: Services) -> None:
    append(
        services,
        added("ana", START, quantity=2),
        added("ana", START + MINUTE, CAP),
        added("ana", START + 2 * MINUTE),  # one more tee: the same line
        make_event(
            userId="ana",
            event="Product Removed",
            at=START + 3 * MINUTE,
            properties={**CAP},  # no quantity: the whole line
        ),
    )
    [cart] = carts(services, "ana")
    assert cart.status == "open"
    assert [(i.sku, i.quantity, i.price, i.image_url) for i in cart.items] == [
        ("TEE-M", 3, Decimal(40), "https://shop.example/tee.jpg")
    ]
    assert (cart.value, cart.item_count, cart.currency) == (Decimal(120), 3, "EUR")
    append(
        services,
        make_event(
            userId="ana",
            event="Checkout Started",
            at=START + 4 * MINUTE,
            properties={
                "checkout_id": "ck-1",
                "value": 118.5,
                "currency": "eur",
                "checkout_url": "https://shop.example/checkout/ck-1",
                "products": [{**TEE, "quantity": 3}],
            },
        ),
    )
    [cart] = carts(services, "ana")
    assert (cart.checkout_id, cart.value, cart.checkout_started_at) == (
        "ck-1",
        Decimal("118.5"),
        START + 4 * MINUTE,
    )
    assert cart.recovery_url == "https://shop.example/checkout/ck-1"
    with services.db.read() as conn:
        assert commerce.cart_of(conn, "ck-1") == cart


def test_cart_abandoned_once_after_the_delay_and_not_before(
    services: Services, clock: SimulatedClock
) -> None:
    append(services, added("ana", START, cart_url="https://shop.example/cart"))
    run_at(services, clock, START + 59 * MINUTE)
    assert abandoned_events(services) == []
    assert carts(services, "ana")[0].status == "open"
    run_at(services, clock, START + 61 * MINUTE)
    [event] = abandoned_events(services)
    props = event["properties"]
    assert props["total"] == 40 and props["currency"] == "EUR"
    assert props["cart_url"] == "https://shop.example/cart"
    assert props["products"][0]["sku"] == "TEE-M"
    assert props["products"][0]["image_url"] == "https://shop.example/tee.jpg"
    [cart] = carts(services, "ana")
    assert (cart.status, cart.abandoned_at) == ("abandoned", START + 61 * MINUTE)
    # activity after the announcement, then silence again: no second one
    append(services, added("ana", START + 2 * HOUR, CAP))
    run_at(services, clock, START + 5 * HOUR)
    assert len(abandoned_events(services)) == 1


def test_each_activity_pushes_the_abandonment_back(
    services: Services, clock: SimulatedClock
) -> None:
    append(services, added("ana", START))
    run_at(services, clock, START + 50 * MINUTE)
    append(
        services,
        make_event(userId="ana", event="Cart Viewed", at=START + 50 * MINUTE, properties={}),
    )
    run_at(services, clock, START + 70 * MINUTE)
    assert abandoned_events(services) == []
    run_at(services, clock, START + 111 * MINUTE)
    assert len(abandoned_events(services)) == 1
    with services.db.read() as conn:  # the activity joined the cart: still one
        assert conn.execute(select(func.count()).select_from(commerce_carts)).scalar() == 1


def test_an_order_closes_the_cart_and_nothing_is_announced(
    services: Services, clock: SimulatedClock
) -> None:
    append(
        services,
        added("ana", START, cart_id="c-1"),
        added("bo", START, cart_id="c-2"),
        added("cy", START, CAP),
    )
    run_at(services, clock, START + 30 * MINUTE)
    append(
        services,
        ordered("ana", START + 30 * MINUTE, cart_id="c-1"),  # names its cart
        ordered("cy", START + 30 * MINUTE, order_id="o-3"),  # names none: the customer's
    )
    run_at(services, clock, START + 3 * HOUR)
    assert [e["properties"]["cart_id"] for e in abandoned_events(services)] == ["c-2"]
    [ana] = carts(services, "ana")
    assert (ana.status, ana.order_id, ana.ordered_at) == ("ordered", "o-1", START + 30 * MINUTE)
    assert not ana.recovered
    assert carts(services, "cy")[0].status == "ordered"


def test_an_order_outside_the_window_leaves_an_unnamed_cart_open(
    services: Services, clock: SimulatedClock, settings: Settings
) -> None:
    append(services, added("ana", START))
    append(services, ordered("ana", START + 200 * HOUR))  # a week and more later
    assert carts(services, "ana")[0].status in ("open", "abandoned")


def test_ids_a_cart_takes_within_a_group_find_it_for_the_events_after(
    services: Services,
) -> None:
    """In one group: a cart made without ids takes a cart id, a checkout id and the order
    its checkout names; a later event naming that cart id adds to it, and an order named
    so closes it, though another shopper places it (each event finds its cart by the ids
    taken in the group: commerce/carts.py, `_Carts`)."""
    append(
        services,
        added("ana", START),
        make_event(
            userId="ana",
            event="Checkout Started",
            at=START + MINUTE,
            properties={"cart_id": "cart-9", "checkout_id": "chk-1", "order_id": "o-7"},
        ),
        added("ana", START + 2 * MINUTE, CAP, cart_id="cart-9"),
        added("bea", START + 2 * MINUTE, CAP),
        ordered("guest", START + 3 * MINUTE, order_id="o-7"),
    )
    (ana,) = carts(services, "ana")
    assert (ana.cart_id, ana.checkout_id, ana.order_id) == ("cart-9", "chk-1", "o-7")
    assert sorted(item.product_id for item in ana.items) == ["p-cap", "p-tee"]
    assert ana.status == "ordered"
    (bea,) = carts(services, "bea")
    assert (bea.status, bea.cart_id) == ("open", None)


def test_a_cart_abandoned_then_ordered_is_recovered(
    services: Services, clock: SimulatedClock
) -> None:
    append(
        services,
        make_event(
            userId="ana",
            event="Checkout Started",
            at=START,
            properties={"checkout_id": "ck-9", "products": [TEE], "currency": "EUR"},
        ),
    )
    run_at(services, clock, START + 2 * HOUR)
    assert len(abandoned_events(services)) == 1
    append(services, ordered("ana", START + 20 * HOUR, checkout_id="ck-9", order_id="o-9"))
    [cart] = carts(services, "ana")
    assert (cart.status, cart.order_id, cart.recovered) == ("recovered", "o-9", True)
    # a late report of the checkout does not reopen it
    append(
        services,
        make_event(
            userId="ana",
            event="Checkout Updated",
            at=START + 21 * HOUR,
            properties={"checkout_id": "ck-9", "products": [CAP]},
        ),
    )
    run_at(services, clock, START + 30 * HOUR)
    [cart] = carts(services, "ana")
    assert cart.status == "recovered" and [i.sku for i in cart.items] == ["TEE-M"]
    assert len(abandoned_events(services)) == 1


def test_an_empty_cart_is_not_announced(services: Services, clock: SimulatedClock) -> None:
    append(
        services,
        added("ana", START),
        make_event(userId="ana", event="Product Removed", at=START + 1, properties=TEE),
    )
    run_at(services, clock, START + 3 * HOUR)
    assert abandoned_events(services) == []
    assert carts(services, "ana")[0].item_count == 0


def test_shopify_checkouts_and_orders_make_and_close_a_cart(
    shop: tuple[Services, TestClient[Any]],  # noqa: F811
) -> None:
    services, client = shop
    checkout = shopify.checkout()
    response = deliver(client, "checkouts/create", checkout)
    assert response.status_code == 200, response.text
    with services.db.read() as conn:
        cart = commerce.cart_of(conn, f"{SHOP}:{checkout['token']}")
    assert cart is not None and cart.status == "open" and cart.items
    assert cart.recovery_url == checkout.get("abandoned_checkout_url")
    order = shopify.order()
    order["checkout_token"] = checkout["token"]
    assert deliver(client, "orders/create", order, webhook_id="wh-2").status_code == 200
    with services.db.read() as conn:
        closed = commerce.cart_of(conn, f"{SHOP}:{checkout['token']}")
    assert closed is not None and closed.status == "ordered"


def test_a_merged_customers_cart_goes_to_the_survivor_and_leaves_with_an_erasure(
    services: Services, clock: SimulatedClock
) -> None:
    append(
        services,
        make_event(anonymousId="phone-1", event="Product Added", at=START, properties=TEE),
    )
    append(services, make_event("identify", userId="ana", traits={"email": "ana@example.com"}))
    append(services, make_event("identify", userId="ana", anonymousId="phone-1"))
    survivor = customer_id(services, "ana")
    [cart] = carts(services, "ana")
    assert cart.customer_id == survivor
    run_at(services, clock, START + 2 * HOUR)
    [event] = abandoned_events(services)
    erased = customers.erase(
        services.db, services.people, "ana", "FR", services.clock.now_ms(), "test"
    )
    assert erased is not None and event
    with services.db.read() as conn:
        assert commerce.carts_of(conn, survivor) == []
        assert conn.execute(select(func.count()).select_from(commerce_carts)).scalar() == 0


# ---- the catalog --------------------------------------------------------------------------


def catalog_event(at: int = START, **properties: Any) -> Event:
    return make_event(
        event="Product Updated",
        at=at,
        identity_required=False,
        properties=properties,
    )


def test_the_catalog_keeps_variants_prices_per_currency_and_stock(services: Services) -> None:
    append(
        services,
        catalog_event(
            product_id="p-tee",
            name="Tee",
            category="tops",
            images=["https://shop.example/tee.jpg", {"src": "https://shop.example/tee-2.jpg"}],
            variants=[
                {
                    "variant_id": "v-tee-m",
                    "sku": "TEE-M",
                    "variant": "M",
                    "prices": {"EUR": 40, "usd": "45.50"},
                    "stock": 3,
                },
                {
                    "variant_id": "v-tee-l",
                    "sku": "TEE-L",
                    "variant": "L",
                    "price": 40,
                    "currency": "EUR",
                    "stock": 0,
                },
            ],
        ),
        catalog_event(product_id="p-serum", name="Serum", consumable=True, usage_days=30, stock=12),
    )
    with services.db.read() as conn:
        tee = commerce.product(conn, "p-tee")
        serum = commerce.product(conn, "p-serum")
        assert commerce.stock_of(conn, "v-tee-m") == 3
        assert commerce.stock_of(conn, "TEE-L") == 0  # by SKU
        assert commerce.stock_of(conn, "nothing") is None
    assert tee is not None and serum is not None
    assert tee.images == ("https://shop.example/tee.jpg", "https://shop.example/tee-2.jpg")
    medium, large = sorted(tee.variants, key=lambda v: v.variant_id, reverse=True)
    assert medium.prices == {"EUR": Decimal(40), "USD": Decimal("45.50")}
    assert (medium.in_stock, large.in_stock, tee.stock) == (True, False, 3)
    assert (serum.consumable, serum.usage_days, serum.stock) == (True, 30, 12)
    assert [v.variant_id for v in serum.variants] == ["p-serum"]  # its own id
    # a later report of the stock replaces it; an older one changes nothing
    append(
        services,
        catalog_event(at=START + HOUR, product_id="p-tee", variant_id="v-tee-l", stock=5),
        catalog_event(at=START - HOUR, product_id="p-tee", variant_id="v-tee-m", stock=99),
    )
    with services.db.read() as conn:
        assert commerce.stock_of(conn, "v-tee-l") == 5
        assert commerce.stock_of(conn, "v-tee-m") == 3


def test_the_shoppers_events_fill_only_what_the_catalog_does_not_know(
    services: Services,
) -> None:
    append(services, catalog_event(product_id="p-tee", name="Tee", variant_id="v-tee-m", stock=3))
    append(
        services,
        make_event(
            userId="ana",
            event="Product Viewed",
            properties={**TEE, "name": "Cheap tee", "stock": 1000, "consumable": True},
        ),
        make_event(userId="ana", event="Product Viewed", properties=CAP),
    )
    with services.db.read() as conn:
        tee = commerce.product(conn, "p-tee")
        cap = commerce.product(conn, "p-cap")
    assert tee is not None and cap is not None
    assert (tee.name, tee.image_url, tee.consumable, tee.stock) == (
        "Tee",
        "https://shop.example/tee.jpg",
        False,
        3,
    )
    assert tee.variants[0].prices == {"EUR": Decimal(40)}
    assert (cap.source, cap.name, cap.variants[0].sku) == ("seen", "Cap", "CAP")


def test_a_shoppers_report_repeated_in_one_group_is_the_same_as_once(
    services: Services,
) -> None:
    """A group's shopper events that repeat an earlier report word for word, around the
    catalog's own report between them: each applied in order, the shoppers' filling only
    the blanks the catalog left."""
    seen_cap = {"product_id": "p-cap", "name": "Cap", "price": 20, "currency": "EUR"}
    append(
        services,
        make_event(userId="ana", event="Product Viewed", properties=seen_cap),
        make_event(userId="bea", event="Product Viewed", properties=seen_cap),
        catalog_event(product_id="p-cap", name="Canvas cap", variant_id="p-cap", stock=4),
        make_event(userId="cy", event="Product Viewed", properties=seen_cap),
        make_event(
            userId="cy", event="Product Viewed", properties={**seen_cap, "category": "hats"}
        ),
    )
    with services.db.read() as conn:
        cap = commerce.product(conn, "p-cap")
    assert cap is not None
    # The catalog's name stands; the shoppers' price and the blank they filled are kept.
    assert (cap.name, cap.category, cap.stock) == ("Canvas cap", "hats", 4)
    assert cap.variants[0].prices == {"EUR": Decimal(20)}


def test_a_shoppers_event_fills_a_blank_of_a_product_read_before(services: Services) -> None:
    """The process remembers what it read filled (commerce/catalog.py, `_Filled`): a view
    that brings nothing new changes nothing, one that brings a blank's value or a price
    in another currency still fills it, however often the product was read before."""
    append(services, catalog_event(product_id="p-tee", name="Tee", variant_id="v-tee-m", stock=3))
    for user in ("ana", "bea"):  # read, then known: name, image, sku, variant, EUR
        append(services, make_event(userId=user, event="Product Viewed", properties=TEE))
    append(
        services,
        make_event(userId="cy", event="Product Viewed", properties={**TEE, "category": "tops"}),
        make_event(
            userId="cy",
            event="Product Viewed",
            properties={**TEE, "price": 45, "currency": "USD", "brand": "Maison"},
        ),
    )
    append(services, make_event(userId="di", event="Product Viewed", properties=TEE))
    with services.db.read() as conn:
        tee = commerce.product(conn, "p-tee")
    assert tee is not None
    assert (tee.name, tee.category, tee.brand, tee.stock) == ("Tee", "tops", "Maison", 3)
    assert tee.variants[0].prices == {"EUR": Decimal(40), "USD": Decimal(45)}
    assert tee.variants[0].sku == "TEE-M"


def test_what_a_transaction_rolled_back_wrote_is_never_taken_for_filled(
    services: Services, clock: SimulatedClock
) -> None:
    """A product written then read in a transaction that is rolled back: the process did
    not take it as stored, and the next shopper's event makes it."""
    seen = {"product_id": "p-new", "name": "New", "price": 9, "currency": "EUR"}
    with pytest.raises(RuntimeError), services.db.write() as conn:
        for user in ("ana", "bea"):  # the second reads what the first wrote
            view = make_event(userId=user, event="Product Viewed", properties=seen)
            append_events(conn, [[view]], clock.now_ms(), services.reactions)
        raise RuntimeError("rolled back")
    append(services, make_event(userId="cy", event="Product Viewed", properties=seen))
    with services.db.read() as conn:
        product = commerce.product(conn, "p-new")
    assert product is not None
    assert (product.name, product.variants[0].prices) == ("New", {"EUR": Decimal(9)})


def test_a_shoppers_event_about_what_is_known_filled_reads_no_catalog_row(
    tmp_path: Path, clock: SimulatedClock
) -> None:
    """Once its product was read, a view that could fill nothing reads neither the
    products nor the variants (every statement traced by SQLite's own hook)."""
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'p.db'}")
    services = Services.open(settings, clock=clock)
    try:
        append(services, make_event(userId="ana", event="Product Viewed", properties=TEE))
        append(services, make_event(userId="bea", event="Product Viewed", properties=TEE))
        statements: list[str] = []
        services.db.engine.dispose()  # the writer's next connection is traced
        event.listen(
            services.db.engine, "connect", lambda raw, _: raw.set_trace_callback(statements.append)
        )
        append(services, make_event(userId="cy", event="Product Viewed", properties=TEE))
        assert statements, "the trace saw the append"
        assert not [s for s in statements if "FROM commerce_products" in s]
        assert not [s for s in statements if "FROM commerce_variants" in s]
        append(services, make_event(userId="di", event="Product Viewed", properties=CAP))
        assert [s for s in statements if "FROM commerce_products" in s]  # not known: read
    finally:
        services.close()


def test_the_catalog_import_goes_through_the_log_once(services: Services) -> None:
    rows = [
        {
            "product_id": "p-1",
            "name": "Mug",
            "variant_id": "v-1",
            "price": "12",
            "currency": "EUR",
            "stock": "4",
            "images": "https://x/1.jpg https://x/2.jpg",
        },
        {
            "product_id": "p-2",
            "name": "Coffee",
            "consumable": "yes",
            "usage_days": "21",
            "stock": "",
        },
    ]
    with services.db.write() as conn:
        first = commerce.import_catalog(conn, rows, services.clock.now_ms(), services.reactions)
    with services.db.write() as conn:
        again = commerce.import_catalog(conn, rows, services.clock.now_ms(), services.reactions)
    assert (first.stored, again.stored, again.duplicates) == (2, 0, 2)
    with services.db.read() as conn:
        mug = commerce.product(conn, "p-1")
        coffee = commerce.product(conn, "p-2")
    assert mug is not None and coffee is not None
    assert mug.images == ("https://x/1.jpg", "https://x/2.jpg") and mug.stock == 4
    assert (coffee.consumable, coffee.usage_days, coffee.stock) == (True, 21, None)
    with pytest.raises(commerce.CatalogImportError, match="row 2: price must be a number"):
        commerce.import_events([rows[0], {"product_id": "p-3", "price": "abc"}], 0)
    with pytest.raises(commerce.CatalogImportError, match="unknown column 'colour'"):
        commerce.import_events([{"product_id": "p-3", "colour": "red"}], 0)


def test_shopify_products_and_inventory_levels_keep_the_stock_per_variant(
    shop: tuple[Services, TestClient[Any]],  # noqa: F811
) -> None:
    services, client = shop
    product = {
        "id": 632910392,
        "title": "Phone case",
        "vendor": "Acme",
        "product_type": "accessories",
        "updated_at": "2026-11-20T10:00:00-05:00",
        "images": [{"id": 850703190, "src": "https://cdn.example/case.jpg"}],
        "variants": [
            {
                "id": 808950810,
                "title": "Pink",
                "sku": "CASE-PINK",
                "inventory_quantity": 10,
                "inventory_item_id": 39072856,
                "image_id": 850703190,
                "presentment_prices": [{"price": {"amount": "19.00", "currency_code": "EUR"}}],
            }
        ],
    }
    assert deliver(client, "products/create", product, webhook_id="p-1").status_code == 200
    for number, (location, available) in enumerate(((1, 4), (2, 3))):
        level = {
            "inventory_item_id": 39072856,
            "location_id": location,
            "available": available,
            "updated_at": f"2026-11-21T10:00:0{number}-05:00",
        }
        response = deliver(client, "inventory_levels/update", level, webhook_id=f"i-{number}")
        assert response.status_code == 200, response.text
    with services.db.read() as conn:
        found = commerce.product(conn, "632910392")
        assert commerce.stock_of(conn, "CASE-PINK") == 7  # both locations
    assert found is not None
    assert (found.name, found.brand, found.category, found.source) == (
        "Phone case",
        "Acme",
        "accessories",
        "shopify",
    )
    [pink] = found.variants
    assert (pink.image_url, pink.prices) == ("https://cdn.example/case.jpg", {"EUR": Decimal(19)})
    # products/delete (its payload is the product's id): withdrawn, out of stock.
    gone = deliver(client, "products/delete", {"id": 632910392}, webhook_id="p-del")
    assert gone.status_code == 200, gone.text
    with services.db.read() as conn:
        withdrawn = commerce.product(conn, "632910392")
        assert commerce.stock_of(conn, "CASE-PINK") == 0
    assert withdrawn is not None and withdrawn.deleted_at is not None
    refused = deliver(client, "products/delete", {"title": "no id"}, webhook_id="p-del-2")
    assert refused.status_code == 400 and "products/delete: the payload has no id" in refused.text


def test_a_group_of_carts_and_products_is_written_in_a_few_statements(
    services: Services,
) -> None:
    """Forty shoppers adding to their carts in one append: the carts, their jobs and the
    catalog are written in a handful of statements, not one (or more) per event."""
    from sqlalchemy import event

    append(services, make_event("identify", userId="warm-up", traits={"email": "w@example.com"}))
    shoppers = [added(f"s-{n}", START + n, {**TEE, "variant_id": f"v-{n}"}) for n in range(40)]
    baseline = [make_event("identify", userId=f"s-{n}", traits={"n": n}) for n in range(40)]
    append(services, *baseline)
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(services.db.engine, "before_cursor_execute", count)
    try:
        append(services, *shoppers)
    finally:
        event.remove(services.db.engine, "before_cursor_execute", count)
    mine = [s for s in seen if "commerce_" in s or "jobs" in s]
    assert len(mine) <= 8, mine  # (the jobs go in one executemany of the raw cursor)
    with services.db.read() as conn:
        assert len(commerce.carts_of(conn, customer_id(services, "s-7"))) == 1
        assert commerce.stock_of(conn, "v-7") is None  # seen, never counted
        assert commerce.variant(conn, "v-7") is not None
        scheduled = select(func.count()).where(jobs.c.kind == "commerce.cart_abandoned")
        assert conn.execute(scheduled).scalar() == 40
