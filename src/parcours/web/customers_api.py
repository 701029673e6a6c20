"""The JSON admin API (Bearer admin key): customers, their events and consents."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery

from parcours.customers import CHANNELS, CONSENT_EVENT, PURPOSES
from parcours.customers import profiles as customers
from parcours.http import (
    MAX_INT64,
    HttpError,
    Injected,
    read_json,
)
from parcours.log import Appender
from parcours.runtime.clock import Clock, iso
from parcours.runtime.db import Database
from parcours.runtime.settings import Settings
from parcours.segments import catalog as segments
from parcours.tracking import EventError, parse_event
from parcours.web.api_docs import request_body

_encode = msgspec.json.Encoder().encode


def resolve_customer(settings: Settings, conn: Any, ref: str) -> int:
    """The customer behind any id (CustomerNotFound: 404, web/errors.py)."""
    return customers.resolve(conn, ref, settings.default_region)


# Errors are raised (HttpError, or a domain's error); the application's handlers answer
# them (web/errors.py).


class ConsentState(msgspec.Struct):
    channel: str
    purpose: str
    status: str
    at: str | None


class ConsentRecorded(msgspec.Struct):
    """The change appended (its messageId), and the customer's consents now."""

    customer_id: str
    messageId: str
    consents: list[ConsentState]


@get("/api/customers/{ref:str}", sync_to_thread=True)
def get_customer(
    db: Injected[Database], settings: Injected[Settings], ref: FromPath[str]
) -> dict[str, Any]:
    """The profile: traits, identities, consents, computed traits, merged ids, segments."""
    with db.read() as conn:
        customer_id = resolve_customer(settings, conn, ref)
        return {
            **msgspec.to_builtins(customers.profile(conn, customer_id)),
            "segments": segments.segments_of(conn, customer_id),
        }


@get("/api/customers/{ref:str}/events", sync_to_thread=True)
def get_customer_events(
    db: Injected[Database],
    settings: Injected[Settings],
    ref: FromPath[str],
    limit: FromQuery[int] = 50,
    before: FromQuery[int | None] = None,
) -> customers.EventPage:
    """The customer's events, newest first, a page at a time."""
    if not 1 <= limit <= 500:
        raise HttpError(400, "limit must be between 1 and 500", "limit")
    if before is not None and not 0 < before <= MAX_INT64:
        raise HttpError(400, "before is the next_before of a previous page", "before")
    with db.read() as conn:
        customer_id = resolve_customer(settings, conn, ref)
        return customers.event_page(conn, customer_id, limit=limit, before=before)


class _ConsentRequest(msgspec.Struct, forbid_unknown_fields=True):
    channel: str
    purpose: str
    status: str
    source: str
    wording: str | None = None
    wording_version: str | None = None
    occurred_at: str | None = None


@post(
    "/api/customers/{ref:str}/consents",
    status_code=201,
    operation_class=request_body(_ConsentRequest),
)
async def record_consent(
    request: Request[Any, Any, Any],
    ref: FromPath[str],
    db: Injected[Database],
    settings: Injected[Settings],
    clock: Injected[Clock],
    appender: Injected[Appender],
) -> ConsentRecorded:
    """Record a consent change; it is appended to the log as a `Consent Updated` event."""
    body = await read_json(request, 32 * 1024, _ConsentRequest)
    with db.read() as conn:
        customer_id = resolve_customer(settings, conn, ref)
    now = clock.now_ms()
    document = {
        "type": "track",
        "event": CONSENT_EVENT,
        "timestamp": body.occurred_at or iso(now),
        "properties": {
            "channel": body.channel,
            "purpose": body.purpose,
            "status": body.status,
            "source": body.source,
            "wording": body.wording,
            "wording_version": body.wording_version,
        },
    }
    try:
        event = parse_event(
            _encode(document), source="admin", received_at=now, identity_required=False
        )
    except EventError as exc:
        field = exc.field.removeprefix("properties.")
        field = "occurred_at" if field == "timestamp" else field
        raise HttpError(400, f"{field}: {exc.reason}" if field else exc.reason, field) from None
    event.customer_id = customer_id
    await appender.append([event])
    with db.read() as conn:
        states = customers.current_consents(conn, customer_id)
    return ConsentRecorded(
        customers.public_id(customer_id),
        event.message_id,
        [ConsentState(s.channel, s.purpose, s.status, iso(s.at)) for s in states],
    )


def admin_routes() -> list[HTTPRouteHandler]:
    return [get_customer, get_customer_events, record_consent]


__all__ = ["CHANNELS", "PURPOSES", "admin_routes"]
