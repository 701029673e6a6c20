"""The outbox and templates in the admin API, and the public links in messages:
unsubscribe (one click, RFC 8058), the open pixel and click tracking."""

from __future__ import annotations

import asyncio
from html import escape
from typing import Any
from urllib.parse import urlencode

import msgspec
import phonenumbers
from litestar import Request, Response, get, post, put
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.params import FromPath

from parcours.customers import CONSENT_EVENT, BadEmail, check_email
from parcours.customers import profiles as customers
from parcours.http import (
    HttpError,
    Injected,
    prefixed_id,
    read_body,
    read_json,
    whole_number,
)
from parcours.log import Appender, internal_event
from parcours.messaging import (
    PIXEL_GIF,
    BadLink,
    ClickLink,
    Delivery,
    OpenLink,
    OutboxMessage,
    TemplateSummary,
    UnsubscribeLink,
    outbox_page,
    templates,
)
from parcours.runtime.clock import Clock
from parcours.runtime.db import Database
from parcours.runtime.definitions import load_yaml
from parcours.runtime.i18n import accept_language, pick_locale, text
from parcours.runtime.keys import KeyHolder
from parcours.runtime.settings import Settings
from parcours.web.api_docs import request_body
from parcours.web.errors import ERROR_FIELDS

_decode = msgspec.json.Decoder().decode


class OutboxPage(msgspec.Struct):
    """Messages, newest first; `next` (when the page is full) is the next page's URL."""

    messages: list[OutboxMessage]
    next: str | msgspec.UnsetType = msgspec.UNSET


class TemplateList(msgspec.Struct):
    templates: list[TemplateSummary]


class TemplateSaved(msgspec.Struct):
    id: str
    origin: str
    version: str


class TemplateView(msgspec.Struct):
    id: str
    origin: str
    version: str
    content: dict[str, Any]  # locale -> channel -> fields


class Preview(msgspec.Struct):
    template: str
    version: str
    channel: str
    locale: str
    content: dict[str, Any]


class SentForTest(msgspec.Struct):
    message: str  # msg_N, in the outbox
    to: str


# ---- admin: outbox and templates --------------------------------------------------------


_CUSTOMER = {ERROR_FIELDS: {customers.CustomerNotFound: "customer"}}


@get("/api/outbox", opt=_CUSTOMER)
async def list_outbox(
    request: Request[Any, Any, Any], db: Injected[Database], settings: Injected[Settings]
) -> OutboxPage:
    """The messages, newest first, as the customer sees them. `?limit=` (1-500, 50) and
    `?before=msg_N` to page back; `?customer=` (any id) for one customer's messages."""
    limit = _int_param(request, "limit", 50, 1, 500)
    before_text = request.query_params.get("before")
    before = prefixed_id(before_text, "msg_", "before") if before_text else None
    customer = request.query_params.get("customer")
    if customer is not None and not customer.strip():
        raise HttpError(400, "customer must be a customer's id (any id)", "customer")

    def read() -> list[OutboxMessage]:
        with db.read() as conn:
            ids = None
            if customer is not None:
                found = customers.resolve(conn, customer, settings.default_region)
                ids = customers.with_merged(conn, found)
            return outbox_page(conn, limit, before, ids)

    messages = await asyncio.to_thread(read)
    page = OutboxPage(messages)
    if len(messages) == limit:
        more = urlencode({"customer": customer}) + "&" if customer is not None else ""
        page.next = f"/api/outbox?{more}limit={limit}&before={messages[-1].id}"
    return page


def _int_param(
    request: Request[Any, Any, Any], name: str, default: int, low: int, high: int
) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    number = whole_number(raw)
    if number is None or not low <= number <= high:
        raise HttpError(400, f"{name} must be a whole number from {low} to {high}", name)
    return number


@get("/api/templates")
async def list_templates(db: Injected[Database]) -> TemplateList:
    def read() -> list[TemplateSummary]:
        with db.read() as conn:
            return templates.listing(conn)

    return TemplateList(await asyncio.to_thread(read))


