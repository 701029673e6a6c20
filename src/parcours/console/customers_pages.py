"""Customers in the console: search by any id or a part of a name, and a customer's page:
traits, identities, consents with their proof, computed traits, segments, the journeys
they are in with every decision and its reason, their messages as they were sent, and the
timeline of their events; export, and erasure after confirmation (audited)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery
from sqlalchemy import Connection

from parcours import accounts, messaging
from parcours.console.access import ConsoleParts, Form, Refused, changing, go, signed_in
from parcours.console.rendering import Viewer, not_found, page
from parcours.customers import CustomerNotFound, profiles
from parcours.http import Injected
from parcours.journeys import versions
from parcours.segments import catalog

EVENTS_PAGE = 50
MESSAGES_SHOWN = 20


@get("/console/customers", sync_to_thread=True)
def customers_page(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], q: FromQuery[str] = ""
) -> Response[bytes]:
    viewer = signed_in(request, console)
    with console.db.read() as conn:
        matches = profiles.search(conn, q, console.default_region) if q.strip() else []
        total = profiles.count_customers(conn)
    return page(viewer, "customers.html", q=q, matches=matches, total=total)


def _customer_page(
    viewer: Viewer,
    parts: ConsoleParts,
    customer_id: int,
    before: int | None,
    status: int = 200,
    error: str = "",
) -> Response[Any]:
    with parts.db.read() as conn:
        live = profiles.live_customers(conn, [customer_id])
        if customer_id not in live:
            return not_found(viewer, "console.customers.unknown")
        if live[customer_id] != customer_id:
            return go(f"/console/customers/{live[customer_id]}")
        profile = profiles.profile(conn, customer_id)
        events = profiles.event_page(conn, customer_id, limit=EVENTS_PAGE, before=before)
        segments = catalog.segments_of(conn, customer_id)
        runs = versions.runs_of(conn, customer_id)
        decisions = versions.trace(conn, customer_id)
        messages = messaging.outbox_page(conn, MESSAGES_SHOWN, None, [customer_id])
    return page(
        viewer,
        "customer.html",
        status=status,
        error=error,
        customer_id=customer_id,
        profile=profile,
        events=events,
        segments=segments,
        runs=runs,
        decisions=decisions,
        messages=messages,
    )


@get("/console/customers/{customer_id:int}", sync_to_thread=True)
def customer_page(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    customer_id: FromPath[int],
    before: FromQuery[int | None] = None,
) -> Response[Any]:
    return _customer_page(signed_in(request, console), console, customer_id, before)


@get("/console/customers/{customer_id:int}/export", sync_to_thread=True)
def export(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], customer_id: FromPath[int]
) -> Response[bytes]:
    """Everything Parcours holds about the person, as a JSON file (audited)."""
    viewer = signed_in(request, console)
    if not viewer.may("customers.export"):
        raise Refused(viewer, "accounts.not_allowed")
    assert viewer.session is not None
    ref, now = profiles.public_id(customer_id), console.clock.now_ms()
    try:
        document = profiles.export(console.db, ref, console.default_region)
    except CustomerNotFound:
        return not_found(viewer, "console.customers.unknown")
    with console.db.write() as conn:
        accounts.record(conn, viewer.session.user.actor, "customer.exported", ref, now)
    return Response(
        msgspec.json.encode(document),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="{ref}.json"',
            "Cache-Control": "no-store",
        },
    )


@post("/console/customers/{customer_id:int}/erase", status_code=200, sync_to_thread=True)
def erase(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    customer_id: FromPath[int],
    data: Form,
) -> Response[Any]:
    """Erase the person once the viewer has typed their id to confirm (audited)."""
    viewer = changing(request, console, "customers.erase", data)
    assert viewer.session is not None and console.people is not None
    ref, now, actor = profiles.public_id(customer_id), console.clock.now_ms(), viewer.session.user
    if data.get("confirm", "").strip() != ref:
        return _customer_page(
            viewer,
            console,
            customer_id,
            None,
            status=400,
            error=viewer.t("console.customers.confirm_wrong", id=ref),
        )

    def audited(conn: Connection, erased: profiles.Erasure) -> None:
        accounts.record(
            conn,
            actor.actor,
            "customer.erased",
            ref,
            now,
            after={"events": erased.events, "identities": erased.identities},
        )

    try:
        profiles.erase(
            console.db,
            console.people,
            ref,
            console.default_region,
            now,
            f"console:{actor.email}",
            also=audited,
        )
    except CustomerNotFound:
        return not_found(viewer, "console.customers.unknown")
    return go(f"/console/customers?q={ref}")


def customers_routes() -> list[HTTPRouteHandler]:
    return [customers_page, customer_page, export, erase]
