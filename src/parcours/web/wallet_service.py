"""Apple's Wallet web service, the one protocol behind both the pass web service and the
Wallet Orders web service: register and unregister a device for a pass (or order), the
ones changed since a tag, the latest signed package (with Last-Modified and 304), the
devices' logs; each call about one pass or order authenticated by its own token
(`Authorization: ApplePass <token>`, or `AppleOrder <token>`) (docs/channels.md)."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.enums import MediaType
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.params import FromPath
from sqlalchemy import Connection

from parcours.http import (
    HttpError,
    Injected,
    json_response,
    read_body,
    request_body,
    whole_number,
)
from parcours.messaging import Delivery, WalletOrder, WalletPass, passes
from parcours.runtime.clock import Clock
from parcours.runtime.db import Database

log = logging.getLogger(__name__)
_decode = msgspec.json.Decoder().decode

# What the web service hands out: a pass, or a Wallet order.
Packaged = WalletPass | WalletOrder


class Registration(msgspec.Struct):
    """What a device sends when it adds a pass or an order."""

    pushToken: str


class DeviceLog(msgspec.Struct):
    """What Wallet on a device reports going wrong (a bare list is taken too)."""

    logs: list[str]


@dataclass(frozen=True)
class WalletService:
    """What differs between the pass web service and the orders one."""

    base: str  # /wallet (passes) | /wallet/orders: the webServiceURL's path
    packages: str  # passes | orders: where the latest one is, {base}/v1/<packages>/...
    scheme: str  # ApplePass | AppleOrder
    since_parameter: str  # passesUpdatedSince | ordersModifiedSince
    list_key: str  # serialNumbers | orderIdentifiers
    tag_key: str  # lastUpdated | lastModified
    unknown_status: int  # what an unknown pass (401, as Apple asks) or order (404) gets
    media_type: str
    check_type: Callable[[Delivery, str], Any]  # raises HttpError (404) for another type
    find: Callable[[Connection, str], Packaged | None]
    changed_for_device: Callable[[Connection, str, int | None], list[tuple[str, int]]]
    build: Callable[[Delivery, Packaged], bytes]

    def authorised(
        self, request: Request[Any, Any, Any], db: Database, identifier: str
    ) -> Packaged:
        """The pass or order, when the request carries its token."""
        with db.read() as conn:
            record = self.find(conn, identifier)
        if record is None:
            raise HttpError(self.unknown_status, "unknown pass or order", "authorization")
        if not carries_token(request, self.scheme, record.auth_token):
            raise HttpError(401, "wrong authentication token", "authorization")
        return record

    def routes(self) -> list[HTTPRouteHandler]:
        """The web service's endpoints under `base`, as Apple calls them."""
        service = self
        registration = f"{self.base}/v1/devices/{{device:str}}/registrations/{{kind:str}}"
        one = registration + "/{identifier:str}"

        @post(
            one,
            status_code=201,
            media_type=MediaType.TEXT,
            operation_class=request_body(Registration),
            responses={200: ResponseSpec(None, description="The device had it already")},
        )
        async def register_device(
            request: Request[Any, Any, Any],
            device: FromPath[str],
            kind: FromPath[str],
            identifier: FromPath[str],
            db: Injected[Database],
            clock: Injected[Clock],
            delivery: Injected[Delivery],
        ) -> Response[bytes]:
            service.check_type(delivery, kind)
            return await register(service, request, db, clock, device, identifier)

        @delete(one, status_code=200, media_type=MediaType.TEXT)
        async def unregister_device(
            request: Request[Any, Any, Any],
            device: FromPath[str],
            kind: FromPath[str],
            identifier: FromPath[str],
            db: Injected[Database],
            delivery: Injected[Delivery],
        ) -> Response[bytes]:
            service.check_type(delivery, kind)
            return await unregister(service, request, db, device, identifier)

        @get(
            registration,
            responses={
                200: ResponseSpec(dict[str, Any], description="The ones changed, and a tag"),
                204: ResponseSpec(None, description="None changed"),
            },
        )
        async def changed(
            request: Request[Any, Any, Any],
            device: FromPath[str],
            kind: FromPath[str],
            db: Injected[Database],
            delivery: Injected[Delivery],
        ) -> Response[bytes]:
            service.check_type(delivery, kind)
            return await changed_since(service, request, db, device)

        @get(
            f"{self.base}/v1/{self.packages}/{{kind:str}}/{{identifier:str}}",
            media_type=self.media_type,
            responses={304: ResponseSpec(None, description="The device's copy is the latest")},
        )
        async def latest_package(
            request: Request[Any, Any, Any],
            kind: FromPath[str],
            identifier: FromPath[str],
            db: Injected[Database],
            delivery: Injected[Delivery],
        ) -> Response[bytes]:
            service.check_type(delivery, kind)
            return await latest(service, request, db, delivery, identifier)

        @post(
            f"{self.base}/v1/log",
            status_code=200,
            media_type=MediaType.TEXT,
            operation_class=request_body(DeviceLog),
        )
        async def log_lines(request: Request[Any, Any, Any]) -> Response[bytes]:
            return await device_log(request)

        return [register_device, unregister_device, changed, latest_package, log_lines]