@get("/api/templates/{template_id:str}")
async def get_template(db: Injected[Database], template_id: FromPath[str]) -> TemplateView:
    def read() -> templates.MessageTemplate:
        with db.read() as conn:
            return templates.get(conn, template_id)

    try:
        found = await asyncio.to_thread(read)
    except templates.TemplateProblem as exc:
        raise HttpError(404, str(exc), "template") from None
    return TemplateView(found.id, found.origin, found.version, found.content)


MAX_TEMPLATE_BYTES = 512 * 1024


@put(
    "/api/templates/{template_id:str}",
    status_code=200,
    operation_class=request_body(
        str, ("application/yaml",), "locale -> channel -> fields, in YAML (JSON is YAML too)"
    ),
)
async def put_template(
    request: Request[Any, Any, Any],
    template_id: FromPath[str],
    db: Injected[Database],
    clock: Injected[Clock],
    admin: Injected[KeyHolder],
) -> TemplateSaved:
    """Add or replace the brand's template. The body is JSON or YAML: locale -> channel ->
    fields. Checked first; nothing is saved if anything is wrong."""
    raw = await read_body(request, MAX_TEMPLATE_BYTES)
    try:  # YAML is a superset of JSON; read within the limits of every definition
        source, _ = load_yaml(raw.decode("utf-8"), max_bytes=MAX_TEMPLATE_BYTES)
    except UnicodeDecodeError as exc:
        raise HttpError(400, f"the body is not UTF-8 text: {exc}", "body") from None

    def write() -> templates.MessageTemplate:
        with db.write() as conn:
            return templates.save(conn, template_id, source, admin.name, clock.now_ms())

    saved = await asyncio.to_thread(write)
    return TemplateSaved(saved.id, saved.origin, saved.version)


class _PreviewBody(msgspec.Struct, forbid_unknown_fields=True):
    customer: str
    channel: str
    locale: str | None = None
    event: dict[str, Any] | None = None


@post(
    "/api/templates/{template_id:str}/preview",
    status_code=200,
    opt=_CUSTOMER,
    operation_class=request_body(_PreviewBody),
)
async def preview_template(
    request: Request[Any, Any, Any],
    template_id: FromPath[str],
    db: Injected[Database],
    settings: Injected[Settings],
    delivery: Injected[Delivery],
) -> Preview:
    """The template rendered for a real customer, on one channel, as they would see it."""
    body = await read_json(request, 256 * 1024, _PreviewBody)

    def render() -> templates.Rendered:
        with db.read() as conn:
            customer_id = customers.resolve(conn, body.customer, settings.default_region)
            template = templates.get(conn, template_id)
            context = delivery.preview_context(conn, customer_id, body.channel, body.event or {})
            locale = body.locale or context.locale
            return templates.render(
                template, body.channel, context.values, locale, settings.brand_locale
            )

    rendered = await asyncio.to_thread(render)
    return Preview(
        rendered.template, rendered.version, rendered.channel, rendered.locale, rendered.fields
    )


class _TestSendBody(msgspec.Struct, forbid_unknown_fields=True):
    customer: str
    channel: str
    to: str
    event: dict[str, Any] | None = None


@post(
    "/api/templates/{template_id:str}/test-send",
    status_code=202,
    opt=_CUSTOMER,
    operation_class=request_body(_TestSendBody),
)
async def test_send(
    request: Request[Any, Any, Any],
    template_id: FromPath[str],
    db: Injected[Database],
    clock: Injected[Clock],
    settings: Injected[Settings],
    delivery: Injected[Delivery],
) -> SentForTest:
    """Send the template, rendered for a real customer, to an address of the brand's own
    (`to`): subject marked [TEST], outside journeys, policies and caps. It appears in the
    outbox like any message."""
    body = await read_json(request, 256 * 1024, _TestSendBody)
    to = _test_address(body.channel, body.to, settings.default_region)

    def send() -> int:
        with db.write() as conn:
            customer_id = customers.resolve(conn, body.customer, settings.default_region)
            return delivery.test_send(
                conn,
                template_id,
                customer_id,
                body.channel,
                to,
                body.event or {},
                clock.now_ms(),
            )

    outbox_id = await asyncio.to_thread(send)
    return SentForTest(f"msg_{outbox_id}", to)


