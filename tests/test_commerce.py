"""Commerce projected from the log (docs/commerce.md): orders counted once whatever
reported them, lines, refunds per line and cancellations; parcels with one status
taxonomy that never moves backwards; returns and their window; the bad input rules;
merges and erasure."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from alembic import command
from litestar.testing import TestClient
from sqlalchemy import inspect, text

from parcours import commerce
from parcours.app import create_app
from parcours.commerce import statuses
from parcours.commerce.statuses import Position, advance
from parcours.customers import profiles as customers
from parcours.ingest.carriers import CarrierError, shipments_from_csv, sign
from parcours.log import Event
from parcours.runtime.clock import SimulatedClock, iso
from parcours.runtime.db import Database, alembic_config
from parcours.runtime.settings import Settings
from parcours.services import Services
from parcours.tracking import parse_event
from tests import shopify_payloads as shopify
from tests.conftest import START, WRITE_KEY, admin_headers, make_event
from tests.test_shopify import SECRET, SHOP, deliver, empty_database_url

__all__ = ["empty_database_url"]  # the fixture, used by name

CARRIER_SECRET = "carrier-test-secret"
HOUR = 3_600_000
DAY = 24 * HOUR
SHOPIFY_ORDER = f"{SHOP}:{shopify.order()['id']}"


@pytest.fixture
def shop(settings: Settings, clock: SimulatedClock) -> Iterator[tuple[Services, TestClient[Any]]]:
    configured = settings.with_overrides(
        shopify_webhook_secret=SECRET,
        shopify_shops=(SHOP,),
        carrier_webhook_secret=CARRIER_SECRET,
    )
    services = Services.open(configured, clock=clock)
    with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
        yield services, client
    services.close()


def append(services: Services, *events: Event) -> None:
    services.writer.append_sync(list(events))


def placed(order_id: str, user: str = "ana", at: int = START, **properties: Any) -> Event:
    document: dict[str, Any] = {
        "order_id": order_id,
        "currency": "EUR",
        "total": 120,
        "discount": 10,
        "coupon": "WELCOME10",
        "products": [
            {"product_id": "p1", "sku": "TEE-M", "name": "Tee", "price": 40, "quantity": 2},
            {"product_id": "p2", "sku": "CAP", "name": "Cap", "price": 50, "quantity": 1},
        ],
    }
    return make_event(userId=user, event="Order Completed", at=at, properties=document | properties)


def scan(shipment_id: str, status: str, at: int, order_id: str = "o-1", **extra: Any) -> Event:
    return make_event(
        userId="ana",
        event="Shipment Updated",
        at=at,
        properties={"shipment_id": shipment_id, "order_id": order_id, "status": status, **extra},
    )


def the_order(services: Services, order_id: str) -> commerce.Order:
    with services.db.read() as conn:
        found = commerce.order(conn, order_id)
    assert found is not None
    return found


def the_shipment(services: Services, shipment_id: str) -> commerce.Shipment:
    with services.db.read() as conn:
        found = commerce.shipment(conn, shipment_id)
    assert found is not None
    return found


def customer_id(services: Services, ref: str) -> int:
    with services.db.read() as conn:
        return customers.resolve(conn, ref, "FR")


# ---- the status rule, without a database -----------------------------------------------


def test_a_shipment_never_moves_backwards() -> None:
    delivered = Position(statuses.DELIVERED, 4, 100)
    assert advance(delivered, statuses.IN_TRANSIT, 200) is None
    assert advance(delivered, statuses.EXCEPTION, 300) is None
    out = Position(statuses.OUT_FOR_DELIVERY, 2, 100)
    assert advance(out, statuses.IN_TRANSIT, 200) is None  # a late scan of an earlier stage
    assert advance(out, statuses.FAILED_ATTEMPT, 50) is None  # as far, but older
    assert advance(out, statuses.FAILED_ATTEMPT, 150) == Position(statuses.FAILED_ATTEMPT, 2, 150)
    trouble = advance(out, statuses.EXCEPTION, 150)
    assert trouble == Position(statuses.EXCEPTION, 2, 150)
    assert advance(trouble, statuses.IN_TRANSIT, 160) is None  # not as far as reached
    assert advance(trouble, statuses.OUT_FOR_DELIVERY, 160) == Position("out_for_delivery", 2, 160)
    assert advance(out, statuses.DELIVERED, 10) == Position(statuses.DELIVERED, 4, 10)
    assert advance(out, None, 500) is None  # `delayed`: no stage


def test_every_word_maps_onto_the_taxonomy() -> None:
    assert set(statuses.STATUSES) == {
        "info_received",
        "in_transit",
        "out_for_delivery",
        "failed_attempt",
        "available_for_pickup",
        "delivered",
        "exception",
        "returned_to_sender",
        "expired",
    }
    shopify_words = {
        None: "info_received",
        "label_printed": "info_received",
        "label_purchased": "info_received",
        "confirmed": "info_received",
        "in_transit": "in_transit",
        "out_for_delivery": "out_for_delivery",
        "attempted_delivery": "failed_attempt",
        "ready_for_pickup": "available_for_pickup",
        "picked_up": "delivered",
        "delivered": "delivered",
        "failure": "exception",
        "delayed": None,
    }
    for word, expected in shopify_words.items():
        status = statuses.first_position(None, 0).status if word is None else None
        assert (status or statuses.status_of(word or "")) == expected, word
    assert all(s is None or s in statuses.STATUSES for s in statuses.WORDS.values())


# ---- orders ---------------------------------------------------------------------------


def test_an_order_keeps_its_lines_totals_discount_and_source(services: Services) -> None:
    append(services, placed("o-1", at=START + 5))
    order = the_order(services, "o-1")
    assert (order.source, order.status, order.currency) == ("site", "placed", "EUR")
    assert (order.total, order.discount, order.coupon) == (Decimal(120), Decimal(10), "WELCOME10")
    assert order.placed_at == START + 5
    assert [(line.line, line.sku, line.price, line.quantity) for line in order.lines] == [
        (1, "TEE-M", Decimal(40), 2),
        (2, "CAP", Decimal(50), 1),
    ]
    with services.db.read() as conn:
        assert [o.order_id for o in commerce.orders_of(conn, customer_id(services, "ana"))] == [
            "o-1"
        ]


def test_an_order_reported_by_shopify_and_the_site_is_counted_once(
    shop: tuple[Services, TestClient[Any]],
) -> None:
    services, client = shop
    response = deliver(client, "orders/create", shopify.order())
    assert response.status_code == 200, response.text
    site = client.post(
        "/v1/track",
        json={
            "userId": "bob",
            "event": "Order Completed",
            "properties": {"order_id": SHOPIFY_ORDER, "total": 403, "currency": "EUR"},
            "context": {"traits": {"email": "bob@example.com"}},
        },
        auth=(WRITE_KEY, ""),
    )
    assert site.status_code == 200, site.text
    order = the_order(services, SHOPIFY_ORDER)
    assert (order.source, order.number, order.total) == ("shopify", "#9999", Decimal(403))
    assert len(order.lines) == 2
    bob = customer_id(services, "bob@example.com")
    with services.db.read() as conn:
        assert len(commerce.orders_of(conn, bob)) == 1
        # The computed traits still count it once (they read the customers' orders).
        assert customers.profile(conn, bob).computed["orders_count"] == 1


def test_a_cancellation_and_an_update(services: Services) -> None:
    append(services, placed("o-1"))
    append(
        services,
        make_event(
            userId="ana",
            event="Order Updated",
            properties={"order_id": "o-1", "total": 90, "shipping": 5},
        ),
    )
    assert (the_order(services, "o-1").total, the_order(services, "o-1").shipping) == (
        Decimal(90),
        Decimal(5),
    )
    append(
        services,
        make_event(
            userId="ana",
            event="Order Cancelled",
            at=START + HOUR,
            properties={"order_id": "o-1", "cancel_reason": "customer"},
        ),
    )
    order = the_order(services, "o-1")
    assert (order.status, order.cancelled_at, order.cancel_reason) == (
        "cancelled",
        START + HOUR,
        "customer",
    )


def test_a_cancellation_that_comes_before_its_order_is_kept_and_applied_when_it_comes(
    services: Services,
) -> None:
    """Webhooks come in any order: the cancellation of an order not known yet is kept;
    when the order comes it is cancelled (with the cancellation's time and reason), counts
    in neither the customer's order traits nor the best sellers, and nothing is left
    kept. A second cancellation of it reported before it came changes nothing."""
    for reason, at in (("fraud", START + HOUR), ("customer", START + 2 * HOUR)):
        append(
            services,
            make_event(
                userId="ana",
                event="Order Cancelled",
                at=at,
                properties={"order_id": "o-7", "cancel_reason": reason},
            ),
        )
    with services.db.read() as conn:
        assert commerce.order(conn, "o-7") is None
    append(services, placed("o-8", at=START))
    append(services, placed("o-7", at=START))
    order = the_order(services, "o-7")
    assert (order.status, order.cancelled_at, order.cancel_reason) == (
        "cancelled",
        START + HOUR,
        "fraud",
    )
    with services.db.read() as conn:
        computed = customers.profile(conn, customer_id(services, "ana")).computed
        kept = conn.execute(text("SELECT count(*) FROM commerce_cancellations")).scalar_one()
        sold = (
            conn.execute(text("SELECT order_id FROM commerce_counted_orders ORDER BY order_id"))
            .scalars()
            .all()
        )
    assert (computed["orders_count"], computed["revenue"]["EUR"]["orders"]) == (1, 1)
    assert kept == 0
    assert sold == ["o-8"]


def test_refunds_are_counted_per_line_and_never_past_what_was_paid(services: Services) -> None:
    append(services, placed("o-1"))
    append(
        services,
        make_event(
            userId="ana",
            event="Order Refunded",
            properties={
                "order_id": "o-1",
                "refund_id": "r-1",
                "products": [{"sku": "TEE-M", "price": 40, "quantity": 1}],
            },
        ),
    )
    order = the_order(services, "o-1")
    assert order.refunded == Decimal(40)
    assert [(line.refunded_quantity, line.refunded_amount) for line in order.lines] == [
        (1, Decimal(40)),
        (0, Decimal(0)),
    ]
    # A report of more than is left (from Shopify, say): recorded, counted up to the total.
    append(
        services,
        make_event(
            userId="ana",
            event="Order Refunded",
            properties={"order_id": "o-1", "refund_id": "r-2", "total": 500},
        ),
    )
    order = the_order(services, "o-1")
    assert order.refunded == order.total == Decimal(120)
    assert [(r.refund_id, r.reported, r.amount) for r in order.refunds] == [
        ("r-1", Decimal(40), Decimal(40)),
        ("r-2", Decimal(500), Decimal(80)),
    ]
    # The same refund reported again counts nothing more.
    append(
        services,
        make_event(
            userId="ana",
            event="Order Refunded",
            properties={"order_id": "o-1", "refund_id": "r-1", "total": 40},
        ),
    )
    assert len(the_order(services, "o-1").refunds) == 2


def test_a_shopify_refund_is_counted_on_its_line(shop: tuple[Services, TestClient[Any]]) -> None:
    services, client = shop
    deliver(client, "orders/create", shopify.order(), webhook_id="wh-order")
    deliver(client, "refunds/create", shopify.refund(), webhook_id="wh-refund")
    order = the_order(services, SHOPIFY_ORDER)
    assert order.refunded == Decimal("199.00")
    assert [line.refunded_quantity for line in order.lines] == [1, 0]


def test_a_refund_through_the_api_is_refused_past_what_is_left(
    services: Services, client: TestClient[Any]
) -> None:
    append(services, placed("o-1"))
    url = "/api/commerce/orders/o-1/refunds"
    too_much = client.post(url, json={"amount": "150"}, headers=admin_headers())
    assert too_much.status_code == 409, too_much.text
    message = too_much.json()["message"]
    assert "150.00 EUR" in message and "120.00 EUR left to refund on order o-1" in message
    line = client.post(url, json={"lines": [{"line": 2, "quantity": 2}]}, headers=admin_headers())
    assert line.status_code == 409
    assert "2 of line 2 (Cap)" in line.json()["message"]
    assert "1 left to refund" in line.json()["message"]
    for bad in ({"amount": "-5"}, {"amount": "NaN"}, {"lines": [{"line": 1, "quantity": 0}]}):
        assert client.post(url, json=bad, headers=admin_headers()).status_code == 400, bad
    assert the_order(services, "o-1").refunds == ()  # nothing recorded
    made = client.post(
        url,
        json={"lines": [{"line": 1, "quantity": 1}], "refund_id": "api-1"},
        headers=admin_headers(),
    )
    assert made.status_code == 200, made.text
    assert made.json()["refunded"] == "40"
    again = client.post(
        url,
        json={"lines": [{"line": 1, "quantity": 1}], "refund_id": "api-1"},
        headers=admin_headers(),
    )
    assert again.status_code == 200 and again.json()["refunded"] == "40"  # the same refund
    rest = client.post(url, json={"amount": "80.01"}, headers=admin_headers())
    assert rest.status_code == 409 and "80.01 EUR" in rest.json()["message"]
    assert "80.00 EUR left" in rest.json()["message"]
    order = the_order(services, "o-1")
    assert order.refunded == Decimal(40) and order.lines[0].refunded_quantity == 1
    assert (
        client.post(
            "/api/commerce/orders/nope/refunds", json={"amount": "1"}, headers=admin_headers()
        ).status_code
        == 404
    )
    view = client.get("/api/commerce/orders/o-1", headers=admin_headers())
    assert view.status_code == 200 and view.json()["order"]["order_id"] == "o-1"
    with services.db.read() as conn:
        profile = customers.profile(conn, customer_id(services, "ana"))
    assert Decimal(profile.computed["revenue"]["EUR"]["total_spent"]) == 80


# ---- shipments ------------------------------------------------------------------------


def test_a_shipment_for_an_unknown_order_is_kept_and_attached_when_it_arrives(
    services: Services,
) -> None:
    append(
        services,
        make_event(
            event="Shipment Updated",
            at=START + HOUR,
            identity_required=False,
            source="carrier",
            properties={"shipment_id": "s-1", "order_id": "o-1", "status": "in_transit"},
        ),
    )
    kept = the_shipment(services, "s-1")
    assert (kept.status, kept.order_known, kept.customer_id) == ("in_transit", False, None)
    append(services, placed("o-1"))
    ana = customer_id(services, "ana")
    attached = the_shipment(services, "s-1")
    assert (attached.order_known, attached.customer_id) == (True, ana)
    with services.db.read() as conn:
        assert [s.shipment_id for s in commerce.shipments_of_order(conn, "o-1")] == ["s-1"]


def test_a_late_status_is_recorded_but_never_moves_a_shipment_backwards(
    services: Services,
) -> None:
    append(services, placed("o-1"))
    append(services, scan("s-1", "in_transit", START + HOUR, carrier="UPS"))
    append(
        services,
        scan(
            "s-1",
            "out_for_delivery",
            START + 2 * HOUR,
            estimated_delivery_from=iso(START + 3 * HOUR),
            estimated_delivery_to=iso(START + 5 * HOUR),
        ),
    )
    append(services, scan("s-1", "delivered", START + 4 * HOUR, location="Lyon"))
    append(services, scan("s-1", "in_transit", START + HOUR + 1))  # late
    append(services, scan("s-1", "in_transit", START + 9 * HOUR))  # and wrong
    shipment = the_shipment(services, "s-1")
    assert (shipment.status, shipment.status_at, shipment.delivered_at) == (
        "delivered",
        START + 4 * HOUR,
        START + 4 * HOUR,
    )
    assert (shipment.estimated_from, shipment.estimated_to) == (START + 3 * HOUR, START + 5 * HOUR)
    assert shipment.carrier == "UPS" and shipment.first_status == "in_transit"
    assert [(s.status, s.applied) for s in shipment.scans] == [
        ("in_transit", True),
        ("out_for_delivery", True),
        ("delivered", True),
        ("in_transit", False),
        ("in_transit", False),
    ]
    assert shipment.scans[2].location == "Lyon"


def test_several_parcels_per_order_and_each_mapping(
    shop: tuple[Services, TestClient[Any]],
) -> None:
    services, client = shop
    deliver(client, "orders/create", shopify.order(), webhook_id="wh-order")
    deliver(client, "fulfillments/create", shopify.fulfillment(), webhook_id="wh-f1")
    deliver(
        client,
        "fulfillments/update",
        shopify.fulfillment(shipment_status="attempted_delivery"),
        webhook_id="wh-f2",
    )
    deliver(
        client,
        "fulfillments/create",
        shopify.fulfillment(id=777, shipment_status="ready_for_pickup"),
        webhook_id="wh-f3",
    )
    deliver(
        client,
        "fulfillments/update",
        shopify.fulfillment(shipment_status="delayed"),
        webhook_id="wh-f4",
    )
    with services.db.read() as conn:
        parcels = commerce.shipments_of_order(conn, SHOPIFY_ORDER)
    by_id = {parcel.shipment_id: parcel for parcel in parcels}
    first, second = by_id[f"{SHOP}:123456"], by_id[f"{SHOP}:777"]
    assert (first.status, first.first_status) == ("failed_attempt", "info_received")
    assert first.tracking_number == "1Z2345" and first.carrier == "UPS"
    assert [(s.reported, s.status, s.applied) for s in first.scans][-1] == ("delayed", None, False)
    assert second.status == "available_for_pickup"
    assert all(p.customer_id == customer_id(services, "bob@example.com") for p in parcels)


# ---- the carrier webhook and the CSV import --------------------------------------------


def carrier_body(**overrides: Any) -> bytes:
    body = {
        "event_id": "evt-1",
        "shipment_id": "s-9",
        "order_id": "o-9",
        "status": "out_for_delivery",
        "occurred_at": iso(START + HOUR),
        "carrier": "Colissimo",
        "location": "Paris",
    }
    return json.dumps(body | overrides).encode()


def test_a_carrier_webhook_with_a_bad_signature_changes_nothing(
    shop: tuple[Services, TestClient[Any]],
) -> None:
    services, client = shop
    url = "/api/commerce/carrier-webhook"
    body = carrier_body()
    for signature in (None, "sha256=" + "0" * 64, sign("another secret", body)):
        headers = {"Content-Type": "application/json"}
        if signature:
            headers["X-Parcours-Signature"] = signature
        refused = client.post(url, content=body, headers=headers)
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["field"] == "X-Parcours-Signature"
        assert "does not match the body" in refused.json()["message"]
    with services.db.read() as conn:
        assert commerce.shipment(conn, "s-9") is None
    # Signed, but the body changed on the way: refused too.
    tampered = carrier_body(status="delivered")
    headers = {"X-Parcours-Signature": sign(CARRIER_SECRET, body)}
    assert client.post(url, content=tampered, headers=headers).status_code == 401
    unknown = carrier_body(status="teleported")
    answer = client.post(
        url, content=unknown, headers={"X-Parcours-Signature": sign(CARRIER_SECRET, unknown)}
    )
    assert answer.status_code == 400 and "teleported" in answer.json()["message"]
    good = client.post(
        url, content=body, headers={"X-Parcours-Signature": sign(CARRIER_SECRET, body)}
    )
    assert good.status_code == 200, good.text
    assert good.json() == {"success": True, "stored": 1, "duplicates": 0}
    again = client.post(
        url, content=body, headers={"X-Parcours-Signature": sign(CARRIER_SECRET, body)}
    )
    assert again.json()["duplicates"] == 1
    shipment = the_shipment(services, "s-9")
    assert (shipment.status, shipment.carrier, shipment.order_id) == (
        "out_for_delivery",
        "Colissimo",
        "o-9",
    )
    assert [s.source for s in shipment.scans] == ["carrier"]


def test_the_carrier_webhook_is_refused_while_no_secret_is_set(client: TestClient[Any]) -> None:
    body = carrier_body()
    answer = client.post(
        "/api/commerce/carrier-webhook",
        content=body,
        headers={"X-Parcours-Signature": sign(CARRIER_SECRET, body)},
    )
    assert answer.status_code == 503
    assert "PARCOURS_CARRIER_WEBHOOK_SECRET" in answer.json()["message"]


def test_a_csv_import_of_scans(services: Services) -> None:
    append(services, placed("o-1"))
    text = (
        "shipment_id,order_id,status,occurred_at,carrier,tracking_number\n"
        f"s-1,o-1,label_created,{iso(START + HOUR)},DHL,JD01\n"
        f"s-1,o-1,delivered,{iso(START + 2 * DAY)},DHL,JD01\n"
    )
    documents = shipments_from_csv(text)
    events = [
        parse_event(
            msgspec.json.encode(d), source="import", received_at=START, identity_required=False
        )
        for d in documents
    ]
    append(services, *events)
    append(services, *events)  # the same file again: stored once
    shipment = the_shipment(services, "s-1")
    assert (shipment.status, shipment.tracking_number, len(shipment.scans)) == (
        "delivered",
        "JD01",
        2,
    )
    assert shipment.customer_id == customer_id(services, "ana")
    with pytest.raises(CarrierError, match="line 4: status 'lost' is not one of"):
        shipments_from_csv(text + f"s-2,o-1,lost,{iso(START)},,\n")
    with pytest.raises(CarrierError, match="line 2: occurred_at must be an ISO 8601 time"):
        shipments_from_csv("shipment_id,order_id,status,occurred_at\ns-1,o-1,delivered,yesterday\n")
    with pytest.raises(CarrierError, match="the header lacks status"):
        shipments_from_csv("shipment_id,order_id,occurred_at\n")


# ---- returns ----------------------------------------------------------------------------


def returned(name: str, at: int, return_id: str = "ret-1") -> Event:
    return make_event(
        userId="ana",
        event=name,
        at=at,
        properties={"return_id": return_id, "order_id": "o-1", "reason": "too small"},
    )


def test_returns_move_forward_within_the_brands_window(services: Services) -> None:
    append(services, placed("o-1"))
    append(services, scan("s-1", "delivered", START + DAY))
    append(services, returned("Return Requested", START + 10 * DAY))
    append(services, returned("Return Received", START + 20 * DAY))
    append(services, returned("Return Label Sent", START + 12 * DAY))  # late: no step back
    append(services, returned("Return Requested", START + 20 * DAY, "ret-2"))
    with services.db.read() as conn:
        first, second = commerce.returns_of_order(conn, "o-1")
        window = commerce.return_window(conn, 0, "")
    assert (first.status, first.label_sent_at, first.received_at) == (
        "received",
        START + 12 * DAY,
        START + 20 * DAY,
    )
    assert (first.window_days, first.within_window, first.reason) == (14, True, "too small")
    assert (second.status, second.within_window) == ("requested", False)  # 19 days after
    assert (window.days, window.reason) == (14, "default")


def test_the_return_window_is_the_setting_else_the_sectors_custom(services: Services) -> None:
    with services.db.read() as conn:
        assert commerce.return_window(conn, 0, "fashion").days == 30
        assert commerce.return_window(conn, 0, "electronics").days == 14
        assert commerce.return_window(conn, 45, "fashion") == commerce.ReturnWindow(
            45, "setting", "fashion"
        )


# ---- merges and erasure -----------------------------------------------------------------


def test_a_merged_customers_orders_go_to_the_survivor_and_leave_with_an_erasure(
    services: Services,
) -> None:
    append(services, make_event("page", anonymousId="phone-1", name="Home"))
    append(
        services,
        make_event(
            anonymousId="phone-1",
            event="Order Completed",
            properties={"order_id": "o-1", "total": 30, "currency": "EUR"},
        ),
    )
    append(services, scan("s-1", "in_transit", START + HOUR, order_id="o-1"))
    append(services, make_event("identify", userId="ana", traits={"email": "ana@example.com"}))
    append(services, make_event("identify", userId="ana", anonymousId="phone-1"))
    survivor = customer_id(services, "ana")
    assert customer_id(services, "phone-1") == survivor
    with services.db.read() as conn:
        assert [o.order_id for o in commerce.orders_of(conn, survivor)] == ["o-1"]
        assert commerce.shipment(conn, "s-1").customer_id == survivor  # type: ignore[union-attr]
    erased = customers.erase(
        services.db, services.people, "ana", "FR", services.clock.now_ms(), "test"
    )
    assert erased is not None
    with services.db.read() as conn:
        assert commerce.order(conn, "o-1") is None
        assert commerce.shipment(conn, "s-1") is None
        assert commerce.orders_of(conn, survivor) == []


def test_a_merge_counts_the_survivors_order_traits_in_its_own_transaction(
    services: Services,
) -> None:
    """Commerce keeps the only copy of the orders: when two profiles merge, the
    survivor's order traits hold both profiles' orders as soon as the merge is stored,
    before any job runs (a segment or a journey reading them next sees both)."""
    append(services, placed("o-1", total=100))
    append(
        services,
        make_event(
            anonymousId="phone-1",
            event="Order Completed",
            properties={"order_id": "o-2", "total": 30, "currency": "EUR"},
        ),
    )
    append(services, make_event("identify", userId="ana", anonymousId="phone-1"))
    survivor = customer_id(services, "ana")
    with services.db.read() as conn:
        figures = customers.profile(conn, survivor).computed
        pending = conn.execute(
            text("SELECT count(*) FROM jobs WHERE kind = :k"), {"k": commerce.people.REFRESH_JOB}
        )
        assert pending.scalar_one() == 1  # commerce's job (the replenishments), not run yet
    assert figures["orders_count"] == 2
    assert figures["revenue"]["EUR"]["total_spent"] == "130.00"


def test_an_event_naming_only_an_order_is_its_customers_even_in_the_orders_group(
    services: Services,
) -> None:
    """A refund or a parcel that names an order and no person belongs to the customer
    who placed the order: one stored before (as commerce keeps it), or one placed earlier
    in the same group of events."""
    append(services, placed("o-1"))
    append(
        services,
        placed("o-2", user="bob"),
        make_event(
            event="Order Refunded",
            identity_required=False,
            properties={"order_id": "o-2", "refund_id": "r-2", "total": 20},
        ),
        make_event(
            event="Shipment Updated",
            identity_required=False,
            properties={"shipment_id": "s-1", "order_id": "o-1", "status": "in_transit"},
        ),
    )
    ana, bob = customer_id(services, "ana"), customer_id(services, "bob")
    with services.db.read() as conn:
        owners = dict(
            conn.execute(
                text(
                    "SELECT name, customer_id FROM events "
                    "WHERE name IN ('Order Refunded', 'Shipment Updated')"
                )
            ).all()
        )
    assert owners == {"Order Refunded": bob, "Shipment Updated": ana}
    assert the_order(services, "o-2").refunded == Decimal(20)
    assert the_shipment(services, "s-1").customer_id == ana


def test_what_is_known_of_new_orders_is_read_in_one_statement(services: Services) -> None:
    """The orders stored, and those a parcel, a refund or a cancellation kept before they
    came: one statement over the five tables (`select_in` with its list used five times),
    the same answer on SQLite and PostgreSQL."""
    from parcours.commerce import rows

    append(services, placed("o-1"))
    append(services, scan("s-2", "in_transit", START, order_id="o-2"))
    append(
        services,
        make_event(userId="ana", event="Order Cancelled", properties={"order_id": "o-3"}),
    )
    with services.db.read() as conn:
        found = rows.orders_stored_or_named(conn, ["o-1", "o-2", "o-3", "o-4"])
    assert found == ({"o-1"}, {"o-2", "o-3"})


def test_a_group_of_new_orders_is_written_as_one_by_one(services: Services) -> None:
    """The new orders of one append are written together: each with its lines, the one a
    shipment was kept for takes its customer, one cancelled earlier in the group is
    cancelled when it comes (the cancellation kept until then), one reported twice counts
    once."""
    append(
        services,
        make_event(
            event="Shipment Updated",
            at=START,
            identity_required=False,
            source="carrier",
            properties={"shipment_id": "s-9", "order_id": "g-2", "status": "in_transit"},
        ),
    )
    early_cancel = make_event(
        userId="bo", event="Order Cancelled", at=START + 1, properties={"order_id": "g-4"}
    )
    append(
        services,
        placed("g-1", at=START + 2),
        placed("g-2", user="bo", at=START + 3),
        early_cancel,
        placed("g-3", at=START + 4, total=80),
        placed("g-4", user="bo", at=START + 5),
        placed("g-3", at=START + 6, total=999),
    )
    ana, bo = customer_id(services, "ana"), customer_id(services, "bo")
    orders = {order_id: the_order(services, order_id) for order_id in ("g-1", "g-2", "g-3", "g-4")}
    assert {o: (x.customer_id, x.status) for o, x in orders.items()} == {
        "g-1": (ana, "placed"),
        "g-2": (bo, "placed"),
        "g-3": (ana, "placed"),
        "g-4": (bo, "cancelled"),
    }
    assert orders["g-3"].total == Decimal("80")  # counted once, as first reported
    assert [line.sku for line in orders["g-1"].lines] == ["TEE-M", "CAP"]
    assert the_shipment(services, "s-9").customer_id == bo


def test_migration_0043_keeps_the_orders_only_the_customers_copy_held(
    empty_database_url: str,
) -> None:
    """A database from before commerce holds orders in `customer_orders` only: they are
    copied into `commerce_orders` (an order commerce holds already is left as it is),
    then the old table goes."""
    db = Database(empty_database_url)
    try:
        command.upgrade(alembic_config(db), "0042")
        with db.write() as conn:
            conn.execute(
                text(
                    "INSERT INTO customer_orders (order_id, customer_id, currency, total, "
                    "refunded, status, occurred_at) VALUES "
                    "('old-1', 7, 'EUR', '20.00', '5', 'placed', 10), "
                    f"('{SHOP}:9', 7, 'EUR', '12', '0', 'cancelled', 11), "
                    "('both', 7, 'EUR', '1', '0', 'placed', 12)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO commerce_orders (order_id, customer_id, source, status, "
                    "currency, total, refunded, placed_at, updated_at) VALUES "
                    "('both', 7, 'import', 'placed', 'EUR', '99', '0', 12, 12)"
                )
            )
        command.upgrade(alembic_config(db), "0043")
        with db.read() as conn:
            rows = conn.execute(
                text(
                    "SELECT order_id, customer_id, source, status, total, refunded, placed_at, "
                    "cancelled_at FROM commerce_orders ORDER BY placed_at"
                )
            ).all()
            assert "customer_orders" not in inspect(conn).get_table_names()
        assert [tuple(row) for row in rows] == [
            ("old-1", 7, "site", "placed", "20.00", "5", 10, None),
            (f"{SHOP}:9", 7, "shopify", "cancelled", "12", "0", 11, 11),
            ("both", 7, "import", "placed", "99", "0", 12, None),
        ]
    finally:
        db.dispose()
