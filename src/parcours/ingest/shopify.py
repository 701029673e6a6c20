"""Shopify webhooks: HMAC verification and mapping of each topic onto canonical events.

Pure functions, no database: `shopify_http.py` calls them and appends the events.
Shopify's ids repeat across resources (a checkout and an order may share a number), so
every id is put under a key that names its kind (`order_id`, `checkout_id`, ...). One app
serves several shops, so the ids of what a shop records about people (customers, orders,
checkouts, refunds, fulfillments) are written `<shop>:<id>`: two shops' order 1001 are two
orders, and what came from a shop can be told apart from the rest (docs/security.md).
Catalogue ids (products, variants, inventory items) and the storefront's cart token keep
Shopify's form, so that they match what the storefront sends through the tracking API.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any


class ShopifyWebhookError(ValueError):
    """A webhook that cannot be mapped; the message names the topic and what is wrong."""


CUSTOMER_ID_KIND = "shopify_customer_id"


@dataclass(frozen=True)
class ShopifyMapping:
    events: list[dict[str, Any]]
    # customers/redact: the shop's customer (its shop-keyed id) and the email and phone
    # Shopify names, to find the shop's data on them; shop/redact: the whole shop's.
    erase_identities: list[tuple[str, str]] = field(default_factory=list)
    erase_shop: bool = False


def shop_key(shop: str, value: Any) -> str:
    """A shop's record id as Parcours keys it: `brand.myshopify.com:820982911946154508`."""
    return f"{shop}:{value}"


