"""Suppressed addresses, email bounces and the inbound mail that changed nothing, in the
admin API (Bearer admin key): read them, and lift a suppression (an audited change: a
`Suppression Lifted` event names the admin and the note). docs/channels.md, "The API"."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromQuery

from parcours.customers import BadEmail, check_email
from parcours.customers import profiles as customers
from parcours.http import HttpError, Injected, json_response, read_json
from parcours.messaging import Bounce, Delivery, IgnoredMail, Suppression, suppressions
from parcours.runtime.db import Database
from parcours.runtime.keys import KeyHolder
from parcours.runtime.settings import Settings
from parcours.web.api_docs import request_body
from parcours.web.errors import ERROR_FIELDS

MAX_ID = 2**63 - 1
CHANNELS = ("email", "sms", "whatsapp", "push", "wallet", "chat")


# ---- what the routes answer (their schemas in the OpenAPI document) ----------------------
# Each suppression, bounce and inbound mail is messaging's answer (messaging/suppressions.py);
# the pages around them are the API's.


class SuppressionPage(msgspec.Struct):
    suppressions: list[Suppression]
    next: str | None  # the URL of the next page, when there may be one


class BouncePage(msgspec.Struct):
    bounces: list[Bounce]
    soft_limit: int
    soft_window_days: int


class LiftBody(msgspec.Struct, forbid_unknown_fields=True):
    channel: str
    address: str
    note: str  # why it is lifted: kept in the audit event


class Lifted(msgspec.Struct):
    lifted: Suppression
    lifted_by: str
    note: str


class IgnoredPage(msgspec.Struct):
    messages: list[IgnoredMail]
    next: str | None


# ---- routes -------------------------------------------------------------------------------

_CUSTOMER = {ERROR_FIELDS: {customers.CustomerNotFound: "customer"}}


@get(
    "/api/suppressions",
    opt=_CUSTOMER,
    responses={200: ResponseSpec(SuppressionPage, description="Suppressions, newest first")},
)
async def list_suppressions(
    db: Injected[Database],
    settings: Injected[Settings],
    channel: FromQuery[str | None] = None,
    address: FromQuery[str | None] = None,
    customer: FromQuery[str | None] = None,
    limit: FromQuery[int] = 50,
    before: FromQuery[str | None] = None,
) -> Response[bytes]:
    """The addresses Parcours will not write to, newest first, each with its reason,
    when and what barred it (`source`) and the message it was about. Filter by
    `channel`, `address` or `customer` (any id); `before` is the cursor the previous
    page gave in `next`."""
    _check_limit(limit)
    channel = _channel(channel) if channel is not None else None
    wanted = None
    if address is not None:  # without a channel, an address with an @ is an email
        wanted = _address(channel or ("email" if "@" in address else "sms"), address)

    def read() -> tuple[list[Suppression], str | None]:
        with db.read() as conn:
            ids = _customer_ids(conn, settings, customer)
            return suppressions.page(
                conn,
                limit,
                channel=channel,
                address=wanted,
                customer_ids=ids,
                before=before,
            )

    rows, cursor = await asyncio.to_thread(read)
    following = None
    if cursor is not None:
        kept = {"channel": channel, "address": address, "customer": customer}
        query = {name: value for name, value in kept.items() if value is not None}
        following = "/api/suppressions?" + urlencode({**query, "limit": limit, "before": cursor})
    return json_response(SuppressionPage(rows, following))


@post(
    "/api/suppressions/lift",
    status_code=200,
    operation_class=request_body(LiftBody),
    responses={200: ResponseSpec(Lifted, description="The suppression lifted")},
)
async def lift_suppression(
    request: Request[Any, Any, Any], delivery: Injected[Delivery], admin: Injected[KeyHolder]
) -> Response[bytes]:
    """Lift a suppression: the address may be written to again and its soft bounces
    count afresh. Audited: a `Suppression Lifted` event on the customer's timeline
    names the admin and the `note` (required). 404 when the address is not suppressed."""
    body = await read_json(request, 16 * 1024, LiftBody)
    channel = _channel(body.channel)
    address = _address(channel, body.address)
    note = body.note.strip()
    if not note or len(note) > 500 or "\x00" in note:
        raise HttpError(400, "note must say why, in 1 to 500 characters", "note")
    lifted = await asyncio.to_thread(delivery.lift_suppression, channel, address, admin.name, note)
    if lifted is None:
        raise HttpError(404, f"{address} is not suppressed on {channel}", "address")
    return json_response(Lifted(lifted, admin.name, note))


@get(
    "/api/bounces",
    opt=_CUSTOMER,
    responses={200: ResponseSpec(BouncePage, description="Email bounces, newest first")},
)
async def list_bounces(
    db: Injected[Database],
    settings: Injected[Settings],
    delivery: Injected[Delivery],
    address: FromQuery[str | None] = None,
    customer: FromQuery[str | None] = None,
    limit: FromQuery[int] = 50,
) -> Response[bytes]:
    """The email bounces of an `address` or a `customer` (one of the two is required),
    newest first: hard or soft, why, from where, and whether a soft one still counts
    toward the limit (`soft_limit` within `soft_window_days` bars the address)."""
    _check_limit(limit)
    if address is None and customer is None:
        raise HttpError(400, "give an address or a customer", "address")
    wanted = _address("email", address) if address is not None else None

    def read() -> list[Bounce]:
        with db.read() as conn:
            ids = _customer_ids(conn, settings, customer)
            return suppressions.bounce_history(conn, wanted, ids, limit)

    rows = await asyncio.to_thread(read)
    rule = delivery.bounce_rule
    return json_response(BouncePage(rows, rule.soft_limit, rule.soft_window_days))


@get(
    "/api/inbound-email",
    responses={200: ResponseSpec(IgnoredPage, description="Inbound mail not acted on")},
)
async def list_ignored_mail(
    db: Injected[Database],
    limit: FromQuery[int] = 50,
    before: FromQuery[int | None] = None,
    code: FromQuery[str | None] = None,
) -> Response[bytes]:
    """Mail received on the inbound endpoint that changed nothing, newest first, with
    why (`code` and `reason`): delay warnings, auto-replies, spam, reports about no
    message of ours, replies from another address than the customer's... Kept 90 days.
    `before` is an `id` from the previous page; `code` filters."""
    _check_limit(limit)
    if before is not None and not 1 <= before <= MAX_ID:
        raise HttpError(400, f"before must be an id from 1 to {MAX_ID}", "before")

    def read() -> list[IgnoredMail]:
        with db.read() as conn:
            return suppressions.ignored_page(conn, limit, before, code)

    rows = await asyncio.to_thread(read)
    following = None
    if len(rows) == limit:
        query = {"limit": limit, "before": rows[-1].id, **({"code": code} if code else {})}
        following = "/api/inbound-email?" + urlencode(query)
    return json_response(IgnoredPage(rows, following))


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= 500:
        raise HttpError(400, "limit must be a whole number from 1 to 500", "limit")


def _channel(value: str) -> str:
    if value not in CHANNELS:
        raise HttpError(400, f"channel must be one of {', '.join(CHANNELS)}", "channel")
    return value


def _address(channel: str, value: str) -> str:
    """An email address as identities keep it (checked, lowercased); others as given."""
    if channel != "email":
        if not value or len(value) > 2000 or "\x00" in value:
            raise HttpError(400, "address must be 1 to 2000 characters", "address")
        return value
    try:
        return check_email(value).address
    except BadEmail as exc:
        raise HttpError(400, f"{value!r} is not an email address: {exc}", "address") from None


def _customer_ids(conn: Any, settings: Settings, ref: str | None) -> list[int] | None:
    if ref is None:
        return None
    customer_id = customers.resolve(conn, ref, settings.default_region)
    return customers.with_merged(conn, customer_id)


def suppression_routes() -> list[HTTPRouteHandler]:
    return [list_suppressions, lift_suppression, list_bounces, list_ignored_mail]


__all__ = ["suppression_routes"]
