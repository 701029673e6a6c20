"""The "notify me" endpoint of a product page (docs/commerce.md, "Back in stock"): the
shop's page calls it with the public write key; the request, with the consent it was
given, goes into the log, and commerce notifies it once when the variant is back."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import msgspec
from litestar import Request, Response
from litestar.handlers import HTTPRouteHandler

from parcours.commerce import BackInStockError, back_in_stock
from parcours.http import HttpError, Injected, json_response, object_body, read_body
from parcours.log import Appender
from parcours.runtime.clock import Clock
from parcours.runtime.db import Database
from parcours.runtime.settings import Settings
from parcours.web.cross_origin import cross_origin_post, preflight, with_cors

MAX_BODY = 16 * 1024
PATH = "/v1/back-in-stock"  # called from the brand's product pages, another origin


class NotifyMeBody(msgspec.Struct):
    """A shopper asks to hear when a variant is back in stock (the handler names what is
    wrong in the body, field by field)."""

    consentWording: str  # the words the shopper agreed to: the proof of their consent
    variantId: str | None = None  # the variant's id or SKU (else productId with one variant)
    productId: str | None = None
    email: str | None = None  # or userId with userHash for a signed-in shopper
    phone: str | None = None  # for sms and whatsapp: E.164, or national in default_region
    userId: str | None = None
    userHash: str | None = None
    anonymousId: str | None = None  # the visitor's, to join what they browsed
    channel: Literal["email", "sms", "whatsapp"] = "email"  # the notice's channel
    consentVersion: str | None = None
    marketing: bool = False  # they also agreed to the brand's marketing on that channel
    marketingWording: str | None = None
    marketingVersion: str | None = None
    pageUrl: str | None = None
    locale: str | None = None  # the language of the message they will get
    messageId: str | None = None  # to retry safely: the same id is stored once
    writeKey: str | None = None


class NotifyMeAccepted(msgspec.Struct):
    """The request is waiting (a repeat of one waiting changes nothing). `inStock`: the
    catalog has the variant in stock now, so the page may say so instead."""

    success: bool
    status: str
    inStock: bool


notify_me_preflight = preflight(PATH)


@cross_origin_post(
    PATH,
    body=NotifyMeBody,
    answer=NotifyMeAccepted,
    description="The request is waiting",
    max_body=MAX_BODY,
)
async def notify_me(
    request: Request[Any, Any, Any],
    db: Injected[Database],
    clock: Injected[Clock],
    settings: Injected[Settings],
    appender: Injected[Appender],
) -> Response[bytes]:
    """Body: {"email" (or "userId" and "userHash"), "variantId" (its id or SKU; or
    "productId" of a product with one variant), "consentWording" (the words shown, kept as
    the proof), optionally "channel" ("email", "sms" or "whatsapp", which need "phone"),
    "consentVersion", "marketing" with "marketingWording", "pageUrl", "locale",
    "anonymousId", "messageId"}. 400 names a bad field, 404 an unknown variant."""
    raw = await read_body(request, MAX_BODY)
    body = object_body(raw)
    try:
        asked = back_in_stock.check_request(
            body, settings.identity_verification_secret, settings.default_region
        )
        variant = await asyncio.to_thread(_variant, db, asked)
        events = back_in_stock.request_events(
            asked,
            variant,
            clock.now_ms(),
            ip=request.client.host if request.client else None,
            user_agent=request.headers.get("user-agent"),
        )
    except BackInStockError as exc:
        raise HttpError(exc.status, str(exc), exc.field) from None
    await appender.append(events)
    return with_cors(json_response(NotifyMeAccepted(True, "waiting", variant.in_stock)))


def _variant(db: Database, asked: back_in_stock.NotifyRequest) -> Any:
    with db.read() as conn:
        return back_in_stock.variant_asked(conn, asked)


def back_in_stock_routes() -> list[HTTPRouteHandler]:
    """Under the write key's guard (app.py)."""
    return [notify_me_preflight, notify_me]
