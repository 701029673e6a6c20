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

from parcours.channels import WalletIssuer
from parcours.customers import profiles as customers
from parcours.http import HttpError, Injected, read_json
from parcours.messaging import BadLink, Delivery, PassLink, WalletPass, passes
from parcours.runtime.clock import Clock
from parcours.runtime.db import Database
from parcours.runtime.settings import Settings
from parcours.web.api_docs import request_body
from parcours.web.errors import ERROR_FIELDS
from parcours.web.wallet_service import WalletService, package_response

PKPASS = "application/vnd.apple.pkpass"


def _issuer(delivery: Delivery, pass_type: str | None = None) -> WalletIssuer:
    """The Apple Wallet issuer; with `pass_type`, only when it is ours."""
    provider = delivery.providers.for_channel("wallet")
    if not isinstance(provider, WalletIssuer):
        raise HttpError(404, "Apple Wallet is not configured (channels.wallet)", "provider")
    if pass_type is not None and pass_type != provider.pass_type_identifier:
        raise HttpError(404, "not our pass type", "passTypeIdentifier")
    return provider


class _IssueBody(msgspec.Struct, forbid_unknown_fields=True):
    customer: str
    kind: str
    fields: dict[str, Any] = {}


class PassIssued(msgspec.Struct):
    """The pass's serial, the link that adds it to Wallet, and its Google Wallet link
    (with `channels.wallet.google`)."""

    serial: str
    download: str
    google_save_url: str | msgspec.UnsetType = msgspec.UNSET


class PassFields(msgspec.Struct):
    serial: str
    fields: dict[str, Any]


@post(
    "/api/wallet/passes",
    status_code=201,
    opt={ERROR_FIELDS: {customers.CustomerNotFound: "customer"}},
    operation_class=request_body(_IssueBody),
    response_description="The pass issued",
)
async def issue_pass(
    request: Request[Any, Any, Any],
    db: Injected[Database],
    clock: Injected[Clock],
    settings: Injected[Settings],
    delivery: Injected[Delivery],
) -> PassIssued:
    """Issue a loyalty card, a coupon or a VIP invitation to a customer; the answer holds
    the link the customer opens to add it to Wallet."""
    issuer = _issuer(delivery)
    body = await read_json(request, 64 * 1024, _IssueBody)
    if body.kind not in passes.KINDS:
        raise HttpError(400, f"kind must be one of {', '.join(passes.KINDS)}", "kind")

    def write() -> WalletPass:
        with db.write() as conn:
            customer_id = customers.resolve(conn, body.customer, settings.default_region)
            google = issuer.google.issuer_id if issuer.google is not None else None
            return passes.issue(conn, customer_id, body.kind, body.fields, clock.now_ms(), google)

    record = await asyncio.to_thread(write)
    token = delivery.links.signer.sign("pass", {"s": record.serial})
    link = f"{settings.resolved_public_url}/wallet/download/{token}.pkpass"
    answer = PassIssued(record.serial, link)
    if issuer.google is not None:
        answer.google_save_url = issuer.google.save_url(
            record.record(), issuer.organization_name, clock.now_ms()
        )
    return answer


class _FieldsBody(msgspec.Struct, forbid_unknown_fields=True):
    fields: dict[str, Any]


@patch(
    "/api/wallet/passes/{serial:str}",
    operation_class=request_body(_FieldsBody),
    response_description="The pass's fields now",
)
async def update_pass(
    request: Request[Any, Any, Any],
    serial: FromPath[str],
    db: Injected[Database],
    clock: Injected[Clock],
    delivery: Injected[Delivery],
) -> PassFields:
    """New values for a pass's fields (the points of a loyalty card, a coupon's offer):
    the devices holding it are told, and its Google Wallet object is patched."""
    _issuer(delivery)
    body = await read_json(request, 64 * 1024, _FieldsBody)
    if "message" in body.fields:
        raise HttpError(400, "message is set by a send step on the wallet channel", "fields")

    def write() -> WalletPass | None:
        with db.write() as conn:
            return passes.update_fields(conn, serial, body.fields, clock.now_ms())

    record = await asyncio.to_thread(write)
    if record is None:
        raise HttpError(404, f"no pass {serial}", "serial")
    return PassFields(serial, record.fields)


@get("/wallet/download/{token:str}", media_type=PKPASS)
async def download(
    token: FromPath[str], db: Injected[Database], delivery: Injected[Delivery]
) -> Response[bytes]:
    """The customer's link: the signed .pkpass, which Safari offers to add to Wallet."""
    issuer = _issuer(delivery)
    try:
        serial = delivery.links.signer.verify(
            "pass", token.removesuffix(".pkpass"), PassLink
        ).serial
    except BadLink:
        raise HttpError(404, "this link is not valid", "token") from None
    record = await asyncio.to_thread(_record, db, str(serial))
    if record is None:
        raise HttpError(404, "no such pass", "serial")
    return _pkpass(issuer, record)


def _record(db: Database, serial: str) -> WalletPass | None:
    with db.read() as conn:
        return passes.get(conn, serial)


def _pkpass(issuer: WalletIssuer, record: WalletPass) -> Response[bytes]:
    return package_response(issuer.build(record.record()), PKPASS, record)


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
    build=lambda delivery, record: _issuer(delivery).build(record.record()),
)


def wallet_admin_routes() -> list[HTTPRouteHandler]:
    """Issuing passes and changing them: behind the admin key."""
    return [issue_pass, update_pass]


def wallet_routes() -> list[HTTPRouteHandler]:
    """The customer's link and Apple's web service: each authenticated by its own token."""
    return [download, *PASSES.routes()]
