"""The JSON admin API (Bearer admin key): customers, their events and consents."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery

from parcours.customers import api as customers
from parcours.customers.consent import CHANNELS, CONSENT_EVENT, PURPOSES
from parcours.ingest.http import HttpError, json_response, read_body, services_of
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
    return json_response(
        {
            "success": False,
            "error": {
                "message": message,
                "problems": [
                    {"line": p.line, "path": p.path, "message": p.message} for p in exc.problems
                ],
            },
        },
        400,
    )


@get("/api/customers/{ref:str}", sync_to_thread=True)
def get_customer(request: Request[Any, Any, Any], ref: FromPath[str]) -> Response[bytes]:
    try:
        services, _ = require_admin(request)
        with services.db.read() as conn:
            customer_id = customers.resolve(conn, ref, services.settings.default_region)
            return json_response(
                {
                    **customers.profile(conn, customer_id),
                    "segments": segments.segments_of(conn, customer_id),
                }
            )
    except HttpError as exc:
        return exc.response()
    except customers.CustomerNotFound as exc:
        return HttpError(404, str(exc), "id").response()


@get("/api/customers/{ref:str}/events", sync_to_thread=True)
def get_customer_events(
    request: Request[Any, Any, Any],
    ref: FromPath[str],
    limit: FromQuery[int] = 50,
    before: FromQuery[int | None] = None,
) -> Response[bytes]:
    try:
        services, _ = require_admin(request)
        if not 1 <= limit <= 500:
            raise HttpError(400, "limit must be between 1 and 500", "limit")
        with services.db.read() as conn:
            customer_id = customers.resolve(conn, ref, services.settings.default_region)
            page, cursor = customers.event_page(conn, customer_id, limit=limit, before=before)
        return json_response(
            {"customer_id": customers.public_id(customer_id), "events": page, "next_before": cursor}
        )
    except HttpError as exc:
        return exc.response()
    except customers.CustomerNotFound as exc:
        return HttpError(404, str(exc), "id").response()


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
    try:
        services, _ = require_admin(request)
        raw = await read_body(request, 32 * 1024)
        try:
            body = msgspec.json.decode(raw, type=_ConsentRequest)
        except msgspec.ValidationError as exc:
            raise HttpError(400, str(exc)) from None
        except msgspec.DecodeError as exc:
            raise HttpError(400, f"not valid JSON: {exc}", "body") from None
        with services.db.read() as conn:
            customer_id = customers.resolve(conn, ref, services.settings.default_region)
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
            raise HttpError(400, str(exc), exc.field.removeprefix("properties.")) from None
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
    except HttpError as exc:
        return exc.response()
    except customers.CustomerNotFound as exc:
        return HttpError(404, str(exc), "id").response()


def admin_routes() -> list[HTTPRouteHandler]:
    return [get_customer, get_customer_events, record_consent]


__all__ = ["CHANNELS", "PURPOSES", "admin_routes"]
