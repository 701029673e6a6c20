"""Shopify webhooks: verified, deduplicated, mapped onto events, profiles and consent."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import func, select

from parcours.app import create_app
from parcours.ingest.shopify import (
    SUPPORTED_TOPICS,
    ShopifyWebhookError,
    map_shopify_webhook,
    verify_shopify_hmac,
)
from parcours.ingest.tables import events
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests import shopify_payloads as shopify
from tests.conftest import admin_headers

SECRET = "shpss_test_secret"


@pytest.fixture
def shop(settings: Settings, clock: Any) -> Iterator[TestClient[Any]]:
    configured = Settings(**{**settings.__dict__, "shopify_webhook_secret": SECRET})
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
) -> Any:
    body = json.dumps(payload).encode()
    return client.post(
        "/webhooks/shopify",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Shopify-Topic": topic,
            "X-Shopify-Hmac-Sha256": signature(body, secret),
            "X-Shopify-Webhook-Id": webhook_id,
            "X-Shopify-Shop-Domain": "demo.myshopify.com",
        },
    )


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
    first = map_shopify_webhook("customers/update", shopify.customer(), "wh-7")
    again = map_shopify_webhook("customers/update", shopify.customer(), "wh-7")
    assert [e["messageId"] for e in first.events] == ["shopify:wh-7:0", "shopify:wh-7:1"]
    assert first == again


def test_checkout_and_order_with_the_same_number_get_distinct_keys() -> None:
    checkout = map_shopify_webhook("checkouts/create", shopify.checkout(token="42"), "a")
    placed = map_shopify_webhook("orders/create", shopify.order(id=42), "b")
    assert checkout.events[0]["properties"]["checkout_id"] == "42"
    assert "order_id" not in checkout.events[0]["properties"]
    assert placed.events[0]["properties"]["order_id"] == "42"
    assert placed.events[0]["event"] == "Order Completed"


def test_order_properties_follow_the_ecommerce_spec() -> None:
    event = map_shopify_webhook("orders/create", shopify.order(), "x").events[0]
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
    assert event["context"]["externalIds"][0] == {
        "id": "706405506930370084",
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
        "fulfillments/update", shopify.fulfillment(shipment_status=status), "f"
    ).events[0]
    assert mapped["event"] == event
    assert mapped["properties"]["status"] == word
    assert mapped["properties"]["tracking_number"] == "1Z2345"
    assert mapped["context"]["traits"]["email"] == "bob@example.com"


def test_refund_sums_only_successful_refund_transactions() -> None:
    mapped = map_shopify_webhook("refunds/create", shopify.refund(), "r").events[0]
    assert mapped["event"] == "Order Refunded"
    assert mapped["properties"]["total"] == 199.0
    assert mapped["properties"]["refund_id"] == "509562969"


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
    mapped = map_shopify_webhook("customers/update", legacy, "c").events
    consent = next(e for e in mapped if e.get("event") == "Consent Updated")
    assert consent["properties"]["status"] == "granted"
    assert consent["timestamp"] == "2026-01-01T00:00:00Z"


def test_unknown_topic_and_missing_ids_are_named() -> None:
    with pytest.raises(ShopifyWebhookError, match="unsupported topic 'products/create'"):
        map_shopify_webhook("products/create", {}, "x")
    with pytest.raises(ShopifyWebhookError, match="orders/create: the payload has no id"):
        map_shopify_webhook("orders/create", {"email": "a@b.c"}, "x")
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
    assert profile == customer_view(shop, "shopify_customer_id:706405506930370084")
    assert profile["traits"]["tags"] == ["vip", "newsletter"]
    assert profile["computed"]["orders_count"] == 1
    assert profile["computed"]["revenue"]["EUR"]["total_spent"] == "204.0"
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
    assert response.json()["erased"] == 1
    assert shop.get("/api/customers/bob@example.com", headers=admin_headers()).status_code == 404
    # A redelivery finds nobody left and still succeeds.
    assert (
        deliver(
            shop, "customers/redact", {"customer": {"id": 706405506930370084}}, "wh-red"
        ).json()["erased"]
        == 0
    )


def test_webhooks_need_a_configured_secret(client: TestClient[Any]) -> None:
    response = client.post(
        "/webhooks/shopify", content=b"{}", headers={"X-Shopify-Topic": "orders/create"}
    )
    assert response.status_code == 503
    assert "PARCOURS_SHOPIFY_WEBHOOK_SECRET" in response.json()["error"]["message"]
