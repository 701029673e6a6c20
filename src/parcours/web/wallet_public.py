"""Apple Wallet: issuing a pass (admin API), the customer's download link, and Apple's pass
web service (register and unregister a device, passes updated since, the latest pass,
logs), each call authenticated by the pass's own token (docs/channels.md)."""

from __future__ import annotations

import asyncio
import hmac
import logging
from email.utils import formatdate, parsedate_to_datetime
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, patch, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from parcours.channels.wallet import WalletIssuer
from parcours.customers import api as customers
from parcours.ingest.http import HttpError, json_response, read_body, read_json, services_of
from parcours.messaging import passes
from parcours.messaging.links import BadLink
from parcours.services import Services
from parcours.web.api import require_admin

log = logging.getLogger(__name__)
_decode = msgspec.json.Decoder().decode
PKPASS = "application/vnd.apple.pkpass"


def _issuer(services: Services, pass_type: str | None = None) -> WalletIssuer:
    """The Apple Wallet issuer; with `pass_type`, only when it is ours."""
    provider = services.delivery.providers.for_channel("wallet")
    if not isinstance(provider, WalletIssuer):
        raise HttpError(404, "Apple Wallet is not configured (channels.wallet)", "provider")
    if pass_type is not None and pass_type != provider.pass_type_identifier:
        raise HttpError(404, "not our pass type", "passTypeIdentifier")
    return provider


class _IssueBody(msgspec.Struct, forbid_unknown_fields=True):
    customer: str
    kind: str
    fields: dict[str, Any] = {}


@post("/api/wallet/passes")
async def issue_pass(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Issue a loyalty card, a coupon or a VIP invitation to a customer; the answer holds
    the link the customer opens to add it to Wallet."""
    try:
        services, _ = require_admin(request)
        issuer = _issuer(services)
        body = await read_json(request, 64 * 1024, _IssueBody)
        if body.kind not in passes.KINDS:
            raise HttpError(400, f"kind must be one of {', '.join(passes.KINDS)}", "kind")

        def write() -> dict[str, Any]:
            with services.db.write() as conn:
                customer_id = customers.resolve(
                    conn, body.customer, services.settings.default_region
                )
                google = issuer.google.issuer_id if issuer.google is not None else None
                return passes.issue(
                    conn, customer_id, body.kind, body.fields, services.clock.now_ms(), google
                )

        try:
            record = await asyncio.to_thread(write)
        except customers.CustomerNotFound as exc:
            raise HttpError(404, f"no customer {exc}", "customer") from None
    except HttpError as exc:
        return exc.response()
    token = services.delivery.links.signer.sign("pass", {"s": record["serial"]})
    link = f"{services.settings.resolved_public_url}/wallet/download/{token}.pkpass"
    answer: dict[str, Any] = {"serial": record["serial"], "download": link}
    if issuer.google is not None:
        answer["google_save_url"] = issuer.google.save_url(
            record, issuer.organization_name, services.clock.now_ms()
        )
    return json_response(answer, 201)


class _FieldsBody(msgspec.Struct, forbid_unknown_fields=True):
    fields: dict[str, Any]


@patch("/api/wallet/passes/{serial:str}")
async def update_pass(request: Request[Any, Any, Any], serial: FromPath[str]) -> Response[bytes]:
    """New values for a pass's fields (the points of a loyalty card, a coupon's offer):
    the devices holding it are told, and its Google Wallet object is patched."""
    try:
        services, _ = require_admin(request)
        _issuer(services)
        body = await read_json(request, 64 * 1024, _FieldsBody)
        if "message" in body.fields:
            raise HttpError(400, "message is set by a send step on the wallet channel", "fields")

        def write() -> dict[str, Any] | None:
            with services.db.write() as conn:
                return passes.update_fields(conn, serial, body.fields, services.clock.now_ms())

        record = await asyncio.to_thread(write)
        if record is None:
            raise HttpError(404, f"no pass {serial}", "serial")
    except HttpError as exc:
        return exc.response()
    return json_response({"serial": serial, "fields": record["fields"]})


@get("/wallet/download/{token:str}")
async def download(request: Request[Any, Any, Any], token: FromPath[str]) -> Response[bytes]:
    """The customer's link: the signed .pkpass, which Safari offers to add to Wallet."""
    try:
        services = services_of(request)
        issuer = _issuer(services)
        try:
            serial = services.delivery.links.signer.verify("pass", token.removesuffix(".pkpass"))[
                "s"
            ]
        except BadLink:
            raise HttpError(404, "this link is not valid", "token") from None
        record = await asyncio.to_thread(_record, services, str(serial))
        if record is None:
            raise HttpError(404, "no such pass", "serial")
    except HttpError as exc:
        return exc.response()
    return _pkpass(issuer, record)


def _record(services: Services, serial: str) -> dict[str, Any] | None:
    with services.db.read() as conn:
        return passes.get(conn, serial)


def _pkpass(issuer: WalletIssuer, record: dict[str, Any]) -> Response[bytes]:
    return package_response(issuer.build(record), PKPASS, record["updated_at"])


