"""Shopify webhooks: verified, deduplicated, mapped onto events, profiles and consent, each
shop changing only what came from it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from litestar.testing import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text

from parcours.app import create_app
from parcours.customers import profiles
from parcours.ingest.shopify import (
    SUPPORTED_TOPICS,
    ShopifyWebhookError,
    map_shopify_webhook,
    verify_shopify_hmac,
)
from parcours.log import events
from parcours.runtime.db import Database, alembic_config
from parcours.runtime.logs import configure_logging, remove_logging
from parcours.runtime.settings import Settings, SettingsError, load_settings
from parcours.services import Services
from tests import shopify_payloads as shopify
from tests.conftest import POSTGRES_ENV, WRITE_KEY, admin_headers

SECRET = "shpss_test_secret"
SHOP = "demo.myshopify.com"
OTHER_SHOP = "second-store.myshopify.com"
BOB = shopify.CUSTOMER["id"]


@pytest.fixture
def shop(settings: Settings, clock: Any) -> Iterator[TestClient[Any]]:
    """The app serving two shops: SHOP and OTHER_SHOP."""
    configured = Settings(
        **{
            **settings.__dict__,
            "shopify_webhook_secret": SECRET,
            "shopify_shops": (SHOP, OTHER_SHOP),
        }
    )
    services = Services.open(configured, clock=clock)
    with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
        client.app.state.test_services = services  # type: ignore[attr-defined]
        yield client
    services.close()


def signature(body: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def deliver(
    client: TestClient[Any],
    topic: str,
    payload: dict[str, Any],
    webhook_id: str = "wh-1",
    secret: str = SECRET,
    shop: str | None = SHOP,
) -> Any:
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": signature(body, secret),
        "X-Shopify-Webhook-Id": webhook_id,
    }
    if shop is not None:
        headers["X-Shopify-Shop-Domain"] = shop
    return client.post("/webhooks/shopify", content=body, headers=headers)


def customer_view(client: TestClient[Any], ref: str) -> dict[str, Any]:
    response = client.get(f"/api/customers/{ref}", headers=admin_headers())
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def stored(client: TestClient[Any]) -> int:
    services: Services = client.app.state.test_services  # type: ignore[attr-defined]
    with services.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(events)).scalar_one())


# ---- the mapping, without a server -------------------------------------------------------


def test_hmac_with_the_wrong_secret_or_a_changed_body_is_refused() -> None:
    body = b'{"id": 1}'
    assert verify_shopify_hmac(SECRET, body, signature(body))
    assert not verify_shopify_hmac(SECRET, body, signature(body, "other"))
    assert not verify_shopify_hmac(SECRET, b'{"id": 2}', signature(body))
    assert not verify_shopify_hmac(SECRET, body, None)
    assert not verify_shopify_hmac(SECRET, body, "not base64 !")


def test_redelivered_webhook_maps_to_the_same_message_ids() -> None:
    first = map_shopify_webhook("customers/update", shopify.customer(), "wh-7", SHOP)
    again = map_shopify_webhook("customers/update", shopify.customer(), "wh-7", SHOP)
    assert [e["messageId"] for e in first.events] == ["shopify:wh-7:0", "shopify:wh-7:1"]
    assert first == again


def test_checkout_and_order_with_the_same_number_get_distinct_keys() -> None:
    checkout = map_shopify_webhook("checkouts/create", shopify.checkout(token="42"), "a", SHOP)
    placed = map_shopify_webhook("orders/create", shopify.order(id=42), "b", SHOP)
    assert checkout.events[0]["properties"]["checkout_id"] == f"{SHOP}:42"
    # The storefront's cart token, as the storefront's own tracking sends it.
    assert checkout.events[0]["properties"]["cart_id"] == "eeafa272cebfd4b22385bc4b645e762c"
    assert "order_id" not in checkout.events[0]["properties"]
    assert placed.events[0]["properties"]["order_id"] == f"{SHOP}:42"
    assert placed.events[0]["properties"]["shopify_order_id"] == "42"
    assert placed.events[0]["event"] == "Order Completed"


def test_order_properties_follow_the_ecommerce_spec() -> None:
    event = map_shopify_webhook("orders/create", shopify.order(), "x", SHOP).events[0]
    props = event["properties"]
    assert props["total"] == 403.0 and props["currency"] == "EUR"
    assert props["shipping"] == 10.0 and props["discount"] == 5.0 and props["coupon"] == "TENOFF"
    assert props["products"][0] == {
        "product_id": "788032119674292922",
        "variant_id": "642667041472713922",
        "variant": "Black",
        "sku": "SKU2006-001",
        "name": "Aviator sunglasses",
        "price": 199.0,
        "quantity": 1,
    }
    assert event["context"]["shop"] == SHOP
    assert props["order_id"] == f"{SHOP}:820982911946154508"
    assert props["checkout_id"] == f"{SHOP}:123123123"
    assert event["context"]["externalIds"][0] == {
        "id": f"{SHOP}:706405506930370084",
        "type": "shopify_customer_id",
        "collection": "users",
        "encoding": "none",
    }
    assert event["timestamp"] == "2026-11-20T10:30:00-05:00"


@pytest.mark.parametrize(
    ("status", "event", "word"),
    [
        (None, "Shipment Created", "created"),
        ("in_transit", "Shipment In Transit", "in_transit"),
        ("out_for_delivery", "Shipment Out For Delivery", "out_for_delivery"),
        ("attempted_delivery", "Shipment Delivery Attempted", "delivery_attempted"),
        ("delivered", "Shipment Delivered", "delivered"),
        ("failure", "Shipment Failed", "failed"),
        ("carrier_on_strike", "Shipment Updated", "carrier_on_strike"),
    ],
)
def test_fulfillment_status_becomes_our_shipment_event(
    status: str | None, event: str, word: str
) -> None:
    mapped = map_shopify_webhook(
        "fulfillments/update", shopify.fulfillment(shipment_status=status), "f", SHOP
    ).events[0]
    assert mapped["event"] == event
    assert mapped["properties"]["status"] == word
    assert mapped["properties"]["tracking_number"] == "1Z2345"
    assert mapped["context"]["traits"]["email"] == "bob@example.com"


def test_refund_sums_only_successful_refund_transactions() -> None:
    mapped = map_shopify_webhook("refunds/create", shopify.refund(), "r", SHOP).events[0]
    assert mapped["event"] == "Order Refunded"
    assert mapped["properties"]["total"] == 199.0
    assert mapped["properties"]["refund_id"] == f"{SHOP}:509562969"
    assert mapped["properties"]["order_id"] == f"{SHOP}:820982911946154508"


def test_unsubscribed_is_a_withdrawal_and_not_subscribed_records_nothing() -> None:
    mapped = map_shopify_webhook(
        "customers/update",
        shopify.customer(
            email_marketing_consent={
                "state": "unsubscribed",
                "opt_in_level": "single_opt_in",
                "consent_updated_at": "2026-11-21T00:00:00Z",
            }
        ),
        "c",
        SHOP,
    ).events
    consents = [e for e in mapped if e.get("event") == "Consent Updated"]
    assert [(c["properties"]["channel"], c["properties"]["status"]) for c in consents] == [
        ("email", "withdrawn")
    ]


def test_legacy_accepts_marketing_is_read_for_older_shops() -> None:
    legacy = shopify.customer(
        accepts_marketing=True, accepts_marketing_updated_at="2026-01-01T00:00:00Z"
    )
    del legacy["email_marketing_consent"]
    mapped = map_shopify_webhook("customers/update", legacy, "c", SHOP).events
    consent = next(e for e in mapped if e.get("event") == "Consent Updated")
    assert consent["properties"]["status"] == "granted"
    assert consent["timestamp"] == "2026-01-01T00:00:00Z"


def test_unknown_topic_and_missing_ids_are_named() -> None:
    with pytest.raises(ShopifyWebhookError, match="unsupported topic 'collections/delete'"):
        map_shopify_webhook("collections/delete", {}, "x", SHOP)
    with pytest.raises(ShopifyWebhookError, match="orders/create: the payload has no id"):
        map_shopify_webhook("orders/create", {"email": "a@b.c"}, "x", SHOP)
    assert "customers/redact" in SUPPORTED_TOPICS


# ---- through the endpoint ----------------------------------------------------------------


def test_a_forged_webhook_is_refused_and_stores_nothing(shop: TestClient[Any]) -> None:
    response = deliver(shop, "orders/create", shopify.order(), secret="attacker")
    assert response.status_code == 401
    assert response.json()["error"]["field"] == "X-Shopify-Hmac-Sha256"
    assert stored(shop) == 0


def test_a_redelivery_changes_nothing(shop: TestClient[Any]) -> None:
    assert deliver(shop, "orders/create", shopify.order()).json()["stored"] == 1
    again = deliver(shop, "orders/create", shopify.order())
    assert again.status_code == 200 and again.json()["duplicates"] == 1
    assert stored(shop) == 1


def test_orders_and_customers_build_one_profile(shop: TestClient[Any]) -> None:
    deliver(shop, "customers/create", shopify.customer(), "wh-c")
    deliver(shop, "checkouts/create", shopify.checkout(), "wh-k")
    deliver(shop, "orders/create", shopify.order(), "wh-o")
    deliver(shop, "refunds/create", shopify.refund(), "wh-r")
    profile = customer_view(shop, "bob@example.com")
    assert profile == customer_view(shop, f"shopify_customer_id:{SHOP}:706405506930370084")
    # With one shop holding that id, the bare id finds the customer too.
    assert profile == customer_view(shop, "shopify_customer_id:706405506930370084")
    assert profile["traits"]["tags"] == ["vip", "newsletter"]
    assert profile["computed"]["orders_count"] == 1
    assert Decimal(profile["computed"]["revenue"]["EUR"]["total_spent"]) == Decimal(204)
    assert profile["computed"]["country"] == "FR"
    consents = {(c["channel"], c["purpose"]): c["status"] for c in profile["consents"]}
    assert consents == {("email", "marketing"): "granted"}


def test_consent_topics_of_newer_api_versions(shop: TestClient[Any]) -> None:
    deliver(shop, "customers/create", shopify.customer(), "wh-c")
    deliver(
        shop,
        "customers/marketing_consent_update",
        {
            "id": 706405506930370084,
            "phone": "+33612345678",
            "sms_marketing_consent": {
                "state": "subscribed",
                "opt_in_level": "single_opt_in",
                "consent_updated_at": "2026-11-23T10:00:00Z",
                "consent_collected_from": "SHOPIFY",
            },
        },
        "wh-s",
    )
    deliver(
        shop,
        "customers/email_marketing_consent_update",
        {
            "customer_id": 706405506930370084,
            "email_address": "bob@example.com",
            "email_marketing_consent": {
                "state": "unsubscribed",
                "opt_in_level": "single_opt_in",
                "consent_updated_at": "2026-11-23T11:00:00Z",
            },
        },
        "wh-e",
    )
    consents = {
        (c["channel"], c["purpose"]): c["status"]
        for c in customer_view(shop, "bob@example.com")["consents"]
    }
    assert consents == {("email", "marketing"): "withdrawn", ("sms", "marketing"): "granted"}


def test_customers_redact_erases_the_person(shop: TestClient[Any]) -> None:
    deliver(shop, "orders/create", shopify.order(), "wh-o")
    response = deliver(
        shop,
        "customers/redact",
        {
            "shop_id": 954889,
            "shop_domain": "demo.myshopify.com",
            "customer": {
                "id": 706405506930370084,
                "email": "bob@example.com",
                "phone": "+33612345678",
            },
            "orders_to_redact": [820982911946154508],
        },
        "wh-red",
    )
    assert response.json()["erased"] == 1 and response.json()["partly_erased"] == 0
    assert shop.get("/api/customers/bob@example.com", headers=admin_headers()).status_code == 404
    # A redelivery finds nobody left and still succeeds.
    again = {"shop_domain": SHOP, "customer": {"id": 706405506930370084}}
    assert deliver(shop, "customers/redact", again, "wh-red").json()["erased"] == 0


def test_webhooks_need_a_configured_secret(client: TestClient[Any]) -> None:
    response = client.post(
        "/webhooks/shopify", content=b"{}", headers={"X-Shopify-Topic": "orders/create"}
    )
    assert response.status_code == 503
    assert "PARCOURS_SHOPIFY_WEBHOOK_SECRET" in response.json()["error"]["message"]


def test_webhooks_need_the_shops_they_may_come_from(settings: Settings, clock: Any) -> None:
    configured = Settings(**{**settings.__dict__, "shopify_webhook_secret": SECRET})
    services = Services.open(configured, clock=clock)
    try:
        with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
            client.app.state.test_services = services  # type: ignore[attr-defined]
            response = deliver(client, "orders/create", shopify.order())
            assert response.status_code == 503
            assert "shopify_shops" in response.json()["error"]["message"]
            assert stored(client) == 0
    finally:
        services.close()


# ---- each shop changes only what came from it -------------------------------------------


def erase_response(client: TestClient[Any], shop: str, webhook_id: str = "wh-sr") -> Any:
    response = deliver(
        client,
        "shop/redact",
        {"shop_id": 954889, "shop_domain": shop},
        webhook_id,
        shop=shop,
    )
    assert response.status_code == 200, response.text
    return response.json()


def identities_of(profile: dict[str, Any]) -> set[tuple[str, str]]:
    return {(i["kind"], i["value"]) for i in profile["identities"]}


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (None, "X-Shopify-Shop-Domain is required"),
        ("", "X-Shopify-Shop-Domain is required"),
        ("shop.example.com", "X-Shopify-Shop-Domain must be a shop's myshopify.com domain"),
        ("a b.myshopify.com", "X-Shopify-Shop-Domain must be a shop's myshopify.com domain"),
    ],
)
def test_a_delivery_without_a_valid_shop_domain_is_refused_naming_the_header(
    shop: TestClient[Any], header: str | None, problem: str
) -> None:
    response = deliver(shop, "orders/create", shopify.order(), shop=header)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "X-Shopify-Shop-Domain"
    assert problem in response.json()["error"]["message"]
    assert stored(shop) == 0


def test_a_shop_that_is_not_configured_changes_nothing_and_is_answered_200(
    shop: TestClient[Any],
) -> None:
    stranger = "dev-store-of-someone.myshopify.com"
    deliver(shop, "customers/create", shopify.customer(), "wh-c")
    deliver(shop, "orders/create", shopify.order(), "wh-o")
    before = customer_view(shop, "bob@example.com")
    ignored = REGISTRY.get_sample_value(
        "parcours_events_rejected_total", {"source": "shopify", "reason": "unknown_shop"}
    )
    stream = io.StringIO()
    handler = configure_logging("info", "json", [], stream)
    try:
        answers = [
            deliver(shop, "orders/create", shopify.order(id=5), "wh-s1", shop=stranger),
            deliver(shop, "customers/redact", {"customer": {"id": BOB}}, "wh-s2", shop=stranger),
            deliver(shop, "shop/redact", {"shop_domain": stranger}, "wh-s3", shop=stranger),
        ]
    finally:
        remove_logging(handler)
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[0].json() == {
        "success": True,
        "topic": "orders/create",
        "ignored": f"{stranger} is not in shopify_shops",
    }
    assert stored(shop) == 3  # the identify, the consent, the order: nothing since
    assert customer_view(shop, "bob@example.com") == before
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    mine = [r for r in records if r["logger"] == "parcours.ingest.shopify_http"]
    assert [(r["level"], r["shop"], r["topic"]) for r in mine] == [
        ("warning", stranger, "orders/create"),
        ("warning", stranger, "customers/redact"),
        ("warning", stranger, "shop/redact"),
    ]
    after = REGISTRY.get_sample_value(
        "parcours_events_rejected_total", {"source": "shopify", "reason": "unknown_shop"}
    )
    assert (after or 0) - (ignored or 0) == 3


def test_shop_redact_from_another_shop_leaves_the_first_shops_customers(
    shop: TestClient[Any],
) -> None:
    deliver(shop, "customers/create", shopify.customer(), "wh-c")
    deliver(shop, "orders/create", shopify.order(), "wh-o")
    before = customer_view(shop, "bob@example.com")
    assert erase_response(shop, OTHER_SHOP) == {
        "success": True,
        "topic": "shop/redact",
        "erased": 0,
        "partly_erased": 0,
    }
    assert customer_view(shop, "bob@example.com") == before
    assert before["computed"]["orders_count"] == 1
    # The shop's own redaction erases its customer, who was known through it alone.
    assert erase_response(shop, SHOP)["erased"] == 1
    assert shop.get("/api/customers/bob@example.com", headers=admin_headers()).status_code == 404
    # Shopify delivering it again finds nobody left.
    assert erase_response(shop, SHOP)["erased"] == 0


def test_two_shops_same_numeric_ids_stay_distinct(shop: TestClient[Any]) -> None:
    for number, (where, email) in enumerate(
        [(SHOP, "ana@example.com"), (OTHER_SHOP, "ben@example.com")]
    ):
        person = {"id": 42, "email": email, "first_name": email[:3], "phone": None}
        deliver(shop, "customers/create", shopify.customer(**person), f"wh-c{number}", shop=where)
        deliver(
            shop,
            "orders/create",
            shopify.order(id=1001, email=email, customer=person, total_price="10.00"),
            f"wh-o{number}",
            shop=where,
        )
    ana = customer_view(shop, "ana@example.com")
    ben = customer_view(shop, "ben@example.com")
    assert ana["id"] != ben["id"]
    assert ana == customer_view(shop, f"shopify_customer_id:{SHOP}:42")
    assert ben == customer_view(shop, f"shopify_customer_id:{OTHER_SHOP}:42")
    assert ("shopify_customer_id", f"{SHOP}:42") in identities_of(ana)
    assert ("shopify_customer_id", f"{OTHER_SHOP}:42") in identities_of(ben)
    for profile in (ana, ben):
        assert profile["computed"]["orders_count"] == 1
        assert Decimal(profile["computed"]["revenue"]["EUR"]["total_spent"]) == Decimal(10)
    # The bare id is held in two shops: the answer names both ways to write it.
    response = shop.get("/api/customers/shopify_customer_id:42", headers=admin_headers())
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert f"shopify_customer_id:{SHOP}:42" in message
    assert f"shopify_customer_id:{OTHER_SHOP}:42" in message


def test_customers_redact_acts_only_on_its_own_shops_customer(shop: TestClient[Any]) -> None:
    deliver(shop, "customers/create", shopify.customer(), "wh-c")
    deliver(shop, "orders/create", shopify.order(), "wh-o")
    before = customer_view(shop, "bob@example.com")
    # Another shop names a customer with the same id, email and phone: it never told us
    # anything about Bob, so Bob stays whole.
    response = deliver(
        shop,
        "customers/redact",
        {
            "shop_domain": OTHER_SHOP,
            "customer": {"id": BOB, "email": "bob@example.com", "phone": "+33612345678"},
            "orders_to_redact": [820982911946154508],
        },
        "wh-red",
        shop=OTHER_SHOP,
    )
    assert response.json()["erased"] == 0 and response.json()["partly_erased"] == 0
    assert customer_view(shop, "bob@example.com") == before


def test_shop_redact_keeps_a_person_known_elsewhere_and_takes_away_the_shops_part(
    shop: TestClient[Any],
) -> None:
    # Bob is known to the brand's own site, to SHOP and to OTHER_SHOP.
    site = shop.post(
        "/v1/identify",
        json={
            "userId": "u-bob",
            "traits": {"email": "bob@example.com", "first_name": "Robert"},
            "timestamp": "2026-09-01T10:00:00Z",
        },
        headers={"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()},
    )
    assert site.status_code == 200, site.text
    unsubscribed_sms = {
        "state": "unsubscribed",
        "opt_in_level": "single_opt_in",
        "consent_updated_at": "2026-11-20T11:00:00-05:00",
    }
    deliver(
        shop, "customers/create", shopify.customer(sms_marketing_consent=unsubscribed_sms), "wh-c"
    )
    deliver(shop, "orders/create", shopify.order(), "wh-o")
    deliver(
        shop,
        "orders/create",
        shopify.order(id=77, total_price="30.00", customer={"id": BOB, "email": "bob@example.com"}),
        "wh-o2",
        shop=OTHER_SHOP,
    )
    # Alice bought once from SHOP and is known nowhere else.
    alice = {"id": 9, "email": "alice@example.com", "phone": None, "first_name": "Alice"}
    deliver(shop, "orders/create", shopify.order(id=5, email=alice["email"], customer=alice), "a")
    before = customer_view(shop, "u-bob")
    assert before["traits"]["first_name"] == "Bob"  # SHOP's, newer than the site's
    assert before["computed"]["orders_count"] == 2
    assert ("phone", "+33612345678") in identities_of(before)

    assert erase_response(shop, SHOP) == {
        "success": True,
        "topic": "shop/redact",
        "erased": 1,
        "partly_erased": 1,
    }
    assert shop.get("/api/customers/alice@example.com", headers=admin_headers()).status_code == 404
    after = customer_view(shop, "u-bob")
    assert after["id"] == before["id"]
    # What came from SHOP is gone: its id, the phone only it knew, its order, its traits,
    # the email consent it granted. The SMS withdrawal stays: it protects the person.
    assert identities_of(after) == {
        ("user_id", "u-bob"),
        ("email", "bob@example.com"),
        ("shopify_customer_id", f"{OTHER_SHOP}:{BOB}"),
    }
    assert after["traits"]["first_name"] == "Robert"
    assert "tags" not in after["traits"] and "address" not in after["traits"]
    assert after["computed"]["orders_count"] == 1
    assert Decimal(after["computed"]["revenue"]["EUR"]["total_spent"]) == Decimal(30)
    assert {(c["channel"], c["status"]) for c in after["consents"]} == {("sms", "withdrawn")}
    timeline = shop.get(
        f"/api/customers/{after['id']}/events?limit=100", headers=admin_headers()
    ).json()["events"]
    assert not [e for e in timeline if e.get("context", {}).get("shop") == SHOP]
    [audit] = [e for e in timeline if e.get("event") == "Customer Partly Erased"]
    assert audit["properties"]["origin"] == f"shopify {SHOP}"
    assert audit["properties"]["requested_by"] == f"shopify shop/redact {SHOP}"
    assert audit["properties"]["identities_deleted"] == 2
    assert audit["properties"]["orders_deleted"] == 1
    assert audit["properties"]["consents_deleted"] == 1
    # The console's search finds Bob by the name the site gave; the words of SHOP's are
    # kept no more, nor Alice's.
    services = shop.app.state.test_services  # type: ignore[attr-defined]
    with services.db.read() as conn:
        # Commerce keeps the only copy of the orders: SHOP's went with its lines (Bob's
        # by the part taken away, Alice's with her); the other shop's order stays.
        kept = conn.execute(text("SELECT order_id FROM commerce_orders")).scalars().all()
        lines = conn.execute(text("SELECT DISTINCT order_id FROM commerce_order_lines"))
        assert kept == lines.scalars().all() == [f"{OTHER_SHOP}:77"]
        assert [m.name for m in profiles.search(conn, "rob", "FR")] == ["Robert"]
        assert profiles.search(conn, "alice", "FR") == []
        words = conn.execute(text("SELECT word FROM customer_name_words")).scalars().all()
    assert words == ["robert"]
    # The other shop's view is whole, and the redaction again changes nothing.
    assert customer_view(shop, f"shopify_customer_id:{OTHER_SHOP}:{BOB}") == after
    assert erase_response(shop, SHOP, "wh-sr2")["partly_erased"] == 0
    assert customer_view(shop, "u-bob") == after


def write_key_call(client: TestClient[Any], kind: str, body: dict[str, Any]) -> None:
    auth = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
    answer = client.post(f"/v1/{kind}", json=body, headers=auth)
    assert answer.status_code == 200, answer.text


def test_customers_redact_is_not_drawn_away_by_a_decoy_with_the_same_texts(
    shop: TestClient[Any],
) -> None:
    """With the public write key, decoy profiles whose userId is the shop's id for Bob, or
    his email: the redaction still finds Bob by exactly those identities."""
    deliver(shop, "customers/create", shopify.customer(), "wh-c")
    deliver(shop, "orders/create", shopify.order(), "wh-o")
    bob = customer_view(shop, f"shopify_customer_id:{SHOP}:{BOB}")
    decoys = [f"shopify_customer_id:{SHOP}:{BOB}", "bob@example.com", "+33612345678"]
    for decoy in decoys:
        write_key_call(shop, "identify", {"userId": decoy, "traits": {"first_name": "Decoy"}})
    response = deliver(
        shop,
        "customers/redact",
        {
            "shop_domain": SHOP,
            "customer": {"id": BOB, "email": "bob@example.com", "phone": "+33612345678"},
            "orders_to_redact": [820982911946154508],
        },
        "wh-red",
    )
    assert response.json() == {
        "success": True,
        "topic": "customers/redact",
        "erased": 1,
        "partly_erased": 0,
    }
    gone = shop.get(f"/api/customers/{bob['id']}", headers=admin_headers()).json()
    assert gone["erased"] is True and gone["identities"] == []
    for decoy in decoys:  # untouched: they hold nothing the shop gave
        kept = customer_view(shop, f"user_id:{decoy}")
        assert kept["traits"] == {"first_name": "Decoy"} and not kept["erased"]


@pytest.fixture
def messaging_shop(settings: Settings, clock: Any) -> Iterator[TestClient[Any]]:
    """The app serving SHOP, whose messages always go out (the sandbox, never failing)."""
    from tests.test_channels import CERTAIN

    configured = settings.with_overrides(
        shopify_webhook_secret=SECRET, shopify_shops=(SHOP,), channels={"sandbox": CERTAIN}
    )
    services = Services.open(configured, clock=clock)
    with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
        client.app.state.test_services = services  # type: ignore[attr-defined]
        yield client
    services.close()


def test_shop_redact_erases_a_shop_only_customer_parcours_wrote_to(
    messaging_shop: TestClient[Any],
) -> None:
    """Parcours' own record of the messages it sent (their statuses, source "channel") is
    no sign that the person is known elsewhere."""
    from tests.test_channels import journey, publish

    client = messaging_shop
    services: Services = client.app.state.test_services  # type: ignore[attr-defined]
    send = "{channel: email, template: t, purpose: transactional}"
    publish(services, journey(send, entry="Order Completed", goal="Never"))
    deliver(client, "customers/create", shopify.customer(), "wh-c")
    deliver(client, "orders/create", shopify.order(), "wh-o")
    services.worker.run_due()
    bob = customer_view(client, "bob@example.com")
    timeline = client.get(
        f"/api/customers/{bob['id']}/events?limit=100", headers=admin_headers()
    ).json()["events"]
    assert {(e["source"], e.get("event")) for e in timeline} >= {
        ("shopify", "Order Completed"),
        ("channel", "Message Sent"),
    }
    assert erase_response(client, SHOP) == {
        "success": True,
        "topic": "shop/redact",
        "erased": 1,
        "partly_erased": 0,
    }
    assert client.get("/api/customers/bob@example.com", headers=admin_headers()).status_code == 404


@pytest.mark.parametrize(
    ("topic", "body", "message"),
    [
        (
            "customers/redact",
            {"shop_domain": OTHER_SHOP, "customer": {"id": BOB}},
            f"customers/redact: X-Shopify-Shop-Domain is {SHOP} but the body's shop_domain "
            f"is '{OTHER_SHOP}': a GDPR webhook acts only on the shop its signed body names",
        ),
        (
            "shop/redact",
            {"shop_domain": OTHER_SHOP},
            f"shop/redact: X-Shopify-Shop-Domain is {SHOP} but the body's shop_domain is "
            f"'{OTHER_SHOP}': a GDPR webhook acts only on the shop its signed body names",
        ),
        (
            "customers/data_request",
            {"customer": {"id": BOB}, "data_request": {"id": 9}},
            "customers/data_request: the body's shop_domain is required, and must be the "
            f"shop of X-Shopify-Shop-Domain ({SHOP})",
        ),
    ],
)
def test_a_gdpr_webhook_acts_only_when_its_header_and_signed_body_name_one_shop(
    shop: TestClient[Any], topic: str, body: dict[str, Any], message: str
) -> None:
    deliver(shop, "customers/create", shopify.customer(), "wh-c")
    deliver(shop, "orders/create", shopify.order(), "wh-o")
    before, count = customer_view(shop, "bob@example.com"), stored(shop)
    response = deliver(shop, topic, body, "wh-gdpr", shop=SHOP)
    assert response.status_code == 400
    assert response.json()["error"] == {"field": "shop_domain", "message": message}
    assert customer_view(shop, "bob@example.com") == before
    assert stored(shop) == count
    # The same shop in both, written in capitals in the body: carried out.
    same = deliver(shop, topic, {**body, "shop_domain": SHOP.upper()}, "wh-gdpr2", shop=SHOP)
    assert same.status_code == 200


# ---- settings ---------------------------------------------------------------------------


def test_the_shops_are_read_from_the_environment_and_the_file(tmp_path: Path) -> None:
    settings = load_settings({"PARCOURS_SHOPIFY_SHOPS": " Brand.myshopify.com, b2.myshopify.com"})
    assert settings.shopify_shops == ("brand.myshopify.com", "b2.myshopify.com")
    config = tmp_path / "parcours.toml"
    config.write_text('shopify_shops = ["brand.myshopify.com"]\n')
    assert load_settings({}, config_file=config).shopify_shops == ("brand.myshopify.com",)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("brand.com", "shopify_shops: 'brand.com' is not a shop's myshopify.com domain"),
        ("https://brand.myshopify.com", "is not a shop's myshopify.com domain"),
        ("a.myshopify.com,a.myshopify.com", "shopify_shops lists a.myshopify.com twice"),
    ],
)
def test_a_wrong_shop_is_refused_at_start(value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings({"PARCOURS_SHOPIFY_SHOPS": value})


# ---- data stored before ids were keyed by shop ------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no schema yet, to run the migrations one by one."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrating.db'}"
        return
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV} (CI sets it; see README)")
    name = f"parcours_migrate_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{admin_url.rpartition('/')[0]}/{name}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migration_0015_keys_stored_shopify_ids_by_the_shop_their_webhooks_named(
    empty_database_url: str,
) -> None:
    db = Database(empty_database_url)
    try:
        command.upgrade(alembic_config(db), "0014")
        old_order = {
            "type": "track",
            "event": "Order Completed",
            "messageId": "shopify:wh-1:0",
            "properties": {"order_id": "1001", "total": 20.0, "currency": "EUR"},
            "context": {
                "source": "shopify",
                "shop": SHOP,
                "externalIds": [{"id": "42", "type": "shopify_customer_id"}],
            },
        }
        with db.write() as conn:
            conn.execute(
                text("INSERT INTO customers (id, created_at, updated_at) VALUES (1, 0, 0)")
            )
            conn.execute(
                text(
                    "INSERT INTO identities (kind, value, customer_id, created_at) VALUES "
                    "('shopify_customer_id', '42', 1, 5), "
                    "('shopify_customer_id', '7', 1, 5), ('email', 'bob@example.com', 1, 5)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO events (message_id, customer_id, type, name, occurred_at, "
                    "received_at, source, payload) VALUES ('shopify:wh-1:0', 1, 'track', "
                    "'Order Completed', 10, 10, 'shopify', :p)"
                ),
                {"p": json.dumps(old_order)},
            )
            conn.execute(
                text(
                    "INSERT INTO customer_orders (order_id, customer_id, currency, total, "
                    "refunded, status, occurred_at) VALUES "
                    "('1001', 1, 'EUR', '20.0', '0', 'placed', 10), "
                    "('site-9', 1, 'EUR', '5', '0', 'placed', 11)"
                )
            )
        command.upgrade(alembic_config(db), "0015")
        with db.read() as conn:
            held = set(conn.execute(text("SELECT kind, value, customer_id FROM identities")))
            orders = set(conn.execute(text("SELECT order_id FROM customer_orders")).scalars())
        assert held == {
            ("shopify_customer_id", f"{SHOP}:42", 1),
            ("shopify_customer_id", "7", 1),  # no stored event names its shop: as it was
            ("email", "bob@example.com", 1),
        }
        assert orders == {f"{SHOP}:1001", "site-9"}
    finally:
        db.dispose()
