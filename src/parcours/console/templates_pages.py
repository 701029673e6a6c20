"""Message templates in the console: the list, a template's content per language and
channel as YAML (edited and checked before anything is saved, audited in the save's
transaction), a preview for a real customer drawn as the channel shows it (an email at
phone and desktop widths, an SMS with its segments, the push card, the WhatsApp bubble,
the Wallet pass: `_message.html`), the same preview of the YAML being typed (nothing
saved), and a test sent to an address (a push or a Wallet message: to the device of a
customer named) through delivery and the configured provider, marked as a test
(audited in the send's transaction)."""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import Any
from urllib.parse import urlencode

import phonenumbers
import yaml
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery
from sqlalchemy import Connection

from parcours import accounts
from parcours.channels import sms
from parcours.console.access import ConsoleParts, Form, changing, go, signed_in
from parcours.console.rendering import SECURITY_HEADERS, Viewer, not_found, page
from parcours.customers import BadEmail, CustomerNotFound, check_email, profiles
from parcours.http import Injected
from parcours.messaging import public_message_id, templates

MAX_SOURCE = 512 * 1024
# A draft's email travels to its frames in their address, compressed (a frame cannot be
# posted to without a script): up to this many characters, else the text part is shown.
MAX_DRAFT_IN_URL = 8_000
# The channels a test can go on: to an address typed on the page, or, for a push or a
# Wallet message, to the device of a customer named there.
TEST_CHANNELS = ("email", "sms", "whatsapp", "push", "wallet")
DEVICE_CHANNELS = ("push", "wallet")
# An email's HTML is shown in a frame of its own, sandboxed (no script, an origin of its
# own), with the styles and images a message has.
PREVIEW_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src * data:; font-src *; "
        "frame-ancestors 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
# A template's page also shows a push's image, from wherever the template says (as the
# email frames do); nothing else of the console's policy changes.
TEMPLATE_PAGE_HEADERS = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": SECURITY_HEADERS["Content-Security-Policy"].replace(
        "img-src 'self' data:", "img-src 'self' data: https:"
    ),
}


@get("/console/templates", sync_to_thread=True)
def templates_page(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts]
) -> Response[bytes]:
    viewer = signed_in(request, console)
    with console.db.read() as conn:
        listing = templates.listing(conn)
    return page(viewer, "templates.html", listing=listing)


def _template_page(
    viewer: Viewer,
    parts: ConsoleParts,
    template_id: str,
    *,
    status: int = 200,
    error: str = "",
    source: str | None = None,
    preview: dict[str, Any] | None = None,
    test: dict[str, str] | None = None,
) -> Response[bytes]:
    with parts.db.read() as conn:
        try:
            found = templates.get(conn, template_id)
        except templates.TemplateProblem:
            return not_found(viewer, "console.templates.unknown")
    text = yaml.safe_dump(found.content, allow_unicode=True, sort_keys=True, width=100)
    channels = sorted(found.channels())
    answer = page(
        viewer,
        "template.html",
        status=status,
        item=found,
        error=error,
        source=text if source is None else source,
        preview=preview,
        channels=channels,
        test_channels=[c for c in channels if c in TEST_CHANNELS],
        languages=sorted(found.content),
        test=test or {},
    )
    answer.headers.update(TEMPLATE_PAGE_HEADERS)
    return answer


@get("/console/templates/{template_id:str}", sync_to_thread=True)
def template_page(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    template_id: FromPath[str],
    customer: FromQuery[str] = "",
    channel: FromQuery[str] = "",
    locale: FromQuery[str] = "",
) -> Response[bytes]:
    viewer = signed_in(request, console)
    preview = None
    if customer and channel:
        preview = _preview(viewer, console, template_id, customer, channel, locale)
    return _template_page(viewer, console, template_id, preview=preview)


def _render(
    parts: ConsoleParts,
    template_id: str,
    customer: str,
    channel: str,
    locale: str,
    draft: templates.MessageTemplate | None = None,
) -> templates.Rendered:
    """The template (or a draft of it) rendered for the customer, as it would go."""
    assert parts.delivery is not None
    with parts.db.read() as conn:
        customer_id = profiles.resolve(conn, customer, parts.default_region)
        template = draft or templates.get(conn, template_id)
        context = parts.delivery.preview_context(conn, customer_id, channel, {})
        return templates.render(
            template, channel, context.values, locale or context.locale, parts.brand_locale
        )


