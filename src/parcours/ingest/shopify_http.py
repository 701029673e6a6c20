"""POST /webhooks/shopify: verify, deduplicate and map Shopify webhooks onto events.

One app secret signs the webhooks of every shop that installs the app, so a signature
only proves that Shopify sent the delivery, not which shop it should change. Each
delivery names its shop (`X-Shopify-Shop-Domain`); a shop that is not in `shopify_shops`
changes nothing, and a shop's webhook changes only what came from that shop
(docs/security.md, Shopify).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.openapi import ResponseSpec

from parcours.customers import (
    Origin,
    People,
    erase_origin,
    erase_unattributed,
    identity_of,
    origin_customers,
)
from parcours.customers import profiles as customers
from parcours.http import HttpError, Injected, json_response, request_body
from parcours.ingest import metrics as ingest_metrics
from parcours.ingest.shopify import (
    CUSTOMER_ID_KIND,
    ShopifyMapping,
    ShopifyWebhookError,
    map_shopify_webhook,
    verify_shopify_hmac,
)
from parcours.log import Appender, Event
from parcours.runtime.clock import Clock
from parcours.runtime.db import Database
from parcours.runtime.settings import SHOPIFY_SHOP_DOMAIN, Settings
from parcours.tracking import EventError, parse_event

MAX_WEBHOOK_BYTES = 2 * 1024 * 1024
# The topics Shopify's GDPR rules make every app take: they erase or ask for a shop's data.
GDPR_TOPICS = frozenset({"customers/data_request", "customers/redact", "shop/redact"})
SHOP_HEADER = "X-Shopify-Shop-Domain"
_encode = msgspec.json.Encoder().encode
log = logging.getLogger(__name__)


@post(
    "/webhooks/shopify",
    status_code=200,
    operation_class=request_body(dict[str, Any], description="The topic's payload, signed"),
    responses={200: ResponseSpec(dict[str, Any], description="What the delivery changed")},
)
async def shopify_webhook(
    request: Request[Any, Any, Any],
    db: Injected[Database],
    clock: Injected[Clock],
    settings: Injected[Settings],
    appender: Injected[Appender],
    people: Injected[People],
) -> Response[bytes]:
    """A Shopify webhook, signed with the app's secret (X-Shopify-Hmac-Sha256)."""
    try:
        raw = await request.body()
        topic, shop = _verify(settings, request, raw)
        if shop not in settings.shopify_shops:
            return _ignore(topic, shop)
        mapping = _map(request, raw, topic, shop)
        if mapping.erase_identities or mapping.erase_shop:
            # A redaction request is carried out, not stored: the erasure's audit event,
            # which holds no personal data, is its record.
            whole, partly = await asyncio.to_thread(
                _redact, db, people, clock, settings.default_region, shop, topic, mapping
            )
            return json_response(
                {"success": True, "topic": topic, "erased": whole, "partly_erased": partly}
            )
        now = clock.now_ms()
        events = [_to_event(document, now) for document in mapping.events]
    except HttpError as exc:
        ingest_metrics.refused_request("shopify", exc.status)
        raise
    result = await appender.append(events)
    return json_response(
        {
            "success": True,
            "topic": topic,
            "stored": result.stored,
            "duplicates": result.duplicates,
        }
    )


def _verify(settings: Settings, request: Request[Any, Any, Any], raw: bytes) -> tuple[str, str]:
    """The delivery's topic and shop, once its signature is checked."""
    if not settings.shopify_webhook_secret:
        raise HttpError(
            503, "Shopify webhooks are not configured: set PARCOURS_SHOPIFY_WEBHOOK_SECRET"
        )
    if not settings.shopify_shops:
        raise HttpError(
            503,
            "Shopify webhooks are not configured: list the shops they may come from in "
            "shopify_shops (PARCOURS_SHOPIFY_SHOPS)",
        )
    if len(raw) > MAX_WEBHOOK_BYTES:
        raise HttpError(413, f"body is larger than {MAX_WEBHOOK_BYTES} bytes", "body")
    if not verify_shopify_hmac(
        settings.shopify_webhook_secret, raw, request.headers.get("x-shopify-hmac-sha256")
    ):
        raise HttpError(
            401, "X-Shopify-Hmac-Sha256 does not match the body", "X-Shopify-Hmac-Sha256"
        )
    topic = request.headers.get("x-shopify-topic", "").strip()
    if not topic:
        raise HttpError(400, "X-Shopify-Topic is required", "X-Shopify-Topic")
    shop = request.headers.get(SHOP_HEADER, "").strip().lower()
    if not shop:
        raise HttpError(400, f"{SHOP_HEADER} is required", SHOP_HEADER)
    if not SHOPIFY_SHOP_DOMAIN.fullmatch(shop):
        raise HttpError(
            400,
            f"{SHOP_HEADER} must be a shop's myshopify.com domain, got {shop[:100]!r}",
            SHOP_HEADER,
        )
    return topic, shop


