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
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from sqlalchemy import Connection

from parcours.ingest.http import HttpError, json_response, read_body, services_of, whole_number
from parcours.messaging import passes
from parcours.services import Services

log = logging.getLogger(__name__)
_decode = msgspec.json.Decoder().decode


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
    check_type: Callable[[Services, str], Any]  # raises HttpError (404) for another type
    find: Callable[[Connection, str], dict[str, Any] | None]
    changed_for_device: Callable[[Connection, str, int | None], list[tuple[str, int]]]
    build: Callable[[Services, dict[str, Any]], bytes]

    def authorised(
        self, request: Request[Any, Any, Any], services: Services, identifier: str
    ) -> dict[str, Any]:
        """The pass or order, when the request carries its token."""
        with services.db.read() as conn:
            record = self.find(conn, identifier)
        if record is None:
            raise HttpError(self.unknown_status, "unknown pass or order", "authorization")
        if not carries_token(request, self.scheme, record["auth_token"]):
            raise HttpError(401, "wrong authentication token", "authorization")
        return record

    def routes(self) -> list[HTTPRouteHandler]:
        """The web service's endpoints under `base`, as Apple calls them."""
        service = self
        registration = f"{self.base}/v1/devices/{{device:str}}/registrations/{{kind:str}}"
        one = registration + "/{identifier:str}"

        @post(one, status_code=201)
        async def register_device(
            request: Request[Any, Any, Any],
            device: FromPath[str],
            kind: FromPath[str],
            identifier: FromPath[str],
        ) -> Response[bytes]:
            return await register(service, request, device, kind, identifier)

        @delete(one, status_code=200)
        async def unregister_device(
            request: Request[Any, Any, Any],
            device: FromPath[str],
            kind: FromPath[str],
            identifier: FromPath[str],
        ) -> Response[bytes]:
            return await unregister(service, request, device, kind, identifier)

        @get(registration)
        async def changed(
            request: Request[Any, Any, Any], device: FromPath[str], kind: FromPath[str]
        ) -> Response[bytes]:
            return await changed_since(service, request, device, kind)

        @get(f"{self.base}/v1/{self.packages}/{{kind:str}}/{{identifier:str}}")
        async def latest_package(
            request: Request[Any, Any, Any], kind: FromPath[str], identifier: FromPath[str]
        ) -> Response[bytes]:
            return await latest(service, request, kind, identifier)

        @post(f"{self.base}/v1/log", status_code=200)
        async def log_lines(request: Request[Any, Any, Any]) -> Response[bytes]:
            return await device_log(request)

        return [register_device, unregister_device, changed, latest_package, log_lines]


async def register(
    service: WalletService,
    request: Request[Any, Any, Any],
    device: str,
    kind: str,
    identifier: str,
) -> Response[bytes]:
    """A device added the pass or order: 201, or 200 when it had already."""
    try:
        services = services_of(request)
        service.check_type(services, kind)
        record = await asyncio.to_thread(service.authorised, request, services, identifier)
        push_token = push_token_of(await read_body(request, 16 * 1024))

        def write() -> bool:
            with services.db.write() as conn:
                now = services.clock.now_ms()
                customer = record["customer_id"]
                return passes.register(conn, device, identifier, push_token, customer, now)

        created = await asyncio.to_thread(write)
    except HttpError as exc:
        return exc.response()
    return Response(b"", status_code=201 if created else 200)


async def unregister(
    service: WalletService,
    request: Request[Any, Any, Any],
    device: str,
    kind: str,
    identifier: str,
) -> Response[bytes]:
    try:
        services = services_of(request)
        service.check_type(services, kind)
        await asyncio.to_thread(service.authorised, request, services, identifier)

        def write() -> None:
            with services.db.write() as conn:
                passes.unregister(conn, device, identifier)

        await asyncio.to_thread(write)
    except HttpError as exc:
        return exc.response()
    return Response(b"", status_code=200)


async def changed_since(
    service: WalletService, request: Request[Any, Any, Any], device: str, kind: str
) -> Response[bytes]:
    """The device's passes or orders changed since the tag it was last given (our tags
    are milliseconds); 204 when none has."""
    try:
        services = services_of(request)
        service.check_type(services, kind)
        since_text = request.query_params.get(service.since_parameter)
        since = whole_number(since_text) if since_text else None

        def read() -> list[tuple[str, int]]:
            with services.db.read() as conn:
                return service.changed_for_device(conn, device, since)

        changed = await asyncio.to_thread(read)
    except HttpError as exc:
        return exc.response()
    if not changed:
        return Response(b"", status_code=204)
    return json_response(
        {
            service.list_key: [identifier for identifier, _ in changed],
            service.tag_key: str(max(tag for _, tag in changed)),
        }
    )


async def latest(
    service: WalletService, request: Request[Any, Any, Any], kind: str, identifier: str
) -> Response[bytes]:
    """The latest signed pass or order, or 304 when the device's copy is it."""
    try:
        services = services_of(request)
        service.check_type(services, kind)
        record = await asyncio.to_thread(service.authorised, request, services, identifier)
        if not_modified(request, record["updated_at"]):
            return Response(b"", status_code=304)
    except HttpError as exc:
        return exc.response()
    return package_response(service.build(services, record), service.media_type, record)


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
    return Response(b"", status_code=200)


def package_response(content: bytes, media_type: str, record: dict[str, Any]) -> Response[bytes]:
    """A signed pass or order, with its Last-Modified date."""
    headers = {"Last-Modified": formatdate(record["updated_at"] / 1000, usegmt=True)}
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
