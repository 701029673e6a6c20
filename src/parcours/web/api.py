"""The JSON admin API (Bearer admin key): customers, their events and consents."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery

from parcours.customers import api as customers
from parcours.customers.consent import CHANNELS, CONSENT_EVENT, PURPOSES
from parcours.ingest.http import MAX_INT64, HttpError, json_response, read_json, services_of
from parcours.ingest.model import EventError, parse_event
from parcours.runtime.clock import iso
from parcours.runtime.definitions import DefinitionError
from parcours.runtime.keys import KeyHolder
from parcours.segments import api as segments
from parcours.services import Services

_encode = msgspec.json.Encoder().encode


def require_admin(request: Request[Any, Any, Any]) -> tuple[Services, KeyHolder]:
    """The services and the admin key acting: its person edits, approves."""
    services = services_of(request)
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise HttpError(401, "an admin key is required: Authorization: Bearer KEY", "authorization")
    holder = services.keys.holder("admin", key.strip())
    if holder is None:
        raise HttpError(401, "unknown or revoked admin key", "authorization")
    return services, holder


def problems_response(exc: DefinitionError, message: str) -> Response[bytes]:
    """400 with every problem of a definition (journey, segment), each with its line."""
    return problems_error(exc, message).response()


def problems_error(exc: DefinitionError, message: str) -> HttpError:
    """A definition's problems in the error envelope: `error.problems` lists every one
    with its line; `message` says what is not valid and the first problem, `error.field`
    names its place."""
    problems = [{"line": p.line, "path": p.path, "message": p.message} for p in exc.problems]
    first = exc.problems[0] if exc.problems else None
    said = message if first is None else f"{message}: {first}"
    if len(exc.problems) > 1:
        said += f" (and {len(exc.problems) - 1} more)"
    return HttpError(400, said, first.path if first else "", problems)


def resolve_customer(services: Services, conn: Any, ref: str, field: str = "id") -> int:
    """The customer behind any id, or a 404 naming the field that held it."""
    try:
        return customers.resolve(conn, ref, services.settings.default_region)
    except customers.CustomerNotFound as exc:
        raise HttpError(404, str(exc), field) from None


# Errors are raised as HttpError; the application's handlers answer them (web/errors.py).


@get("/api/customers/{ref:str}", sync_to_thread=True)
def get_customer(request: Request[Any, Any, Any], ref: FromPath[str]) -> Response[bytes]:
    services, _ = require_admin(request)
    with services.db.read() as conn:
        customer_id = resolve_customer(services, conn, ref)
        return json_response(
            {
                **customers.profile(conn, customer_id),
                "segments": segments.segments_of(conn, customer_id),
            }
        )


@get("/api/customers/{ref:str}/events", sync_to_thread=True)
def get_customer_events(
    request: Request[Any, Any, Any],
    ref: FromPath[str],
    limit: FromQuery[int] = 50,
    before: FromQuery[int | None] = None,
) -> Response[bytes]:
    services, _ = require_admin(request)
    if not 1 <= limit <= 500:
        raise HttpError(400, "limit must be between 1 and 500", "limit")
    if before is not None and not 0 < before <= MAX_INT64:
        raise HttpError(400, "before is the next_before of a previous page", "before")
    with services.db.read() as conn:
        customer_id = resolve_customer(services, conn, ref)
        page, cursor = customers.event_page(conn, customer_id, limit=limit, before=before)
    return json_response(
        {"customer_id": customers.public_id(customer_id), "events": page, "next_before": cursor}
    )


class _ConsentRequest(msgspec.Struct, forbid_unknown_fields=True):
    channel: str
    purpose: str
    status: str
    source: str
    wording: str | None = None
    wording_version: str | None = None
    occurred_at: str | None = None


@post("/api/customers/{ref:str}/consents")
async def record_consent(request: Request[Any, Any, Any], ref: FromPath[str]) -> Response[bytes]:
    """Record a consent change; it is appended to the log as a `Consent Updated` event."""
    services, _ = require_admin(request)
    body = await read_json(request, 32 * 1024, _ConsentRequest)
    with services.db.read() as conn:
        customer_id = resolve_customer(services, conn, ref)
    now = services.clock.now_ms()
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
    await services.writer.append([event])
    with services.db.read() as conn:
        states = customers.current_consents(conn, customer_id)
    return json_response(
        {
            "customer_id": customers.public_id(customer_id),
            "messageId": event.message_id,
            "consents": [
                {
                    "channel": s.channel,
                    "purpose": s.purpose,
                    "status": s.status,
                    "at": iso(s.at),
                }
                for s in states
            ],
        },
        201,
    )


def admin_routes() -> list[HTTPRouteHandler]:
    return [get_customer, get_customer_events, record_consent]


__all__ = ["CHANNELS", "PURPOSES", "admin_routes"]