def package_response(content: bytes, media_type: str, updated_at: int) -> Response[bytes]:
    """A signed pass or order, with its Last-Modified date."""
    headers = {"Last-Modified": formatdate(updated_at / 1000, usegmt=True)}
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
    """`Authorization: <scheme> <token>` (ApplePass for passes, AppleOrder for orders)."""
    header = request.headers.get("authorization", "")
    return hmac.compare_digest(header.encode(), f"{scheme} {token}".encode())


def log_device_lines(raw: bytes) -> None:
    """What Wallet on a device reports going wrong with our web service (`{"logs": [...]}`
    as Apple documents it, or a bare list), into our log, cut short."""
    try:
        document = _decode(raw)
    except msgspec.DecodeError:
        return
    lines = document.get("logs", []) if isinstance(document, dict) else document
    if isinstance(lines, list):
        for line in lines[:50]:
            log.warning("Apple Wallet: %s", str(line)[:500])


def _authorised(request: Request[Any, Any, Any], services: Services, serial: str) -> dict[str, Any]:
    """The pass, when the request carries its token (`Authorization: ApplePass <token>`)."""
    record = _record(services, serial)
    if record is None or not carries_token(request, "ApplePass", record["auth_token"]):
        raise HttpError(401, "unknown pass or wrong authentication token", "authorization")
    return record


def push_token_of(body: bytes) -> str:
    """The `pushToken` of a device registration's body."""
    try:
        document = _decode(body)
    except msgspec.DecodeError:
        document = {}
    push_token = document.get("pushToken") if isinstance(document, dict) else None
    if not isinstance(push_token, str) or not push_token:
        raise HttpError(400, "pushToken is required", "pushToken")
    return push_token


@post(
    "/wallet/v1/devices/{device:str}/registrations/{pass_type:str}/{serial:str}",
    status_code=201,
)
async def register_device(
    request: Request[Any, Any, Any],
    device: FromPath[str],
    pass_type: FromPath[str],
    serial: FromPath[str],
) -> Response[bytes]:
    try:
        services = services_of(request)
        _issuer(services, pass_type)
        record = await asyncio.to_thread(_authorised, request, services, serial)
        push_token = push_token_of(await read_body(request, 16 * 1024))

        def write() -> bool:
            with services.db.write() as conn:
                return passes.register(
                    conn, device, serial, push_token, record["customer_id"], services.clock.now_ms()
                )

        created = await asyncio.to_thread(write)
    except HttpError as exc:
        return exc.response()
    return Response(b"", status_code=201 if created else 200)


@delete(
    "/wallet/v1/devices/{device:str}/registrations/{pass_type:str}/{serial:str}",
    status_code=200,
)
async def unregister_device(
    request: Request[Any, Any, Any],
    device: FromPath[str],
    pass_type: FromPath[str],
    serial: FromPath[str],
) -> Response[bytes]:
    try:
        services = services_of(request)
        _issuer(services, pass_type)
        await asyncio.to_thread(_authorised, request, services, serial)

        def write() -> None:
            with services.db.write() as conn:
                passes.unregister(conn, device, serial)

        await asyncio.to_thread(write)
    except HttpError as exc:
        return exc.response()
    return Response(b"", status_code=200)


@get("/wallet/v1/devices/{device:str}/registrations/{pass_type:str}")
async def updated_passes(
    request: Request[Any, Any, Any], device: FromPath[str], pass_type: FromPath[str]
) -> Response[bytes]:
    """The device's passes changed since `passesUpdatedSince` (our tag: milliseconds)."""
    try:
        services = services_of(request)
        _issuer(services, pass_type)
        since_text = request.query_params.get("passesUpdatedSince")
        since = int(since_text) if since_text and since_text.isdigit() else None

        def read() -> list[tuple[str, int]]:
            with services.db.read() as conn:
                return passes.updated_for_device(conn, device, since)

        changed = await asyncio.to_thread(read)
    except HttpError as exc:
        return exc.response()
    if not changed:
        return Response(b"", status_code=204)
    return json_response(
        {"serialNumbers": [s for s, _ in changed], "lastUpdated": str(max(t for _, t in changed))}
    )


@get("/wallet/v1/passes/{pass_type:str}/{serial:str}")
async def latest_pass(
    request: Request[Any, Any, Any], pass_type: FromPath[str], serial: FromPath[str]
) -> Response[bytes]:
    try:
        services = services_of(request)
        issuer = _issuer(services, pass_type)
        record = await asyncio.to_thread(_authorised, request, services, serial)
        if not_modified(request, record["updated_at"]):
            return Response(b"", status_code=304)
    except HttpError as exc:
        return exc.response()
    return _pkpass(issuer, record)


@post("/wallet/v1/log", status_code=200)
async def device_log(request: Request[Any, Any, Any]) -> Response[bytes]:
    log_device_lines(await read_body(request, 64 * 1024))
    return Response(b"", status_code=200)


def wallet_routes() -> list[HTTPRouteHandler]:
    return [
        issue_pass,
        update_pass,
        download,
        register_device,
        unregister_device,
        updated_passes,
        latest_pass,
        device_log,
    ]
