"""Message templates in the console: the list, a template's content per language and
channel as YAML (edited and checked before anything is saved, audited in the save's
transaction), and a preview for a real customer: an email at phone and desktop widths,
an SMS with its segments and encoding, the other channels' fields as they would go."""

from __future__ import annotations

from typing import Any

import yaml
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery

from parcours import accounts
from parcours.channels import sms
from parcours.console.access import ConsoleParts, Form, changing, go, signed_in
from parcours.console.rendering import Viewer, not_found, page
from parcours.customers import CustomerNotFound, profiles
from parcours.http import Injected
from parcours.messaging import templates

MAX_SOURCE = 512 * 1024
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
) -> Response[bytes]:
    with parts.db.read() as conn:
        try:
            found = templates.get(conn, template_id)
        except templates.TemplateProblem:
            return not_found(viewer, "console.templates.unknown")
    text = yaml.safe_dump(found.content, allow_unicode=True, sort_keys=True, width=100)
    return page(
        viewer,
        "template.html",
        status=status,
        item=found,
        error=error,
        source=text if source is None else source,
        preview=preview,
        channels=sorted(found.channels()),
        languages=sorted(found.content),
    )


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
    parts: ConsoleParts, template_id: str, customer: str, channel: str, locale: str
) -> templates.Rendered:
    assert parts.delivery is not None
    with parts.db.read() as conn:
        customer_id = profiles.resolve(conn, customer, parts.default_region)
        template = templates.get(conn, template_id)
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
) -> dict[str, Any]:
    query = {"customer": customer, "channel": channel, "locale": locale}
    try:
        rendered = _render(parts, template_id, customer, channel, locale)
    except CustomerNotFound:
        return {"error": viewer.t("console.customers.unknown"), **query}
    except templates.TemplateProblem as exc:
        return {"error": str(exc), **query}
    shown: dict[str, Any] = {"rendered": rendered, **query}
    if channel == "sms" and isinstance(rendered.fields.get("text"), str):
        shown["segments"] = sms.count_segments(rendered.fields["text"])
    return shown


@get("/console/templates/{template_id:str}/preview.html", sync_to_thread=True)
def preview_html(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    template_id: FromPath[str],
    customer: FromQuery[str] = "",
    locale: FromQuery[str] = "",
) -> Response[bytes]:
    """An email's HTML as the customer would get it, for the preview's frames."""
    signed_in(request, console)
    try:
        rendered = _render(console, template_id, customer, "email", locale)
    except (CustomerNotFound, templates.TemplateProblem) as exc:
        return Response(
            str(exc).encode(), status_code=404, media_type="text/plain", headers=PREVIEW_HEADERS
        )
    html = str(rendered.fields.get("html", ""))
    return Response(
        html.encode("utf-8"), media_type="text/html; charset=utf-8", headers=PREVIEW_HEADERS
    )


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


def templates_routes() -> list[HTTPRouteHandler]:
    return [templates_page, template_page, preview_html, save_template]
