"""Commerce in the admin API (Bearer admin key): read an order with its lines, refunds,
parcels and returns, and refund it, checked against what is left to refund
(docs/commerce.md, "Bad input")."""

from __future__ import annotations

import asyncio
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath

from parcours import commerce
from parcours.http import HttpError, Injected, json_response, read_json
from parcours.log import Reactions
from parcours.runtime.clock import Clock
from parcours.runtime.db import Database
from parcours.runtime.keys import KeyHolder
from parcours.web.api_docs import request_body

LONGEST_ID = 200


class OrderView(msgspec.Struct):
    order: commerce.Order
    shipments: list[commerce.Shipment]
    returns: list[commerce.Return]


class LineBody(msgspec.Struct, forbid_unknown_fields=True):
    line: int
    quantity: int


class RefundBody(msgspec.Struct, forbid_unknown_fields=True):
    amount: str | None = None  # exact decimal text; default: the price of `lines`
    lines: list[LineBody] = []
    refund_id: str | None = None  # the same id again changes nothing


@get(
    "/api/commerce/orders/{order_id:str}",
    responses={200: ResponseSpec(OrderView, description="The order, its parcels and returns")},
)
async def get_order(db: Injected[Database], order_id: FromPath[str]) -> Response[bytes]:
    """An order as commerce keeps it: lines, totals, refunds (per line), cancellation,
    source; its parcels with their scans; its returns. 404 when it is not known."""
    _check_id(order_id)

    def read() -> OrderView | None:
        with db.read() as conn:
            found = commerce.order(conn, order_id)
            if found is None:
                return None
            return OrderView(
                found,
                commerce.shipments_of_order(conn, order_id),
                commerce.returns_of_order(conn, order_id),
            )

    view = await asyncio.to_thread(read)
    if view is None:
        raise HttpError(404, f"no order {order_id!r} is known", "order_id")
    return json_response(view)


@post(
    "/api/commerce/orders/{order_id:str}/refunds",
    status_code=200,
    operation_class=request_body(RefundBody),
    responses={200: ResponseSpec(commerce.Order, description="The order once refunded")},
)
async def refund_order(
    request: Request[Any, Any, Any],
    db: Injected[Database],
    clock: Injected[Clock],
    reactions: Injected[Reactions],
    admin: Injected[KeyHolder],
    order_id: FromPath[str],
) -> Response[bytes]:
    """Refund an order: `amount`, or the price of the `lines` (numbered from 1) and
    quantities given. Refused (409), naming the amount asked and the amount left, when
    it is more than what is left to refund of the order or of a line. Recorded as an
    `Order Refunded` event naming the admin."""
    _check_id(order_id)
    body = await read_json(request, 16 * 1024, RefundBody)
    amount: Decimal | None = None
    if body.amount is not None:
        try:
            amount = Decimal(body.amount)
        except InvalidOperation:
            raise HttpError(
                400, f"amount must be a decimal number, got {body.amount!r}", "amount"
            ) from None
        if not amount.is_finite() or amount <= 0:
            raise HttpError(400, "amount must be a decimal number above 0", "amount")
    if body.refund_id is not None:
        _check_id(body.refund_id, "refund_id")
    for index, line in enumerate(body.lines):
        if line.quantity < 1:
            raise HttpError(400, "a line's quantity must be 1 or more", f"lines[{index}].quantity")
    lines = [commerce.LineRefund(line.line, line.quantity) for line in body.lines]

    def make() -> commerce.Order:
        with db.write() as conn:
            return commerce.refund(
                conn,
                reactions,
                order_id,
                clock.now_ms(),
                amount=amount,
                lines=lines,
                refund_id=body.refund_id,
                by=admin.name,
            )

    try:
        refunded = await asyncio.to_thread(make)
    except commerce.OrderNotFound as exc:
        raise HttpError(404, str(exc), "order_id") from None
    except commerce.RefundRefused as exc:
        raise HttpError(409, str(exc), exc.field) from None
    return json_response(refunded)


def _check_id(value: str, field: str = "order_id") -> None:
    if not value.strip() or len(value) > LONGEST_ID or "\x00" in value:
        raise HttpError(400, f"{field} must be 1 to {LONGEST_ID} characters", field)


def commerce_admin_routes() -> list[HTTPRouteHandler]:
    return [get_order, refund_order]


__all__ = ["commerce_admin_routes"]