def _preview(
    viewer: Viewer,
    parts: ConsoleParts,
    template_id: str,
    customer: str,
    channel: str,
    locale: str,
    draft: str | None = None,
) -> dict[str, Any]:
    """What the preview shows: the rendered content with what the channel adds (an SMS's
    segments), where the email's frames fetch their HTML, or what went wrong. `draft`:
    the YAML being typed, previewed instead of the saved template."""
    query = {"customer": customer, "channel": channel, "locale": locale}
    try:
        template = None if draft is None else _draft_template(template_id, draft)
        rendered = _render(parts, template_id, customer, channel, locale, template)
    except CustomerNotFound:
        return {"error": viewer.t("console.customers.unknown"), **query}
    except templates.TemplateProblem as exc:
        return {"error": str(exc), **query}
    content = dict(rendered.fields)
    if channel == "sms" and isinstance(content.get("text"), str):
        counted = sms.count_segments(content["text"])
        content["segments"] = {
            "segments": counted.segments,
            "encoding": counted.encoding,
            "units": counted.units,
        }
    html_src = ""
    if "html" in content:
        frame = {"customer": customer, "locale": rendered.locale}
        if draft is not None:
            frame["draft"] = _pack(draft)
        if len(frame.get("draft", "")) <= MAX_DRAFT_IN_URL:
            html_src = f"/console/templates/{template_id}/preview.html?{urlencode(frame)}"
    return {"rendered": rendered, "content": content, "html_src": html_src, **query}


def _draft_template(template_id: str, source: str) -> templates.MessageTemplate:
    """A template's YAML as typed, checked as a save would check it (nothing saved)."""
    if len(source) > MAX_SOURCE:
        raise templates.TemplateProblem("the template is too long (at most 512 KB)")
    try:
        content = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        raise templates.TemplateProblem(str(exc)) from exc
    return templates.check(template_id, content)


def _pack(source: str) -> str:
    return base64.urlsafe_b64encode(zlib.compress(source.encode("utf-8"), 9)).decode()


def _unpack(packed: str) -> str:
    """A draft packed by `_pack`, at most MAX_SOURCE bytes once unpacked; ValueError."""
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(base64.urlsafe_b64decode(packed.encode()), MAX_SOURCE + 1)
    except (binascii.Error, zlib.error) as exc:
        raise ValueError("not a draft") from exc
    if len(raw) > MAX_SOURCE or inflater.unconsumed_tail:
        raise ValueError("too long a draft")
    return raw.decode("utf-8", errors="replace")


@get("/console/templates/{template_id:str}/preview.html", sync_to_thread=True)
def preview_html(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    template_id: FromPath[str],
    customer: FromQuery[str] = "",
    locale: FromQuery[str] = "",
    draft: FromQuery[str] = "",
) -> Response[bytes]:
    """An email's HTML as the customer would get it, for the preview's frames; of the
    draft being typed when `draft` carries it."""
    signed_in(request, console)
    try:
        template = _draft_template(template_id, _unpack(draft)) if draft else None
        rendered = _render(console, template_id, customer, "email", locale, template)
    except (CustomerNotFound, templates.TemplateProblem, ValueError) as exc:
        return Response(
            str(exc).encode(), status_code=404, media_type="text/plain", headers=PREVIEW_HEADERS
        )
    html = str(rendered.fields.get("html", ""))
    return Response(
        html.encode("utf-8"), media_type="text/html; charset=utf-8", headers=PREVIEW_HEADERS
    )


@post("/console/templates/{template_id:str}/draft", status_code=200, sync_to_thread=True)
def draft_preview(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    template_id: FromPath[str],
    data: Form,
) -> Response[bytes]:
    """As one types (HTMX): the preview of the YAML in the editor, for the customer,
    channel and language chosen above it; nothing is saved."""
    viewer = changing(request, console, "templates.edit", data)
    customer, channel = data.get("customer", "").strip(), data.get("channel", "")
    if not customer or not channel:
        return page(viewer, "_template_preview.html", preview=None, draft=True)
    preview = _preview(
        viewer,
        console,
        template_id,
        customer,
        channel,
        data.get("locale", ""),
        draft=data.get("source", ""),
    )
    answer = page(viewer, "_template_preview.html", preview=preview, draft=True)
    answer.headers.update(TEMPLATE_PAGE_HEADERS)
    return answer