def verify_shopify_hmac(secret: str, raw_body: bytes, header_value: str | None) -> bool:
    """base64(HMAC-SHA256(secret, raw body)), compared in constant time."""
    if not header_value:
        return False
    try:
        given = base64.b64decode(header_value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    expected = hmac.new(secret.encode("utf-8"), raw_body, hashlib.sha256).digest()
    return hmac.compare_digest(given, expected)


# Shopify's shipment_status -> our status word and event.
SHIPMENT_STATUSES: dict[str, tuple[str, str]] = {
    "label_printed": ("label_created", "Shipment Label Created"),
    "label_purchased": ("label_created", "Shipment Label Created"),
    "confirmed": ("confirmed", "Shipment Confirmed"),
    "ready_for_pickup": ("ready_for_pickup", "Shipment Ready For Pickup"),
    "picked_up": ("picked_up", "Shipment Picked Up"),
    "in_transit": ("in_transit", "Shipment In Transit"),
    "out_for_delivery": ("out_for_delivery", "Shipment Out For Delivery"),
    "attempted_delivery": ("delivery_attempted", "Shipment Delivery Attempted"),
    "delayed": ("delayed", "Shipment Delayed"),
    "delivered": ("delivered", "Shipment Delivered"),
    "failure": ("failed", "Shipment Failed"),
}


class _Delivery:
    """One webhook delivery being mapped: numbers its events for stable messageIds."""

    def __init__(self, topic: str, webhook_id: str, shop: str) -> None:
        self.topic = topic
        self.webhook_id = webhook_id
        self.shop = shop
        self.events: list[dict[str, Any]] = []

    def add(
        self,
        kind: str,
        name: str | None,
        at: Any,
        *,
        properties: dict[str, Any] | None = None,
        traits: dict[str, Any] | None = None,
        person: dict[str, Any] | None = None,
    ) -> None:
        context: dict[str, Any] = {"source": "shopify", "topic": self.topic, "shop": self.shop}
        context.update(_identity_context(self.shop, person or {}))
        event: dict[str, Any] = {
            "type": kind,
            "messageId": f"shopify:{self.webhook_id}:{len(self.events)}",
            "context": context,
        }
        if name:
            event["event"] = name
        if isinstance(at, str) and at:
            event["timestamp"] = at
        if properties is not None:
            event["properties"] = _drop_none(properties)
        if traits is not None:
            event["traits"] = _drop_none(traits)
        self.events.append(event)

    def key(self, value: Any) -> str | None:
        """The shop-keyed form of one of the shop's record ids (None stays None)."""
        text = _text(value)
        return None if text is None else shop_key(self.shop, text)

    def require(self, payload: dict[str, Any], name: str) -> Any:
        value = payload.get(name)
        if value is None or value == "":
            raise ShopifyWebhookError(f"{self.topic}: the payload has no {name}")
        return value


def map_shopify_webhook(
    topic: str, payload: dict[str, Any], webhook_id: str, shop_domain: str
) -> ShopifyMapping:
    """The canonical events (Segment spec JSON) for one webhook delivery from a shop."""
    handler = _HANDLERS.get(topic)
    if handler is None:
        supported = ", ".join(sorted(_HANDLERS))
        raise ShopifyWebhookError(f"unsupported topic {topic!r}; supported: {supported}")
    delivery = _Delivery(topic, webhook_id, shop_domain)
    mapping = handler(delivery, payload)
    return mapping or ShopifyMapping(delivery.events)


# ---- topics -----------------------------------------------------------------------------


def _checkout(delivery: _Delivery, payload: dict[str, Any]) -> None:
    token = delivery.require(payload, "token")
    name = "Checkout Started" if delivery.topic == "checkouts/create" else "Checkout Updated"
    delivery.add(
        "track",
        name,
        payload.get("updated_at") or payload.get("created_at"),
        properties={
            "checkout_id": delivery.key(token),
            "cart_id": _text(payload.get("cart_token")),
            "total": _money(payload.get("total_price")),
            "subtotal": _money(payload.get("subtotal_price")),
            "tax": _money(payload.get("total_tax")),
            "discount": _money(payload.get("total_discounts")),
            "currency": payload.get("currency") or payload.get("presentment_currency"),
            "checkout_url": payload.get("abandoned_checkout_url"),
            "products": _products(payload.get("line_items")),
        },
        person=_person(payload),
    )


def _order_created(delivery: _Delivery, payload: dict[str, Any]) -> None:
    order_id = delivery.require(payload, "id")
    codes = [c.get("code") for c in payload.get("discount_codes") or [] if isinstance(c, dict)]
    shipping = sum(
        (_decimal(line.get("price")) or Decimal(0))
        for line in payload.get("shipping_lines") or []
        if isinstance(line, dict)
    )
    delivery.add(
        "track",
        "Order Completed",
        payload.get("processed_at") or payload.get("created_at"),
        properties={
            "order_id": delivery.key(order_id),
            "shopify_order_id": str(order_id),
            "order_number": payload.get("order_number"),
            "order_name": payload.get("name"),
            "checkout_id": delivery.key(payload.get("checkout_token")),
            "cart_id": _text(payload.get("cart_token")),
            "total": _money(payload.get("total_price")),
            "subtotal": _money(payload.get("subtotal_price")),
            "tax": _money(payload.get("total_tax")),
            "discount": _money(payload.get("total_discounts")),
            "shipping": float(shipping),
            "coupon": ",".join(c for c in codes if c) or None,
            "currency": payload.get("currency"),
            "products": _products(payload.get("line_items")),
        },
        person=_person(payload),
    )


def _order_paid(delivery: _Delivery, payload: dict[str, Any]) -> None:
    order_id = delivery.require(payload, "id")
    delivery.add(
        "track",
        "Order Paid",
        payload.get("updated_at") or payload.get("processed_at"),
        properties={
            "order_id": delivery.key(order_id),
            "shopify_order_id": str(order_id),
            "total": _money(payload.get("total_price")),
            "currency": payload.get("currency"),
        },
        person=_person(payload),
    )


def _order_cancelled(delivery: _Delivery, payload: dict[str, Any]) -> None:
    order_id = delivery.require(payload, "id")
    delivery.add(
        "track",
        "Order Cancelled",
        payload.get("cancelled_at") or payload.get("updated_at"),
        properties={
            "order_id": delivery.key(order_id),
            "shopify_order_id": str(order_id),
            "cancel_reason": payload.get("cancel_reason"),
            "total": _money(payload.get("total_price")),
            "currency": payload.get("currency"),
        },
        person=_person(payload),
    )


def _refund(delivery: _Delivery, payload: dict[str, Any]) -> None:
    order_id = delivery.require(payload, "order_id")
    transactions = [
        t
        for t in payload.get("transactions") or []
        if isinstance(t, dict) and t.get("kind") == "refund" and t.get("status") == "success"
    ]
    amount = sum((_decimal(t.get("amount")) or Decimal(0)) for t in transactions)
    currency = next((t.get("currency") for t in transactions if t.get("currency")), None)
    items = [i for i in payload.get("refund_line_items") or [] if isinstance(i, dict)]
    if not transactions:
        amount = sum((_decimal(i.get("subtotal")) or Decimal(0)) for i in items)
    products = _products(
        [i.get("line_item") for i in items if isinstance(i.get("line_item"), dict)]
    )
    delivery.add(
        "track",
        "Order Refunded",
        payload.get("created_at") or payload.get("processed_at"),
        properties={
            "order_id": delivery.key(order_id),
            "shopify_order_id": str(order_id),
            "refund_id": delivery.key(payload.get("id")),
            "total": float(amount),
            "currency": currency,
            "products": products,
        },
        person=_person(payload),
    )


def _fulfillment(delivery: _Delivery, payload: dict[str, Any]) -> None:
    fulfillment_id = delivery.key(delivery.require(payload, "id"))
    raw_status = payload.get("shipment_status")
    if raw_status is None:
        status, name = "created", "Shipment Created"
    else:
        status, name = SHIPMENT_STATUSES.get(str(raw_status), (str(raw_status), "Shipment Updated"))
    destination = _object(payload, "destination")
    person = {"email": payload.get("email"), "phone": destination.get("phone")}
    delivery.add(
        "track",
        name,
        payload.get("updated_at") or payload.get("created_at"),
        properties={
            "order_id": delivery.key(payload.get("order_id")),
            "shopify_order_id": _text(payload.get("order_id")),
            "fulfillment_id": fulfillment_id,
            "shipment_id": fulfillment_id,
            "status": status,
            "shopify_shipment_status": raw_status,
            "carrier": payload.get("tracking_company"),
            "tracking_number": payload.get("tracking_number"),
            "tracking_numbers": payload.get("tracking_numbers"),
            "tracking_url": payload.get("tracking_url"),
            "tracking_urls": payload.get("tracking_urls"),
            "estimated_delivery_at": payload.get("estimated_delivery_at"),
            "products": _products(payload.get("line_items")),
        },
        person=person,
    )


def _customer(delivery: _Delivery, payload: dict[str, Any]) -> None:
    delivery.require(payload, "id")
    address = _object(payload, "default_address")
    tags = payload.get("tags")
    delivery.add(
        "identify",
        None,
        payload.get("updated_at") or payload.get("created_at"),
        traits={
            "email": payload.get("email"),
            "phone": payload.get("phone"),
            "first_name": payload.get("first_name"),
            "last_name": payload.get("last_name"),
            "created_at": payload.get("created_at"),
            "state": payload.get("state"),
            "verified_email": payload.get("verified_email"),
            "note": payload.get("note"),
            "tags": [t.strip() for t in tags.split(",") if t.strip()]
            if isinstance(tags, str)
            else None,
            "address": _drop_none(
                {
                    "street": address.get("address1"),
                    "city": address.get("city"),
                    "postal_code": address.get("zip"),
                    "province": address.get("province"),
                    "country": address.get("country_code"),
                }
            )
            or None,
            "country": address.get("country_code"),
        },
        person=_person(payload, customer=payload),
    )
    at = payload.get("updated_at")
    person = _person(payload, customer=payload)
    _consent(delivery, "email", payload.get("email_marketing_consent"), person, at)
    _consent(delivery, "sms", payload.get("sms_marketing_consent"), person, at)
    if "email_marketing_consent" not in payload and isinstance(
        payload.get("accepts_marketing"), bool
    ):
        # Shops on API versions before 2022-04: the legacy field.
        state = "subscribed" if payload["accepts_marketing"] else "unsubscribed"
        _consent(
            delivery,
            "email",
            {
                "state": state,
                "opt_in_level": "legacy",
                "consent_updated_at": payload.get("accepts_marketing_updated_at"),
            },
            person,
            at,
        )


def _email_consent(delivery: _Delivery, payload: dict[str, Any]) -> None:
    person = {"customer_id": payload.get("customer_id"), "email": payload.get("email_address")}
    _consent(delivery, "email", delivery.require(payload, "email_marketing_consent"), person, None)


def _sms_consent(delivery: _Delivery, payload: dict[str, Any]) -> None:
    person = {
        "customer_id": payload.get("id") or payload.get("customer_id"),
        "phone": payload.get("phone"),
    }
    _consent(delivery, "sms", delivery.require(payload, "sms_marketing_consent"), person, None)


def _consent(
    delivery: _Delivery, channel: str, consent: Any, person: dict[str, Any], fallback_at: Any
) -> None:
    """subscribed -> granted, unsubscribed -> withdrawn; other states record nothing
    (not_subscribed means never asked, pending waits for a confirmation)."""
    if not isinstance(consent, dict):
        return
    status = {"subscribed": "granted", "unsubscribed": "withdrawn"}.get(str(consent.get("state")))
    if status is None:
        return
    delivery.add(
        "track",
        "Consent Updated",
        consent.get("consent_updated_at") or fallback_at,
        properties={
            "channel": channel,
            "purpose": "marketing",
            "status": status,
            "source": "shopify",
            "wording_version": f"shopify:{consent.get('opt_in_level') or 'unknown'}",
        },
        person=person,
    )


def _inventory(delivery: _Delivery, payload: dict[str, Any]) -> None:
    delivery.add(
        "track",
        "Inventory Updated",
        payload.get("updated_at"),
        properties={
            "inventory_item_id": _text(delivery.require(payload, "inventory_item_id")),
            "location_id": _text(payload.get("location_id")),
            "available": payload.get("available"),
        },
    )


def _product(delivery: _Delivery, payload: dict[str, Any]) -> None:
    """A product of the shop's catalog, with its variants and images: `Product Updated`
    (docs/commerce.md, "The catalog"). The webhook names no currency: a variant's price
    is kept when it has its `presentment_prices`."""
    product_id = _text(delivery.require(payload, "id"))
    images = [i for i in payload.get("images") or [] if isinstance(i, dict) and i.get("src")]
    by_id = {_text(i.get("id")): str(i["src"]) for i in images}
    main = _object(payload, "image").get("src") or (images[0]["src"] if images else None)
    variants = []
    for item in payload.get("variants") or []:
        if not isinstance(item, dict) or item.get("id") is None:
            continue
        prices = {}
        for entry in item.get("presentment_prices") or []:
            price = _object(entry, "price") if isinstance(entry, dict) else {}
            if price.get("currency_code") and price.get("amount") is not None:
                prices[str(price["currency_code"])] = _money(price["amount"])
        variants.append(
            _drop_none(
                {
                    "variant_id": _text(item.get("id")),
                    "sku": item.get("sku") or None,
                    "variant": item.get("title"),
                    "prices": prices or None,
                    "stock": item.get("inventory_quantity"),
                    "inventory_item_id": _text(item.get("inventory_item_id")),
                    "image_url": by_id.get(_text(item.get("image_id"))),
                }
            )
        )
    delivery.add(
        "track",
        "Product Updated",
        payload.get("updated_at") or payload.get("created_at"),
        properties={
            "product_id": product_id,
            "name": payload.get("title"),
            "brand": payload.get("vendor") or None,
            "category": payload.get("product_type") or None,
            "image_url": main,
            "images": [str(i["src"]) for i in images] or None,
            "variants": variants or None,
        },
    )


def _product_deleted(delivery: _Delivery, payload: dict[str, Any]) -> None:
    """A product deleted from the shop's catalog (the payload holds its id alone):
    `Product Deleted`, which withdraws it (docs/commerce.md, "The catalog")."""
    delivery.add(
        "track",
        "Product Deleted",
        None,  # the payload has no time: when it came
        properties={"product_id": _text(delivery.require(payload, "id"))},
    )


def _data_request(delivery: _Delivery, payload: dict[str, Any]) -> None:
    customer = _object(payload, "customer")
    request = _object(payload, "data_request")
    delivery.add(
        "track",
        "Customer Data Requested",
        None,
        properties={
            "data_request_id": _text(request.get("id")),
            "orders_requested": [
                shop_key(delivery.shop, o) for o in payload.get("orders_requested") or []
            ],
        },
        person=_person({}, customer=customer),
    )


def _redact_customer(delivery: _Delivery, payload: dict[str, Any]) -> ShopifyMapping:
    customer = _object(payload, "customer")
    identities: list[tuple[str, str]] = []
    if customer.get("id") is not None:
        identities.append((CUSTOMER_ID_KIND, shop_key(delivery.shop, customer["id"])))
    if customer.get("email"):
        identities.append(("email", str(customer["email"])))
    if customer.get("phone"):
        identities.append(("phone", str(customer["phone"])))
    if not identities:
        raise ShopifyWebhookError("customers/redact: the payload names no customer")
    return ShopifyMapping([], identities)


def _redact_shop(delivery: _Delivery, payload: dict[str, Any]) -> ShopifyMapping:
    return ShopifyMapping([], [], erase_shop=True)


_Handler = Callable[[_Delivery, dict[str, Any]], ShopifyMapping | None]
_HANDLERS: dict[str, _Handler] = {
    "checkouts/create": _checkout,
    "checkouts/update": _checkout,
    "orders/create": _order_created,
    "orders/paid": _order_paid,
    "orders/cancelled": _order_cancelled,
    "refunds/create": _refund,
    "fulfillments/create": _fulfillment,
    "fulfillments/update": _fulfillment,
    "customers/create": _customer,
    "customers/update": _customer,
    "customers/email_marketing_consent_update": _email_consent,
    "customers/marketing_consent_update": _sms_consent,
    "inventory_levels/update": _inventory,
    "products/create": _product,
    "products/update": _product,
    "products/delete": _product_deleted,
    "customers/data_request": _data_request,
    "customers/redact": _redact_customer,
    "shop/redact": _redact_shop,
}
SUPPORTED_TOPICS = frozenset(_HANDLERS)


# ---- helpers ----------------------------------------------------------------------------


def _person(payload: dict[str, Any], customer: dict[str, Any] | None = None) -> dict[str, Any]:
    """Who a resource is about: its customer (id, email, phone) and its own email/phone."""
    customer = customer if customer is not None else _object(payload, "customer")
    return {
        "customer_id": customer.get("id"),
        "email": payload.get("email") or customer.get("email"),
        "phone": payload.get("phone") or customer.get("phone"),
        "first_name": customer.get("first_name"),
        "last_name": customer.get("last_name"),
    }


def _identity_context(shop: str, person: dict[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = {}
    traits = _drop_none(
        {k: person.get(k) or None for k in ("email", "phone", "first_name", "last_name")}
    )
    if traits:
        context["traits"] = traits
    if person.get("customer_id") is not None:
        context["externalIds"] = [
            {
                "id": shop_key(shop, person["customer_id"]),
                "type": CUSTOMER_ID_KIND,
                "collection": "users",
                "encoding": "none",
            }
        ]
    return context


def _products(items: Any) -> list[dict[str, Any]]:
    products = []
    for item in items or []:
        if not isinstance(item, dict):
            continue
        products.append(
            _drop_none(
                {
                    "product_id": _text(item.get("product_id")),
                    "variant_id": _text(item.get("variant_id")),
                    "variant": item.get("variant_title"),
                    "sku": item.get("sku") or None,
                    "name": item.get("title") or item.get("name"),
                    "price": _money(item.get("price")),
                    "quantity": item.get("quantity"),
                }
            )
        )
    return products


def _object(document: dict[str, Any], key: str) -> dict[str, Any]:
    value = document.get(key)
    return value if isinstance(value, dict) else {}


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _money(value: Any) -> float | None:
    number = _decimal(value)
    return float(number) if number is not None else None


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _drop_none(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if v is not None}
