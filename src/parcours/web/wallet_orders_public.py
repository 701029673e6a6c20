"""Apple Wallet orders: the customer's "Add to Apple Wallet" link (the signed .order of
their order), the merchant's look at an order's Wallet order, and Apple's Wallet Orders web
service at `{public_url}/wallet/orders/v1/...` (register and unregister a device, the
orders changed since a tag, the latest order, logs), each call about an order
authenticated by its own token (`Authorization: AppleOrder <token>`) (docs/channels.md)."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Request, Response, delete, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from parcours.channels.wallet import ORDER_MEDIA_TYPE, WalletIssuer, WalletOrders
from parcours.ingest.http import HttpError, json_response, read_body, services_of
from parcours.messaging import passes, wallet_orders
from parcours.messaging.links import BadLink
from parcours.runtime.clock import iso
from parcours.runtime.i18n import accept_language, pick_locale, text
from parcours.services import Services
from parcours.web.api import require_admin
from parcours.web.wallet_public import (
    carries_token,
    log_device_lines,
    not_modified,
    package_response,
    push_token_of,
)


def _orders(services: Services, order_type: str | None = None) -> WalletOrders:
    """The brand's Wallet orders; with `order_type`, only when it is ours."""
    provider = services.delivery.providers.for_channel("wallet")
    orders = provider.orders if isinstance(provider, WalletIssuer) else None
    if orders is None:
        raise HttpError(404, "Wallet orders are not configured (channels.wallet.orders)", "")
    if order_type is not None and order_type != orders.order_type_identifier:
        raise HttpError(404, "not our order type", "orderTypeIdentifier")
    return orders


def _by_identifier(services: Services, identifier: str) -> dict[str, Any] | None:
    with services.db.read() as conn:
        return wallet_orders.get(conn, identifier)


def _authorised(
    request: Request[Any, Any, Any], services: Services, identifier: str
) -> dict[str, Any]:
    """The order, when the request carries its token; 404 for an order we never issued."""
    record = _by_identifier(services, identifier)
    if record is None:
        raise HttpError(404, "no such order", "orderIdentifier")
    if not carries_token(request, "AppleOrder", record["auth_token"]):
        raise HttpError(401, "wrong authentication token for this order", "authorization")
    return record


@get("/wallet/orders/add/{token:str}")
async def add_order(request: Request[Any, Any, Any], token: FromPath[str]) -> Response[bytes]:
    """The customer's link: the signed .order, which Safari offers to add to Wallet. A
    link that is not ours, or an order not issued yet, is told in the customer's words."""
    services = services_of(request)
    try:
        orders = _orders(services)
        signed = services.delivery.links.signer.verify("order", token.removesuffix(".order"))
        order_id = str(signed["o"])
    except (HttpError, BadLink, KeyError):
        return _not_found(request)

    def read() -> dict[str, Any] | None:
        with services.db.read() as conn:
            return wallet_orders.by_order(conn, order_id)

    record = await asyncio.to_thread(read)
    if record is None:
        return _not_found(request)
    return package_response(orders.build(record), ORDER_MEDIA_TYPE, record["updated_at"])


def _not_found(request: Request[Any, Any, Any]) -> Response[bytes]:
    locale = pick_locale(accept_language(request.headers.get("accept-language")))
    return Response(
        text(locale, "wallet.not_found").encode(),
        status_code=404,
        media_type="text/plain; charset=utf-8",
    )


@get("/api/wallet/orders/{order_id:str}")
async def order_status(request: Request[Any, Any, Any], order_id: FromPath[str]) -> Response[bytes]:
    """An order's Wallet order as the merchant sees it: status, latest shipment status,
    its tag, how many devices hold it, and the customer's link."""
    try:
        services, _ = require_admin(request)
        _orders(services)

        def read() -> tuple[dict[str, Any] | None, int]:
            with services.db.read() as conn:
                record = wallet_orders.by_order(conn, order_id)
                devices = len(passes.push_tokens(conn, record["identifier"])) if record else 0
                return record, devices

        record, devices = await asyncio.to_thread(read)
        if record is None:
            raise HttpError(404, f"no Wallet order for order {order_id}", "order_id")
    except HttpError as exc:
        return exc.response()
    links = services.delivery.links.for_order({"order_id": order_id})
    return json_response(
        {
            "order_id": order_id,
            "order_identifier": record["identifier"],
            "customer": f"cus_{record['customer_id']}",
            "status": record["status"],
            "fulfillment_status": record["fulfillment_status"],
            "updated_at": iso(record["updated_at"]),
            "devices": devices,
            "add_to_wallet": links.get("wallet_order"),
        }
    )