def _test_address(channel: str, to: str, region: str) -> str:
    if channel == "email":
        try:
            return check_email(to).address
        except BadEmail as exc:
            raise HttpError(400, f"{to!r} is not an email address: {exc}", "to") from None
    if channel in ("sms", "whatsapp"):
        try:
            number = phonenumbers.parse(to, region)
        except phonenumbers.NumberParseException:
            number = None
        if number is None or not phonenumbers.is_valid_number(number):
            raise HttpError(400, f"{to!r} is not a phone number", "to")
        return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
    raise HttpError(400, "a test goes by email, sms or whatsapp", "channel")


# ---- public: unsubscribe, open pixel, click ----------------------------------------------


def _page(locale: str, title: str, body: str, status: int = 200) -> Response[str]:
    html = (
        f'<!doctype html><html lang="{locale}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title></head>"
        '<body style="font-family: system-ui, sans-serif; max-width: 32rem; margin: 3rem auto; '
        f'padding: 0 1rem">{body}</body></html>'
    )
    return Response(html, status_code=status, media_type="text/html; charset=utf-8")


def _locale_for(
    db: Database, settings: Settings, request: Request[Any, Any, Any], customer_id: int
) -> str:
    with db.read() as conn:
        try:
            view = customers.conditions_view(conn, customer_id)
        except customers.CustomerNotFound:
            view = {"computed": {}, "traits": {}}
    return pick_locale(
        view["computed"].get("locale"),
        view["traits"].get("locale"),
        accept_language(request.headers.get("accept-language")),
        settings.brand_locale,
    )


def _unsubscribe_words(locale: str, channel: str, brand: str) -> dict[str, str]:
    """What the customer stops receiving, as a whole phrase per channel: in French the
    article and the agreement change with the word (d’e-mails promotionnels, de
    notifications promotionnelles)."""
    return {"what": text(locale, f"unsubscribe.what.{channel}"), "brand": brand}


def _preferences_link(delivery: Delivery, locale: str, customer_id: int) -> str:
    """The way from an unsubscribe page to the customer's preference centre."""
    if customer_id == 0:
        return ""
    link = delivery.links.preferences(customer_id)
    return f'<p><a href="{escape(link)}">{escape(text(locale, "unsubscribe.preferences"))}</a></p>'


_HTML = "text/html; charset=utf-8"
_INVALID_LINK = {404: ResponseSpec(str, media_type=_HTML, description="Not a valid link")}


@get("/u/{token:str}", media_type=_HTML, responses=_INVALID_LINK)
async def unsubscribe_page(
    request: Request[Any, Any, Any],
    token: FromPath[str],
    db: Injected[Database],
    settings: Injected[Settings],
    delivery: Injected[Delivery],
) -> Response[str]:
    """The visible link: a page with one button (a GET never unsubscribes, since mail
    scanners follow links)."""
    try:
        data = delivery.links.signer.verify("unsubscribe", token, UnsubscribeLink)
    except BadLink:
        return _invalid_link(request)
    locale = await asyncio.to_thread(_locale_for, db, settings, request, data.customer)
    values = _unsubscribe_words(locale, data.channel, settings.brand_name)
    title = text(locale, "unsubscribe.title")
    return _page(
        locale,
        title,
        f"<h1>{escape(title)}</h1><p>{escape(text(locale, 'unsubscribe.question', **values))}</p>"
        f'<form method="post"><button type="submit">'
        f"{escape(text(locale, 'unsubscribe.button'))}</button></form>"
        + _preferences_link(delivery, locale, data.customer),
    )


