"""Apple Wallet: issuing a pass and changing its fields (admin API), the customer's
download link, and Apple's pass web service (web/wallet_service.py), each call about a
pass authenticated by its own token (docs/channels.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Request, Response, get, patch, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from parcours.channels.wallet import WalletIssuer
from parcours.customers import api as customers
from parcours.ingest.http import HttpError, json_response, read_json, services_of
from parcours.messaging import passes
from parcours.messaging.links import BadLink
from parcours.services import Services
from parcours.web.api import require_admin
from parcours.web.wallet_service import WalletService, package_response

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
    return package_response(issuer.build(record), PKPASS, record)


PASSES = WalletService(
    base="/wallet",
    packages="passes",
    scheme="ApplePass",
    since_parameter="passesUpdatedSince",
    list_key="serialNumbers",
    tag_key="lastUpdated",
    unknown_status=401,
    media_type=PKPASS,
    check_type=_issuer,
    find=passes.get,
    changed_for_device=passes.updated_for_device,
    build=lambda services, record: _issuer(services).build(record),
)


def wallet_routes() -> list[HTTPRouteHandler]:
    return [issue_pass, update_pass, download, *PASSES.routes()]
