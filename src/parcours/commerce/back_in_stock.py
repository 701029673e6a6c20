"""Back in stock (docs/commerce.md, "Back in stock"): the "notify me" requests of a product
page, each with the consent it was given, and the `Back In Stock` event appended once
per request, in the order they came, when its variant's stock returns.

A request reaches the log as `Back In Stock Requested` (the public endpoint builds it
here, `request_events`); the projection records it (`record`), and when the catalog says
a variant's stock went from 0 (or never reported) to above 0 (`catalog.Restocked`), its
waiting requests are notified (`announce`), at most as many as the stock returned when
the brand limits them so."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import Connection, bindparam, insert, select, update

from parcours.commerce import catalog
from parcours.commerce.rows import withdrawn_products
from parcours.commerce.tables import commerce_products, commerce_stock_requests, commerce_variants
from parcours.customers import BadEmail, check_email, identity_of, verified_user_id
from parcours.log import Event, Reactions, append_events, internal_event
from parcours.runtime.clock import iso
from parcours.runtime.db import chunks
from parcours.tracking import EventError, parse_event

REQUESTED = "Back In Stock Requested"  # a shopper asked (the public endpoint)
BACK_IN_STOCK = "Back In Stock"  # appended by commerce, once per request
CHANNELS = ("email", "sms", "whatsapp")
PHONE_CHANNELS = ("sms", "whatsapp")  # the notice goes to the number the shopper gave
SOURCE = "back in stock form"  # the consent's source, in the ledger and on the request
MAX_TEXT = 2000  # the consent's words
MAX_ID = 200
FIELDS = (
    "writeKey",
    "email",
    "phone",
    "userId",
    "userHash",
    "anonymousId",
    "variantId",
    "productId",
    "channel",
    "consentWording",
    "consentVersion",
    "marketing",
    "marketingWording",
    "marketingVersion",
    "pageUrl",
    "locale",
    "messageId",
)
_encode = msgspec.json.Encoder().encode


class BackInStockError(ValueError):
    """A request that cannot be recorded: `status` (400, 403 or 404) and the `field`."""

    def __init__(self, status: int, message: str, field: str) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


@dataclass(frozen=True)
class NotifyRequest:
    """A checked "notify me" request, before its variant is looked up."""

    email: str | None
    phone: str | None  # E.164
    user_id: str | None  # the brand's, vouched for by its hash
    anonymous_id: str | None
    variant_id: str | None
    product_id: str | None
    channel: str
    consent_wording: str
    consent_version: str | None
    marketing_wording: str | None  # the shopper also agreed to the brand's marketing
    marketing_version: str | None
    page_url: str | None
    locale: str | None
    message_id: str | None


class StockRequest(msgspec.Struct, frozen=True):
    request_id: int
    customer_id: int
    product_id: str
    variant_id: str
    channel: str
    status: str  # waiting | notified
    consent_wording: str
    consent_version: str | None
    page_url: str | None
    requested_at: int
    notified_at: int | None
    stock_returned: int | None


# ---- the endpoint's part ------------------------------------------------------------------


def check_request(
    body: dict[str, Any], identity_secret: str, default_region: str = "FR"
) -> NotifyRequest:
    """The body of `POST /v1/back-in-stock`, checked: BackInStockError names the first bad
    field. A signed-in shopper is named by the brand's user id with its hash (anyone holds
    the public write key, so a bare user id would let them speak for another). A notice
    by SMS or WhatsApp goes to the phone the shopper gave, read as the profiles read one
    (E.164; a national number is of `default_region`, the brand's setting)."""
    unknown = sorted(name for name in body if name not in FIELDS)
    if unknown:
        raise BackInStockError(400, f"{unknown[0]} is not a field of this request", unknown[0])
    channel = body.get("channel", "email")
    if not isinstance(channel, str) or channel not in CHANNELS:
        raise BackInStockError(
            400, f"channel must be one of {', '.join(CHANNELS)}, got {channel!r}", "channel"
        )
    email = user_id = None
    if body.get("email") is not None:
        try:
            email = check_email(body["email"]).address
        except BadEmail as exc:
            raise BackInStockError(400, f"email: {exc}", "email") from None
    phone = _phone(body, default_region)
    if body.get("userId") is not None:
        user_id = verified_user_id(identity_secret, body["userId"], body.get("userHash"))
    elif body.get("userHash") is not None:
        raise BackInStockError(400, "userHash was sent without the userId it signs", "userHash")
    if channel in PHONE_CHANNELS:
        if phone is None:
            raise BackInStockError(
                400,
                f"phone is required for a notice by {channel}: the number to send it to",
                "phone",
            )
    elif email is None and user_id is None:
        raise BackInStockError(
            400, "email is required (or userId with its userHash for a signed-in shopper)", "email"
        )
    variant_id = _id(body, "variantId")
    product_id = _id(body, "productId")
    if variant_id is None and product_id is None:
        raise BackInStockError(400, "variantId is required (or productId)", "variantId")
    wording = _text(body, "consentWording", MAX_TEXT)
    if wording is None:
        raise BackInStockError(
            400,
            "consentWording is required: the words the shopper agreed to, kept as the proof "
            "of their consent",
            "consentWording",
        )
    marketing = body.get("marketing", False)
    if not isinstance(marketing, bool):
        raise BackInStockError(400, "marketing must be true or false", "marketing")
    marketing_wording = _text(body, "marketingWording", MAX_TEXT)
    if marketing and marketing_wording is None:
        raise BackInStockError(
            400, "marketingWording is required when marketing is true", "marketingWording"
        )
    page_url = _text(body, "pageUrl", 2000)
    if page_url is not None and not page_url.lower().startswith(("https://", "http://")):
        raise BackInStockError(400, "pageUrl must be an http(s) address", "pageUrl")
    return NotifyRequest(
        email=email,
        phone=phone,
        user_id=user_id,
        anonymous_id=_id(body, "anonymousId"),
        variant_id=variant_id,
        product_id=product_id,
        channel=channel,
        consent_wording=wording,
        consent_version=_text(body, "consentVersion", MAX_ID),
        marketing_wording=marketing_wording if marketing else None,
        marketing_version=_text(body, "marketingVersion", MAX_ID) if marketing else None,
        page_url=page_url,
        locale=_text(body, "locale", 35),
        message_id=_id(body, "messageId"),
    )


def variant_asked(conn: Connection, asked: NotifyRequest) -> catalog.Variant:
    """The catalog's variant a request names (its id or SKU, else the product's only
    variant): the stock that notifies it is the catalog's, so an unknown one is refused,
    and so is one of a product the catalog deleted (it will not be back)."""
    found = _variant_asked(conn, asked)
    if withdrawn_products(conn, [found.product_id]):
        raise BackInStockError(
            404, f"product {found.product_id!r} was deleted from the catalog", "productId"
        )
    return found


def _variant_asked(conn: Connection, asked: NotifyRequest) -> catalog.Variant:
    if asked.variant_id is not None:
        found = catalog.variant(conn, asked.variant_id)
        if found is None:
            raise BackInStockError(
                404, f"no variant {asked.variant_id!r} in the catalog (by id or SKU)", "variantId"
            )
        if asked.product_id is not None and found.product_id != asked.product_id:
            raise BackInStockError(
                400,
                f"variant {asked.variant_id!r} is of product {found.product_id!r}, "
                f"not {asked.product_id!r}",
                "productId",
            )
        return found
    assert asked.product_id is not None
    product = catalog.product(conn, asked.product_id)
    if product is None:
        raise BackInStockError(404, f"no product {asked.product_id!r} in the catalog", "productId")
    if len(product.variants) != 1:
        raise BackInStockError(
            400,
            f"variantId is required: product {asked.product_id!r} has "
            f"{len(product.variants)} variants",
            "variantId",
        )
    return product.variants[0]


def request_events(
    asked: NotifyRequest,
    variant: catalog.Variant,
    now: int,
    *,
    ip: str | None = None,
    user_agent: str | None = None,
) -> list[Event]:
    """The request as events for the log: `Back In Stock Requested` naming the shopper
    (by the email and phone in `context.traits`, or the brand's user id), and a marketing
    `Consent Updated` for the request's channel when they agreed to that too."""
    message_id = asked.message_id or f"bis-{uuid.uuid4().hex}"
    context: dict[str, Any] = {}
    traits = {
        name: value
        for name, value in (("email", asked.email), ("phone", asked.phone))
        if value is not None
    }
    if traits:
        context["traits"] = traits
    if asked.locale is not None:
        context["locale"] = asked.locale
    if ip:
        context["ip"] = ip
    if user_agent:
        context["userAgent"] = user_agent[:500]
    if asked.page_url is not None:
        context["page"] = {"url": asked.page_url}
    identity: dict[str, Any] = {}
    if asked.user_id is not None:
        identity["userId"] = asked.user_id
    if asked.anonymous_id is not None:
        identity["anonymousId"] = asked.anonymous_id
    properties: dict[str, Any] = {
        "product_id": variant.product_id,
        "variant_id": variant.variant_id,
        "channel": asked.channel,
        "consent_wording": asked.consent_wording,
    }
    if asked.consent_version is not None:
        properties["consent_version"] = asked.consent_version
    documents = [
        {
            "type": "track",
            "event": REQUESTED,
            "messageId": message_id,
            "properties": properties,
            "context": context,
            **identity,
        }
    ]
    if asked.marketing_wording is not None:
        consent: dict[str, Any] = {
            "channel": asked.channel,
            "purpose": "marketing",
            "status": "granted",
            "source": SOURCE,
            "wording": asked.marketing_wording,
        }
        if asked.marketing_version is not None:
            consent["wording_version"] = asked.marketing_version
        documents.append(
            {
                "type": "track",
                "event": "Consent Updated",
                "messageId": f"{message_id}:marketing",
                "properties": consent,
                "context": context,
                **identity,
            }
        )
    try:
        # Named by the email or phone in `context.traits` (identities the resolver keys
        # on) when no user or anonymous id is given.
        return [
            parse_event(_encode(d), source="api", received_at=now, identity_required=False)
            for d in documents
        ]
    except EventError as exc:
        raise BackInStockError(400, str(exc), exc.field) from None


# ---- the projection's part ----------------------------------------------------------------


def record(conn: Connection, events: list[Event], now: int) -> None:
    """Record the group's requests: one waiting request per customer and variant (a
    repeat while one waits changes nothing, so it keeps its place in the queue)."""
    asked = [
        e for e in events if e.type == "track" and e.name == REQUESTED and e.customer_id is not None
    ]
    if not asked:
        return
    # Their customers' waiting requests, by the index on the customer (a customer has few;
    # a row-value IN of pairs would read the whole table on SQLite).
    customers = sorted({int(e.customer_id or 0) for e in asked})
    waiting: set[tuple[int, str]] = set()
    table = commerce_stock_requests
    for part in chunks(customers):
        query = select(table.c.customer_id, table.c.variant_id).where(
            table.c.customer_id.in_(list(part)), table.c.status == "waiting"
        )
        waiting.update((row.customer_id, row.variant_id) for row in conn.execute(query))
    rows: list[dict[str, Any]] = []
    for event in asked:
        props = event.properties
        pair = (int(event.customer_id or 0), str(props.get("variant_id") or ""))
        if not pair[1] or pair in waiting:
            continue
        waiting.add(pair)
        page = event.context.get("page")
        rows.append(
            {
                "customer_id": pair[0],
                "product_id": str(props.get("product_id") or pair[1]),
                "variant_id": pair[1],
                "channel": str(props.get("channel") or "email"),
                "status": "waiting",
                "message_id": event.message_id,
                "consent_wording": str(props.get("consent_wording") or ""),
                "consent_version": props.get("consent_version"),
                "page_url": page.get("url") if isinstance(page, dict) else None,
                "requested_at": event.occurred_at,
                "notified_at": None,
                "stock_returned": None,
            }
        )
    if rows:
        conn.execute(insert(table), rows)


def announce(
    conn: Connection,
    restocked: Sequence[catalog.Restocked],
    now: int,
    reactions: Reactions,
    *,
    limit_to_stock: bool,
) -> None:
    """Notify the requests waiting for the variants back in stock, in the order they
    came: each marked notified and announced once as `Back In Stock` (its message id is
    the request's), at most the stock returned when `limit_to_stock`. A customer with two
    waiting requests for one variant (two profiles merged) is announced once."""
    by_variant = {r.variant_id: r for r in restocked}
    table = commerce_stock_requests
    waiting: dict[str, list[Any]] = {variant_id: [] for variant_id in by_variant}
    for part in chunks(sorted(by_variant)):
        query = (
            select(table)
            .where(table.c.variant_id.in_(list(part)), table.c.status == "waiting")
            .order_by(table.c.variant_id, table.c.request_id)
        )
        for row in conn.execute(query):
            waiting[row.variant_id].append(row)
    if not any(waiting.values()):
        return
    about = _about(conn, [v for v, rows in waiting.items() if rows])
    notified: list[dict[str, Any]] = []
    events: list[Event] = []
    for variant_id, rows in waiting.items():
        restock = by_variant[variant_id]
        told: set[int] = set()
        for row in rows:
            if limit_to_stock and len(told) >= restock.stock:
                break  # the others wait for the next return
            notified.append({"b_id": row.request_id, "b_at": now, "b_stock": restock.stock})
            if row.customer_id in told:
                continue
            told.add(row.customer_id)
            events.append(_announcement(row, restock, about.get(variant_id, {}), now))
    if notified:
        conn.execute(
            update(table)
            .where(table.c.request_id == bindparam("b_id"))
            .values(
                status="notified",
                notified_at=bindparam("b_at"),
                stock_returned=bindparam("b_stock"),
            ),
            notified,
        )
    if events:
        append_events(conn, [events], now, reactions)


def _announcement(row: Any, restock: catalog.Restocked, about: dict[str, Any], now: int) -> Event:
    properties: dict[str, Any] = {
        "request_id": str(row.request_id),
        "product_id": row.product_id,
        "variant_id": row.variant_id,
        "channel": row.channel,
        "stock": restock.stock,
        "requested_at": iso(row.requested_at),
        **about,
    }
    return internal_event(
        int(row.customer_id),
        BACK_IN_STOCK,
        properties,
        restock.at,
        f"commerce:back-in-stock:{row.request_id}",
        "system",
        received_at=now,
    )


def _about(conn: Connection, variant_ids: list[str]) -> dict[str, dict[str, Any]]:
    """What a message says of each variant: its product's name, link and image, its SKU,
    name and prices (two queries)."""
    variants = {
        row.variant_id: row
        for row in conn.execute(
            select(commerce_variants).where(commerce_variants.c.variant_id.in_(variant_ids))
        )
    }
    product_ids = sorted({row.product_id for row in variants.values()})
    products = {
        row.product_id: row
        for row in conn.execute(
            select(commerce_products).where(commerce_products.c.product_id.in_(product_ids))
        )
    }
    found: dict[str, dict[str, Any]] = {}
    for variant_id, variant in variants.items():
        product = products.get(variant.product_id)
        values = {
            "name": product.name if product is not None else None,
            "url": product.url if product is not None else None,
            "image_url": variant.image_url or (product.image_url if product is not None else None),
            "sku": variant.sku,
            "variant": variant.name,
            "prices": json.loads(variant.prices),
        }
        found[variant_id] = {k: v for k, v in values.items() if v not in (None, {})}
    return found


# ---- the face's reads ---------------------------------------------------------------------


def stock_requests(
    conn: Connection,
    *,
    customer_id: int | None = None,
    variant_id: str | None = None,
    status: str | None = None,
) -> list[StockRequest]:
    """Requests in the order they came: a customer's, a variant's, or by status."""
    table = commerce_stock_requests
    query = select(table).order_by(table.c.request_id)
    if customer_id is not None:
        query = query.where(table.c.customer_id == customer_id)
    if variant_id is not None:
        query = query.where(table.c.variant_id == variant_id)
    if status is not None:
        query = query.where(table.c.status == status)
    return [
        StockRequest(**{name: getattr(row, name) for name in StockRequest.__struct_fields__})
        for row in conn.execute(query)
    ]


def _id(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BackInStockError(400, f"{name} must be text or a whole number", name)
    text = str(value).strip()
    if not text or len(text) > MAX_ID:
        raise BackInStockError(400, f"{name} must be 1 to {MAX_ID} characters", name)
    return text


def _phone(body: dict[str, Any], default_region: str) -> str | None:
    value = body.get("phone")
    if value is None:
        return None
    if not isinstance(value, str):
        raise BackInStockError(400, "phone must be text, such as +33612345678", "phone")
    found = identity_of("phone", value, default_region)
    if found is None:
        raise BackInStockError(
            400,
            f"phone: {value[:64]!r} is not a phone number (international as +33612345678, "
            f"or national in {default_region})",
            "phone",
        )
    return found[1]


def _text(body: dict[str, Any], name: str, longest: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BackInStockError(400, f"{name} must be text", name)
    text = value.strip()
    if len(text) > longest:
        raise BackInStockError(400, f"{name} must be at most {longest} characters", name)
    return text or None
