"""POST /webhooks/shopify: verify, deduplicate and map Shopify webhooks onto events."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, post

from parcours.customers import api as customers
from parcours.ingest import metrics as ingest_metrics
from parcours.ingest.http import HttpError, json_response, services_of
from parcours.ingest.model import Event, EventError, parse_event
from parcours.ingest.shopify import ShopifyWebhookError, map_shopify_webhook, verify_shopify_hmac
from parcours.services import Services

MAX_WEBHOOK_BYTES = 2 * 1024 * 1024
_encode = msgspec.json.Encoder().encode


@post("/webhooks/shopify")
async def shopify_webhook(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    try:
        raw = await request.body()
        mapping, topic = _verify_and_map(services, request, raw)
        now = services.clock.now_ms()
        if mapping.erase_identities or mapping.erase_shop:
            # A redaction request is carried out, not stored: the erasure's audit event,
            # which holds no personal data, is its record.
            erased = _erase(services, mapping.erase_identities, mapping.erase_shop, topic)
            return json_response({"success": True, "topic": topic, "erased": erased})
        events = [_to_event(document, now) for document in mapping.events]
    except HttpError as exc:
        ingest_metrics.refused_request("shopify", exc.status)
        return exc.response()
    result = await services.writer.append(events)
    return json_response(
        {
            "success": True,
            "topic": topic,
            "stored": result.stored,
            "duplicates": result.duplicates,
        }
    )


def _verify_and_map(
    services: Services, request: Request[Any, Any, Any], raw: bytes
) -> tuple[Any, str]:
    secret = services.settings.shopify_webhook_secret
    if not secret:
        raise HttpError(
            503, "Shopify webhooks are not configured: set PARCOURS_SHOPIFY_WEBHOOK_SECRET"
        )
    if len(raw) > MAX_WEBHOOK_BYTES:
        raise HttpError(413, f"body is larger than {MAX_WEBHOOK_BYTES} bytes", "body")
    if not verify_shopify_hmac(secret, raw, request.headers.get("x-shopify-hmac-sha256")):
        raise HttpError(
            401, "X-Shopify-Hmac-Sha256 does not match the body", "X-Shopify-Hmac-Sha256"
        )
    topic = request.headers.get("x-shopify-topic", "").strip()
    if not topic:
        raise HttpError(400, "X-Shopify-Topic is required", "X-Shopify-Topic")
    webhook_id = request.headers.get("x-shopify-webhook-id", "").strip()
    if not webhook_id:
        raise HttpError(400, "X-Shopify-Webhook-Id is required", "X-Shopify-Webhook-Id")
    try:
        payload = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise HttpError(400, f"not valid JSON: {exc}", "body") from None
    if not isinstance(payload, dict):
        raise HttpError(400, "the body must be a JSON object", "body")
    shop = request.headers.get("x-shopify-shop-domain")
    try:
        return map_shopify_webhook(topic, payload, webhook_id, shop), topic
    except ShopifyWebhookError as exc:
        raise HttpError(400, str(exc), "body") from None


def _to_event(document: dict[str, Any], now: int) -> Event:
    try:
        return parse_event(
            _encode(document), source="shopify", received_at=now, identity_required=False
        )
    except EventError as exc:
        raise HttpError(400, f"the webhook maps to an invalid event: {exc}", exc.field) from None


def _erase(
    services: Services, identities: list[tuple[str, str]], whole_shop: bool, topic: str
) -> int:
    """Erase each distinct customer behind these identities (or every customer known
    through Shopify, for shop/redact). Returns how many were erased."""
    region = services.settings.default_region
    erased = 0
    with services.db.write() as conn:
        targets: set[int] = set()
        if whole_shop:
            targets |= set(customers.customers_with_identity_kind(conn, "shopify_customer_id"))
        for kind, value in identities:
            ref = f"{kind}:{value}" if kind not in ("email", "phone") else value
            try:
                targets.add(customers.resolve(conn, ref, region))
            except customers.CustomerNotFound:
                continue
        for customer_id in sorted(targets):
            customers.erase_in(conn, customer_id, services.clock.now_ms(), f"shopify {topic}")
            erased += 1
    return erased
