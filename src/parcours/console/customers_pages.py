"""Customers in the console: search by any id or a part of a name, and a customer's page:
traits, identities, consents with their proof (and a consent recorded by hand, audited),
computed traits, segments, orders, the journeys they are in with every decision and its
reason, their messages as they were sent, and the timeline of their events, filtered by
event and period a page at a time; export, and erasure after confirmation (audited)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery
from sqlalchemy import Connection

from parcours import accounts, commerce, messaging
from parcours.console import commerce_pages
from parcours.console.access import ConsoleParts, Form, Refused, changing, go, signed_in
from parcours.console.counts import counted
from parcours.console.outbox_pages import words_for
from parcours.console.rendering import Viewer, not_found, page
from parcours.customers import CHANNELS, PURPOSES, CustomerNotFound, consent, profiles
from parcours.http import Injected
from parcours.journeys import versions
from parcours.segments import catalog

EVENTS_PAGE = 50
MESSAGES_SHOWN = 20
ORDERS_SHOWN = 20


@dataclass(frozen=True)
class TimelineFilter:
    """What the timeline shows: events of one name or type, in a period of days (the
    brand's time zone, both days included), older than the `before` cursor."""

    event: str = ""
    since: str = ""  # YYYY-MM-DD
    until: str = ""
    before: int | None = None

    @classmethod
    def of(cls, event: str, since: str, until: str, before: int | None) -> TimelineFilter:
        return cls(event.strip()[:200], _day(since), _day(until), before)

    def query(self, **changed: Any) -> str:
        values = {**vars(self), **changed}
        return urlencode({k: v for k, v in values.items() if v not in ("", None)})

    def bounds(self, timezone: str) -> tuple[int | None, int | None]:
        """The period in ms: from the start of `since` to the end of `until`."""
        zone = ZoneInfo(timezone)

        def start_of(day: str) -> int:
            moment = datetime.combine(date.fromisoformat(day), time(), tzinfo=zone)
            return int(moment.timestamp() * 1000)

        since = start_of(self.since) if self.since else None
        until = None
        if self.until:
            next_day = date.fromisoformat(self.until) + timedelta(days=1)
            until = start_of(next_day.isoformat())
        return since, until


def _day(value: str) -> str:
    """A day as a date field sends it, or nothing when it is not one."""
    try:
        return date.fromisoformat(value.strip()).isoformat() if value.strip() else ""
    except ValueError:
        return ""


def _timeline(conn: Connection, customer_id: int, wanted: TimelineFilter, timezone: str) -> Any:
    since, until = wanted.bounds(timezone)
    return profiles.event_page(
        conn,
        customer_id,
        limit=EVENTS_PAGE,
        before=wanted.before,
        named=wanted.event or None,
        since=since,
        until=until,
    )


@get("/console/customers", sync_to_thread=True)
def customers_page(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], q: FromQuery[str] = ""
) -> Response[bytes]:
    viewer = signed_in(request, console)
    with console.db.read() as conn:
        matches = profiles.search(conn, q, console.default_region) if q.strip() else []
        total = counted(conn, "customers", profiles.count_customers)
    return page(viewer, "customers.html", q=q, matches=matches, total=total)


def _customer_page(
    viewer: Viewer,
    parts: ConsoleParts,
    customer_id: int,
    wanted: TimelineFilter,
    status: int = 200,
    error: str = "",
    consent_error: str = "",
) -> Response[Any]:
    with parts.db.read() as conn:
        live = profiles.live_customers(conn, [customer_id])
        if customer_id not in live:
            return not_found(viewer, "console.customers.unknown")
        if live[customer_id] != customer_id:
            return go(f"/console/customers/{live[customer_id]}")
        profile = profiles.profile(conn, customer_id)
        events = _timeline(conn, customer_id, wanted, viewer.timezone)
        segments = catalog.segments_of(conn, customer_id)
        runs = versions.runs_of(conn, customer_id)
        decisions = versions.trace(conn, customer_id)
        messages = messaging.outbox_page(conn, MESSAGES_SHOWN, None, [customer_id])
        orders = commerce_pages.orders_of(conn, parts, customer_id, ORDERS_SHOWN)
        reviews = commerce.reviews_list(conn, customer_id=customer_id, limit=ORDERS_SHOWN)
        stock_requests = commerce.stock_requests(conn, customer_id=customer_id)
    return page(
        viewer,
        "customer.html",
        status=status,
        error=error,
        consent_error=consent_error,
        customer_id=customer_id,
        profile=profile,
        events=events,
        wanted=wanted,
        segments=segments,
        runs=runs,
        decisions=decisions,
        messages=messages,
        orders=orders,
        orders_shown=ORDERS_SHOWN,
        reviews=reviews,
        stock_requests=stock_requests,
        channels=CHANNELS,
        purposes=PURPOSES,
        **words_for(viewer),
    )