_REGISTRATION = "/wallet/orders/v1/devices/{device:str}/registrations/{order_type:str}"


@post(_REGISTRATION + "/{identifier:str}", status_code=201)
async def register_device(
    request: Request[Any, Any, Any],
    device: FromPath[str],
    order_type: FromPath[str],
    identifier: FromPath[str],
) -> Response[bytes]:
    """A device added the order: it is told (APNs) whenever the order changes."""
    try:
        services = services_of(request)
        _orders(services, order_type)
        record = await asyncio.to_thread(_authorised, request, services, identifier)
        push_token = push_token_of(await read_body(request, 16 * 1024))

        def write() -> bool:
            with services.db.write() as conn:
                return passes.register(
                    conn,
                    device,
                    identifier,
                    push_token,
                    record["customer_id"],
                    services.clock.now_ms(),
                )

        created = await asyncio.to_thread(write)
    except HttpError as exc:
        return exc.response()
    return Response(b"", status_code=201 if created else 200)


@delete(_REGISTRATION + "/{identifier:str}", status_code=200)
async def unregister_device(
    request: Request[Any, Any, Any],
    device: FromPath[str],
    order_type: FromPath[str],
    identifier: FromPath[str],
) -> Response[bytes]:
    try:
        services = services_of(request)
        _orders(services, order_type)
        await asyncio.to_thread(_authorised, request, services, identifier)

        def write() -> None:
            with services.db.write() as conn:
                passes.unregister(conn, device, identifier)

        await asyncio.to_thread(write)
    except HttpError as exc:
        return exc.response()
    return Response(b"", status_code=200)


@get(_REGISTRATION)
async def updated_orders(
    request: Request[Any, Any, Any], device: FromPath[str], order_type: FromPath[str]
) -> Response[bytes]:
    """The device's orders changed since `ordersModifiedSince` (our tag: milliseconds)."""
    try:
        services = services_of(request)
        _orders(services, order_type)
        since_text = request.query_params.get("ordersModifiedSince")
        since = int(since_text) if since_text and since_text.isdigit() else None

        def read() -> list[tuple[str, int]]:
            with services.db.read() as conn:
                return wallet_orders.updated_for_device(conn, device, since)

        changed = await asyncio.to_thread(read)
    except HttpError as exc:
        return exc.response()
    if not changed:
        return Response(b"", status_code=204)
    return json_response(
        {
            "orderIdentifiers": [identifier for identifier, _ in changed],
            "lastModified": str(max(tag for _, tag in changed)),
        }
    )


@get("/wallet/orders/v1/orders/{order_type:str}/{identifier:str}")
async def latest_order(
    request: Request[Any, Any, Any], order_type: FromPath[str], identifier: FromPath[str]
) -> Response[bytes]:
    try:
        services = services_of(request)
        orders = _orders(services, order_type)
        record = await asyncio.to_thread(_authorised, request, services, identifier)
        if not_modified(request, record["updated_at"]):
            return Response(b"", status_code=304)
    except HttpError as exc:
        return exc.response()
    return package_response(orders.build(record), ORDER_MEDIA_TYPE, record["updated_at"])


@post("/wallet/orders/v1/log", status_code=200)
async def device_log(request: Request[Any, Any, Any]) -> Response[bytes]:
    log_device_lines(await read_body(request, 64 * 1024))
    return Response(b"", status_code=200)


def wallet_order_routes() -> list[HTTPRouteHandler]:
    return [
        add_order,
        order_status,
        register_device,
        unregister_device,
        updated_orders,
        latest_order,
        device_log,
    ]