def _ignore(topic: str, shop: str) -> Response[bytes]:
    """A genuine delivery from a shop this Parcours does not serve (a development store
    that installed the same app, say): nothing changes, and 200 so that Shopify does not
    deliver it again."""
    log.warning(
        "Shopify webhook %s from %s ignored: the shop is not in shopify_shops",
        topic,
        shop,
        extra={"fields": {"shop": shop, "topic": topic}},
    )
    ingest_metrics.rejected("shopify", "unknown_shop")
    return json_response(
        {"success": True, "topic": topic, "ignored": f"{shop} is not in shopify_shops"}
    )


def _map(request: Request[Any, Any, Any], raw: bytes, topic: str, shop: str) -> ShopifyMapping:
    webhook_id = request.headers.get("x-shopify-webhook-id", "").strip()
    if not webhook_id:
        raise HttpError(400, "X-Shopify-Webhook-Id is required", "X-Shopify-Webhook-Id")
    try:
        payload = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise HttpError(400, f"not valid JSON: {exc}", "body") from None
    if not isinstance(payload, dict):
        raise HttpError(400, "the body must be a JSON object", "body")
    if topic in GDPR_TOPICS:
        _same_shop(payload, topic, shop)
    try:
        return map_shopify_webhook(topic, payload, webhook_id, shop)
    except ShopifyWebhookError as exc:
        raise HttpError(400, str(exc), "body") from None


def _same_shop(payload: dict[str, Any], topic: str, shop: str) -> None:
    """The shop header is not covered by the signature, the body is: a GDPR webhook (which
    erases, or asks for, a shop's data) acts only when both name the same shop."""
    named = payload.get("shop_domain")
    if not isinstance(named, str) or not named.strip():
        raise HttpError(
            400,
            f"{topic}: the body's shop_domain is required, and must be the shop of "
            f"{SHOP_HEADER} ({shop})",
            "shop_domain",
        )
    if named.strip().lower() != shop:
        raise HttpError(
            400,
            f"{topic}: {SHOP_HEADER} is {shop} but the body's shop_domain is "
            f"{named.strip()[:100]!r}: a GDPR webhook acts only on the shop its signed body "
            "names",
            "shop_domain",
        )


def _to_event(document: dict[str, Any], now: int) -> Event:
    try:
        return parse_event(
            _encode(document), source="shopify", received_at=now, identity_required=False
        )
    except EventError as exc:
        raise HttpError(400, f"the webhook maps to an invalid event: {exc}", exc.field) from None


def _redact(
    db: Database,
    people: People,
    clock: Clock,
    region: str,
    shop: str,
    topic: str,
    mapping: ShopifyMapping,
) -> tuple[int, int]:
    """Take away what this shop gave: about the customer it names (customers/redact), or
    about everyone (shop/redact). A person known only through the shop is erased; one
    known otherwise too loses the shop's part only. Returns (erased, partly erased)."""
    origin = Origin(
        source="shopify", context_key="shop", scope=shop, identity_kind=CUSTOMER_ID_KIND
    )
    requested_by = f"shopify {topic} {shop}"
    whole = partly = 0
    with db.write() as conn:
        targets: set[int] = set()
        if mapping.erase_shop:
            targets |= set(origin_customers(conn, origin))
            erase_unattributed(conn, origin)
        for kind, value in mapping.erase_identities:
            # Exactly this identity, of this kind: a decoy whose userId is the email or
            # the `shopify_customer_id:...` text never draws the redaction away.
            identity = identity_of(kind, value, region)
            if identity is not None:
                targets.update(customers.customers_with_identity(conn, *identity))
        for customer_id in sorted(targets):  # one order, whoever else locks profiles
            outcome = erase_origin(
                conn, people, customer_id, origin, clock.now_ms(), requested_by, region
            )
            if outcome is None:
                continue  # found by its email or phone, but this shop told nothing of them
            if outcome.whole:
                whole += 1
            else:
                partly += 1
    return whole, partly