async def register(
    service: WalletService,
    request: Request[Any, Any, Any],
    db: Database,
    clock: Clock,
    device: str,
    identifier: str,
) -> Response[bytes]:
    """A device added the pass or order: 201, or 200 when it had already."""
    record = await asyncio.to_thread(service.authorised, request, db, identifier)
    push_token = push_token_of(await read_body(request, 16 * 1024))

    def write() -> bool:
        with db.write() as conn:
            customer = record.customer_id
            return passes.register(conn, device, identifier, push_token, customer, clock.now_ms())

    created = await asyncio.to_thread(write)
    return Response(b"", status_code=201 if created else 200, media_type=MediaType.TEXT)


async def unregister(
    service: WalletService,
    request: Request[Any, Any, Any],
    db: Database,
    device: str,
    identifier: str,
) -> Response[bytes]:
    await asyncio.to_thread(service.authorised, request, db, identifier)

    def write() -> None:
        with db.write() as conn:
            passes.unregister(conn, device, identifier)

    await asyncio.to_thread(write)
    return Response(b"", status_code=200, media_type=MediaType.TEXT)


async def changed_since(
    service: WalletService, request: Request[Any, Any, Any], db: Database, device: str
) -> Response[bytes]:
    """The device's passes or orders changed since the tag it was last given (our tags
    are milliseconds); 204 when none has."""
    since_text = request.query_params.get(service.since_parameter)
    since = whole_number(since_text) if since_text else None

    def read() -> list[tuple[str, int]]:
        with db.read() as conn:
            return service.changed_for_device(conn, device, since)

    changed = await asyncio.to_thread(read)
    if not changed:
        return Response(b"", status_code=204)
    return json_response(
        {
            service.list_key: [identifier for identifier, _ in changed],
            service.tag_key: str(max(tag for _, tag in changed)),
        }
    )


async def latest(
    service: WalletService,
    request: Request[Any, Any, Any],
    db: Database,
    delivery: Delivery,
    identifier: str,
) -> Response[bytes]:
    """The latest signed pass or order, or 304 when the device's copy is it."""
    record = await asyncio.to_thread(service.authorised, request, db, identifier)
    if not_modified(request, record.updated_at):
        return Response(b"", status_code=304)
    return package_response(service.build(delivery, record), service.media_type, record)


async def device_log(request: Request[Any, Any, Any]) -> Response[bytes]:
    """What Wallet on a device reports going wrong with our web service (`{"logs": [...]}`
    as Apple documents it, or a bare list), into our log, cut short."""
    try:
        document = _decode(await read_body(request, 64 * 1024))
    except (msgspec.DecodeError, RecursionError):  # not JSON, or deeper than the decoder goes
        document = []
    lines = document.get("logs", []) if isinstance(document, dict) else document
    if isinstance(lines, list):
        for line in lines[:50]:
            log.warning("Apple Wallet: %s", str(line)[:500])
    return Response(b"", status_code=200, media_type=MediaType.TEXT)


def package_response(content: bytes, media_type: str, record: Packaged) -> Response[bytes]:
    """A signed pass or order, with its Last-Modified date."""
    headers = {"Last-Modified": formatdate(record.updated_at / 1000, usegmt=True)}
    return Response(content, media_type=media_type, headers=headers)


def not_modified(request: Request[Any, Any, Any], updated_at: int) -> bool:
    """The device's copy (If-Modified-Since) is the latest (HTTP dates count seconds)."""
    since = request.headers.get("if-modified-since")
    if not since:
        return False
    try:
        seen = parsedate_to_datetime(since).timestamp() * 1000
    except (TypeError, ValueError):
        return False
    return updated_at // 1000 * 1000 <= seen


def carries_token(request: Request[Any, Any, Any], scheme: str, token: str) -> bool:
    """`Authorization: <scheme> <token>`, compared in constant time."""
    header = request.headers.get("authorization", "")
    return hmac.compare_digest(header.encode(), f"{scheme} {token}".encode())


def push_token_of(body: bytes) -> str:
    """The `pushToken` of a device registration's body."""
    try:
        document = _decode(body)
    except (msgspec.DecodeError, RecursionError):  # not JSON, or deeper than the decoder goes
        document = {}
    push_token = document.get("pushToken") if isinstance(document, dict) else None
    if not isinstance(push_token, str) or not push_token:
        raise HttpError(400, "pushToken is required", "pushToken")
    return push_token
