"""Apple Wallet orders: the customer's "Add to Apple Wallet" link (the signed .order of
their order), the merchant's look at an order's Wallet order, and Apple's Wallet Orders web
service at `{public_url}/wallet/orders/v1/...` (web/wallet_service.py), each call about an
order authenticated by its token (`Authorization: AppleOrder <token>`) (docs/channels.md)."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.params import FromPath

from parcours.channels import ORDER_MEDIA_TYPE, WalletIssuer, WalletOrders
from parcours.http import HttpError, Injected, json_response
from parcours.messaging import BadLink, Delivery, OrderLink, WalletOrder, passes, wallet_orders
from parcours.runtime.clock import iso
from parcours.runtime.db import Database
from parcours.runtime.i18n import accept_language, pick_locale, text
from parcours.web.wallet_service import WalletService, package_response


def _orders(delivery: Delivery, order_type: str | None = None) -> WalletOrders:
    """The brand's Wallet orders; with `order_type`, only when it is ours."""
    provider = delivery.providers.for_channel("wallet")
    orders = provider.orders if isinstance(provider, WalletIssuer) else None
    if orders is None:
        raise HttpError(404, "Wallet orders are not configured (channels.wallet.orders)", "")
    if order_type is not None and order_type != orders.order_type_identifier:
        raise HttpError(404, "not our order type", "orderTypeIdentifier")
    return orders


@get(
    "/wallet/orders/add/{token:str}",
    media_type=ORDER_MEDIA_TYPE,
    responses={404: ResponseSpec(str, media_type="text/plain", description="Not a valid link")},
)
async def add_order(
    request: Request[Any, Any, Any],
    token: FromPath[str],
    db: Injected[Database],
    delivery: Injected[Delivery],
) -> Response[bytes]:
    """The customer's link: the signed .order, which Safari offers to add to Wallet. A
    link that is not ours, or an order not issued yet, is told in the customer's words."""
    try:
        orders = _orders(delivery)
        signed = delivery.links.signer.verify("order", token.removesuffix(".order"), OrderLink)
        order_id = signed.order
    except (HttpError, BadLink, KeyError):
        return _not_found(request)

    def read() -> WalletOrder | None:
        with db.read() as conn:
            return wallet_orders.by_order(conn, order_id)

    record = await asyncio.to_thread(read)
    if record is None:
        return _not_found(request)
    return package_response(orders.build(record.record()), ORDER_MEDIA_TYPE, record)


def _not_found(request: Request[Any, Any, Any]) -> Response[bytes]:
    locale = pick_locale(accept_language(request.headers.get("accept-language")))
    return Response(
        text(locale, "wallet.not_found").encode(),
        status_code=404,
        media_type="text/plain; charset=utf-8",
    )


@get(
    "/api/wallet/orders/{order_id:str}",
    responses={200: ResponseSpec(dict[str, Any], description="The order's Wallet order")},
)
async def order_status(
    order_id: FromPath[str], db: Injected[Database], delivery: Injected[Delivery]
) -> Response[bytes]:
    """An order's Wallet order as the merchant sees it: status, latest shipment status,
    its tag, how many devices hold it, and the customer's link."""
    _orders(delivery)

    def read() -> tuple[WalletOrder | None, int]:
        with db.read() as conn:
            record = wallet_orders.by_order(conn, order_id)
            devices = len(passes.push_tokens(conn, record.identifier)) if record else 0
            return record, devices

    record, devices = await asyncio.to_thread(read)
    if record is None:
        raise HttpError(404, f"no Wallet order for order {order_id}", "order_id")
    links = delivery.links.for_order({"order_id": order_id})
    return json_response(
        {
            "order_id": order_id,
            "order_identifier": record.identifier,
            "customer": f"cus_{record.customer_id}",
            "status": record.status,
            "fulfillment_status": record.fulfillment_status,
            "updated_at": iso(record.updated_at),
            "devices": devices,
            "add_to_wallet": links.get("wallet_order"),
        }
    )


ORDERS = WalletService(
    base="/wallet/orders",
    packages="orders",
    scheme="AppleOrder",
    since_parameter="ordersModifiedSince",
    list_key="orderIdentifiers",
    tag_key="lastModified",
    unknown_status=404,
    media_type=ORDER_MEDIA_TYPE,
    check_type=_orders,
    find=wallet_orders.get,
    changed_for_device=wallet_orders.updated_for_device,
    build=lambda delivery, record: _orders(delivery).build(record.record()),
)


def wallet_order_admin_routes() -> list[HTTPRouteHandler]:
    """The merchant's look at an order's Wallet order: behind the admin key."""
    return [order_status]


def wallet_order_routes() -> list[HTTPRouteHandler]:
    """The customer's link and Apple's web service: each authenticated by its own token."""
    return [add_order, *ORDERS.routes()]