@post("/console/templates/{template_id:str}", status_code=200, sync_to_thread=True)
def save_template(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    template_id: FromPath[str],
    data: Form,
) -> Response[Any]:
    viewer = changing(request, console, "templates.edit", data)
    assert viewer.session is not None
    user, now = viewer.session.user, console.clock.now_ms()
    source = data.get("source", "")
    if len(source) > MAX_SOURCE:
        return _template_page(
            viewer,
            console,
            template_id,
            status=413,
            source="",
            error=viewer.t("console.templates.too_long"),
        )
    try:
        content = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        return _template_page(
            viewer, console, template_id, status=400, source=source, error=str(exc)
        )
    try:
        with console.db.write() as conn:
            saved = templates.save(conn, template_id, content, user.email, now)
            accounts.record(
                conn,
                user.actor,
                "template.saved",
                f"template:{template_id}",
                now,
                after={"version": saved.version},
            )
    except templates.TemplateProblem as exc:
        return _template_page(
            viewer, console, template_id, status=400, source=source, error=str(exc)
        )
    return go(f"/console/templates/{template_id}")


def _address(viewer: Viewer, parts: ConsoleParts, channel: str, to: str) -> str:
    """The address a test goes to, as the channel writes it; ValueError in the viewer's
    words."""
    if channel == "email":
        try:
            return check_email(to).address
        except BadEmail:
            raise ValueError(viewer.t("console_build.templates.bad_email", to=to)) from None
    if channel in ("sms", "whatsapp"):
        try:
            number = phonenumbers.parse(to, parts.default_region)
        except phonenumbers.NumberParseException:
            number = None
        if number is None or not phonenumbers.is_valid_number(number):
            raise ValueError(viewer.t("console_build.templates.bad_phone", to=to))
        return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
    raise ValueError(viewer.t("console_build.templates.test_channels"))


def _device(
    viewer: Viewer, parts: ConsoleParts, conn: Connection, channel: str, to: str, now: int
) -> tuple[int, str]:
    """The customer named in `to` and the device of theirs a test of a push or a Wallet
    message goes to; ValueError in the viewer's words when there is none."""
    assert parts.delivery is not None
    try:
        owner = profiles.resolve(conn, to, parts.default_region)
    except CustomerNotFound:
        raise ValueError(viewer.t("console_build.templates.no_device_owner", to=to)) from None
    device = parts.delivery.test_device(conn, channel, owner, now)
    if device is None:
        raise ValueError(viewer.t(f"console_build.templates.no_{channel}_device", to=to))
    return owner, device


@post("/console/templates/{template_id:str}/test", status_code=200, sync_to_thread=True)
def send_test(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    template_id: FromPath[str],
    data: Form,
) -> Response[bytes]:
    """The saved template, filled with a customer's data, sent to an address of the
    brand's own (or, for a push or a Wallet message, to the device of a customer named
    in `to`) through delivery and the configured provider: marked as a test (counted in
    no cap, kept off the customer's timeline), audited in the send's transaction."""
    viewer = changing(request, console, "templates.edit", data)
    assert viewer.session is not None and console.delivery is not None
    user, now = viewer.session.user, console.clock.now_ms()
    customer, channel = data.get("customer", "").strip(), data.get("channel", "")
    asked = {"customer": customer, "channel": channel, "to": data.get("to", "").strip()}

    def again(status: int, error: str) -> Response[bytes]:
        return _template_page(
            viewer, console, template_id, status=status, test={**asked, "error": error}
        )

    on_device = channel in DEVICE_CHANNELS
    try:
        to = asked["to"] if on_device else _address(viewer, console, channel, asked["to"])
    except ValueError as exc:
        return again(400, str(exc))
    delivery = console.delivery
    try:
        with console.db.write() as conn:
            customer_id = profiles.resolve(conn, customer, console.default_region)
            address, audited = to, to
            if on_device:  # the device of the customer named; audited by its owner's id
                owner, address = _device(viewer, console, conn, channel, to, now)
                audited = f"cus_{owner}"
            outbox_id = delivery.test_send(
                conn, template_id, customer_id, channel, address, {}, now, history=False
            )
            accounts.record(
                conn,
                user.actor,
                "template.test_sent",
                f"template:{template_id}",
                now,
                after={
                    "channel": channel,
                    "to": audited,
                    "customer": f"cus_{customer_id}",
                    "message": public_message_id(outbox_id),
                },
            )
    except CustomerNotFound:
        return again(400, viewer.t("console.customers.unknown"))
    except (templates.TemplateProblem, ValueError) as exc:
        return again(400, str(exc))
    sent = viewer.t(
        f"console_build.templates.test_sent{'_device' if on_device else ''}",
        to=to,
        message=public_message_id(outbox_id),
    )
    return _template_page(viewer, console, template_id, status=202, test={**asked, "sent": sent})


def templates_routes() -> list[HTTPRouteHandler]:
    return [templates_page, template_page, preview_html, draft_preview, save_template, send_test]
