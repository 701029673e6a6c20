"""Webhook payloads shaped as in Shopify's documentation (trimmed to what matters here)."""

from __future__ import annotations

from typing import Any

CUSTOMER = {
    "id": 706405506930370084,
    "email": "bob@example.com",
    "first_name": "Bob",
    "last_name": "Biller",
    "phone": "+33612345678",
}


def line_item(**overrides: Any) -> dict[str, Any]:
    item = {
        "id": 487817672276298554,
        "product_id": 788032119674292922,
        "variant_id": 642667041472713922,
        "title": "Aviator sunglasses",
        "variant_title": "Black",
        "sku": "SKU2006-001",
        "price": "199.00",
        "quantity": 1,
    }
    return item | overrides


def checkout(**overrides: Any) -> dict[str, Any]:
    document = {
        "id": 981820079255243537,
        "token": "123123123",
        "cart_token": "eeafa272cebfd4b22385bc4b645e762c",
        "email": "bob@example.com",
        "created_at": "2026-11-20T10:00:00-05:00",
        "updated_at": "2026-11-20T10:05:00-05:00",
        "currency": "EUR",
        "subtotal_price": "398.00",
        "total_price": "409.94",
        "total_tax": "11.94",
        "total_discounts": "0.00",
        "abandoned_checkout_url": "https://shop.example/checkouts/123123123/recover",
        "line_items": [line_item(), line_item(product_id=1, title="Case", price="199.00")],
        "customer": CUSTOMER,
    }
    return document | overrides


def order(**overrides: Any) -> dict[str, Any]:
    document = {
        "id": 820982911946154508,
        "name": "#9999",
        "order_number": 1234,
        "email": "bob@example.com",
        "checkout_token": "123123123",
        "created_at": "2026-11-20T10:30:00-05:00",
        "processed_at": "2026-11-20T10:30:00-05:00",
        "updated_at": "2026-11-20T10:30:00-05:00",
        "currency": "EUR",
        "subtotal_price": "398.00",
        "total_price": "403.00",
        "total_tax": "0.00",
        "total_discounts": "5.00",
        "discount_codes": [{"code": "TENOFF", "amount": "5.00", "type": "fixed_amount"}],
        "shipping_lines": [{"title": "Standard", "price": "10.00"}],
        "line_items": [line_item(), line_item(product_id=1, title="Case")],
        "customer": CUSTOMER,
        "cancelled_at": None,
        "cancel_reason": None,
    }
    return document | overrides


def refund(**overrides: Any) -> dict[str, Any]:
    document = {
        "id": 509562969,
        "order_id": 820982911946154508,
        "created_at": "2026-11-22T09:00:00-05:00",
        "refund_line_items": [{"quantity": 1, "subtotal": 199.0, "line_item": line_item()}],
        "transactions": [
            {"id": 1, "kind": "refund", "status": "success", "amount": "199.00", "currency": "EUR"},
            {"id": 2, "kind": "refund", "status": "failure", "amount": "50.00", "currency": "EUR"},
        ],
    }
    return document | overrides


def fulfillment(**overrides: Any) -> dict[str, Any]:
    document = {
        "id": 123456,
        "order_id": 820982911946154508,
        "status": "success",
        "created_at": "2026-11-21T08:00:00-05:00",
        "updated_at": "2026-11-21T08:00:00-05:00",
        "tracking_company": "UPS",
        "shipment_status": None,
        "email": "bob@example.com",
        "destination": {"first_name": "Bob", "phone": "+33612345678", "country_code": "FR"},
        "tracking_number": "1Z2345",
        "tracking_numbers": ["1Z2345"],
        "tracking_url": "https://www.ups.com/track?tracknum=1Z2345",
        "tracking_urls": ["https://www.ups.com/track?tracknum=1Z2345"],
        "line_items": [line_item()],
    }
    return document | overrides


def customer(**overrides: Any) -> dict[str, Any]:
    document = {
        **CUSTOMER,
        "created_at": "2026-11-01T12:00:00-05:00",
        "updated_at": "2026-11-20T12:00:00-05:00",
        "state": "enabled",
        "verified_email": True,
        "tags": "vip, newsletter",
        "note": None,
        "default_address": {
            "address1": "1 rue de Rivoli",
            "city": "Paris",
            "zip": "75001",
            "province": None,
            "country_code": "FR",
        },
        "email_marketing_consent": {
            "state": "subscribed",
            "opt_in_level": "confirmed_opt_in",
            "consent_updated_at": "2026-11-20T11:00:00-05:00",
        },
        "sms_marketing_consent": {
            "state": "not_subscribed",
            "opt_in_level": "single_opt_in",
            "consent_updated_at": None,
            "consent_collected_from": "OTHER",
        },
    }
    return document | overrides