@get("/console/customers/{customer_id:int}", sync_to_thread=True)
def customer_page(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    customer_id: FromPath[int],
    before: FromQuery[int | None] = None,
    event: FromQuery[str] = "",
    since: FromQuery[str] = "",
    until: FromQuery[str] = "",
) -> Response[Any]:
    wanted = TimelineFilter.of(event, since, until, before)
    return _customer_page(signed_in(request, console), console, customer_id, wanted)


@get("/console/customers/{customer_id:int}/timeline", sync_to_thread=True)
def customer_timeline(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    customer_id: FromPath[int],
    before: FromQuery[int | None] = None,
    event: FromQuery[str] = "",
    since: FromQuery[str] = "",
    until: FromQuery[str] = "",
) -> Response[Any]:
    """The timeline's section alone, filtered (what HTMX puts in place of the one shown)."""
    viewer = signed_in(request, console)
    wanted = TimelineFilter.of(event, since, until, before)
    with console.db.read() as conn:
        if customer_id not in profiles.live_customers(conn, [customer_id]):
            return not_found(viewer, "console.customers.unknown")
        events = _timeline(conn, customer_id, wanted, viewer.timezone)
    return page(
        viewer, "customer_timeline.html", customer_id=customer_id, events=events, wanted=wanted
    )


@post("/console/customers/{customer_id:int}/consent", status_code=200, sync_to_thread=True)
def consent_by_hand(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    customer_id: FromPath[int],
    data: Form,
) -> Response[Any]:
    """A consent change a support agent or an owner records for the customer, with its
    reason (required): a `Consent Updated` in the log with its proof, and the audit entry
    in the same transaction."""
    viewer = changing(request, console, "customers.change", data)
    assert viewer.session is not None and console.delivery is not None
    actor, now = viewer.session.user, console.clock.now_ms()
    with console.db.read() as conn:
        live = profiles.live_customers(conn, [customer_id])
    if live.get(customer_id) != customer_id:
        return not_found(viewer, "console.customers.unknown")
    channel, purpose = data.get("channel", ""), data.get("purpose", "")
    status, reason = data.get("status", ""), data.get("reason", "")
    ref = profiles.public_id(customer_id)

    def audited(conn: Connection, message_id: str) -> None:
        accounts.record(
            conn,
            actor.actor,
            "customer.consent_recorded",
            ref,
            now,
            after={
                "channel": channel,
                "purpose": purpose,
                "status": status,
                "reason": " ".join(reason.split()),
                "event": message_id,
            },
        )

    try:
        profiles.record_consent_by_hand(
            console.db,
            console.delivery.reactions,
            customer_id,
            channel=channel,
            purpose=purpose,
            status=status,
            reason=reason,
            recorded_by=actor.email,
            now_ms=now,
            also=audited,
        )
    except consent.ConsentError as exc:
        key = "support.consent.reason_needed" if exc.field == "reason" else "support.consent.bad"
        return _customer_page(
            viewer, console, customer_id, TimelineFilter(), status=400, consent_error=viewer.t(key)
        )
    return go(f"/console/customers/{customer_id}#h-consents")


@get("/console/customers/{customer_id:int}/export", sync_to_thread=True)
def export(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], customer_id: FromPath[int]
) -> Response[bytes]:
    """Everything Parcours holds about the person, as a JSON file (audited)."""
    viewer = signed_in(request, console)
    if not viewer.may("customers.export"):
        raise Refused(viewer, "accounts.not_allowed")
    assert viewer.session is not None and console.people is not None
    ref, now = profiles.public_id(customer_id), console.clock.now_ms()
    try:
        document = profiles.export(console.db, console.people, ref, console.default_region)
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
            TimelineFilter(),
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
    return [customers_page, customer_page, customer_timeline, consent_by_hand, export, erase]