@post(
    "/u/{token:str}",
    status_code=200,
    media_type=_HTML,
    responses=_INVALID_LINK,
    operation_class=request_body(
        str, ("application/x-www-form-urlencoded",), "List-Unsubscribe=One-Click (RFC 8058)"
    ),
)
async def unsubscribe(
    request: Request[Any, Any, Any],
    token: FromPath[str],
    db: Injected[Database],
    clock: Injected[Clock],
    settings: Injected[Settings],
    delivery: Injected[Delivery],
    appender: Injected[Appender],
) -> Response[str]:
    """One click (RFC 8058: the mail client POSTs `List-Unsubscribe=One-Click`) or the
    page's button: marketing consent for the channel is withdrawn at once."""
    try:
        data = delivery.links.signer.verify("unsubscribe", token, UnsubscribeLink)
    except BadLink:
        return _invalid_link(request)
    customer_id, channel, outbox_id = data.customer, data.channel, data.message
    if customer_id == 0:  # the link in a test send: shown, never acted on
        locale = pick_locale(accept_language(request.headers.get("accept-language")))
        values = _unsubscribe_words(locale, channel, settings.brand_name)
        message = text(locale, "unsubscribe.done", **values)
        return _page(locale, text(locale, "unsubscribe.title"), f"<p>{escape(message)}</p>")
    now = clock.now_ms()
    one_click = b"List-Unsubscribe=One-Click" in await request.body()
    source = "one-click unsubscribe" if one_click else "unsubscribe link"
    events = [
        internal_event(
            customer_id,
            CONSENT_EVENT,
            {"channel": channel, "purpose": "marketing", "status": "withdrawn", "source": source},
            now,
            f"msg:{outbox_id}:unsubscribe-consent",
            "channel",
        ),
        internal_event(
            customer_id,
            "Unsubscribed",
            {"channel": channel, "message_id": f"msg_{outbox_id}", "source": source},
            now,
            f"msg:{outbox_id}:unsubscribed",
            "channel",
        ),
    ]
    await appender.append(events)
    locale = await asyncio.to_thread(_locale_for, db, settings, request, customer_id)
    values = _unsubscribe_words(locale, channel, settings.brand_name)
    message = text(locale, "unsubscribe.done", **values)
    return _page(
        locale,
        text(locale, "unsubscribe.title"),
        f"<p>{escape(message)}</p>" + _preferences_link(delivery, locale, customer_id),
    )


@get("/t/o/{token:str}", media_type="image/gif")
async def open_pixel(
    token: FromPath[str],
    db: Injected[Database],
    clock: Injected[Clock],
    delivery: Injected[Delivery],
) -> Response[bytes]:
    """The open pixel: a transparent GIF, whatever the token (a bad one records nothing)."""
    try:
        data: OpenLink | None = delivery.links.signer.verify(
            "open", token.removesuffix(".gif"), OpenLink
        )
    except BadLink:
        data = None
    if data is not None:
        await asyncio.to_thread(_record, db, clock, delivery, data.message, "opened", {})
    return Response(
        PIXEL_GIF,
        media_type="image/gif",
        headers={"Cache-Control": "no-store, max-age=0"},
    )


@get("/t/c/{token:str}", status_code=302, responses=_INVALID_LINK)
async def click(
    request: Request[Any, Any, Any],
    token: FromPath[str],
    db: Injected[Database],
    clock: Injected[Clock],
    delivery: Injected[Delivery],
) -> Response[Any]:
    """A tracked link: record the click, then go where the signed link says, nowhere else."""
    try:
        data = delivery.links.signer.verify("click", token, ClickLink)
    except BadLink:
        return _invalid_link(request)
    url = data.url
    await asyncio.to_thread(_record, db, clock, delivery, data.message, "clicked", {"url": url})
    return Response(b"", status_code=302, headers={"Location": url})


def _record(
    db: Database,
    clock: Clock,
    delivery: Delivery,
    outbox_id: int,
    status: str,
    extra: dict[str, Any],
) -> None:
    with db.write() as conn:
        delivery.status(conn, outbox_id, status, clock.now_ms(), extra=extra)


def _invalid_link(request: Request[Any, Any, Any]) -> Response[str]:
    locale = pick_locale(accept_language(request.headers.get("accept-language")))
    message = text(locale, "unsubscribe.invalid")
    return _page(locale, message, f"<p>{escape(message)}</p>", 404)


def messaging_admin_routes() -> list[HTTPRouteHandler]:
    """The outbox and templates: behind the admin key."""
    return [list_outbox, list_templates, get_template, put_template, preview_template, test_send]


def messaging_public_routes() -> list[HTTPRouteHandler]:
    """The links in messages: each carries its own signature."""
    return [unsubscribe_page, unsubscribe, open_pixel, click]


__all__ = ["messaging_admin_routes", "messaging_public_routes"]
