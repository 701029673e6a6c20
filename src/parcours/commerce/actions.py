"""Commerce's actions: what Parcours itself does to an order, checked, then recorded as the
event the projection applies, in one transaction (docs/commerce.md, "Bad input")."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, select

from parcours.commerce.queries import Order, order
from parcours.commerce.tables import commerce_orders, commerce_refunds
from parcours.log import Reactions, append_events, internal_event

_CENT = Decimal("0.01")


class OrderNotFound(LookupError):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"no order {order_id!r} is known")
        self.order_id = order_id


class RefundRefused(ValueError):
    """A refund that cannot be made; the message names the amount asked and what is left,
    `field` the part of the request at fault."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class LineRefund:
    """A refund of `quantity` of an order's line `line` (numbered from 1)."""

    line: int
    quantity: int


def refund(
    conn: Connection,
    reactions: Reactions,
    order_id: str,
    now: int,
    *,
    amount: Decimal | None = None,
    lines: Sequence[LineRefund] = (),
    refund_id: str | None = None,
    by: str = "admin",
) -> Order:
    """Refund `amount` of an order (by default, the price of the `lines` refunded),
    checked against what is left to refund of it and of each line (RefundRefused naming
    both), then recorded as an `Order Refunded` event through the log's door, in the
    caller's write transaction. The same `refund_id` again changes nothing."""
    conn.execute(  # two refunds of one order at once: one after the other
        select(commerce_orders.c.order_id)
        .where(commerce_orders.c.order_id == order_id)
        .with_for_update()
    ).first()
    current = order(conn, order_id)
    if current is None:
        raise OrderNotFound(order_id)
    if (
        refund_id is not None
        and conn.execute(
            select(commerce_refunds.c.order_id).where(commerce_refunds.c.refund_id == refund_id)
        ).first()
    ):
        return current
    by_number = {line.line: line for line in current.lines}
    products: list[dict[str, Any]] = []
    lines_amount = Decimal(0)
    for index, asked in enumerate(lines):
        line = by_number.get(asked.line)
        where = f"lines[{index}]"
        if line is None:
            raise RefundRefused(
                f"order {order_id} has no line {asked.line} (it has {len(current.lines)})", where
            )
        quantity_left = line.quantity - line.refunded_quantity
        if asked.quantity < 1 or asked.quantity > quantity_left:
            named = line.name or line.sku or "unnamed"
            raise RefundRefused(
                f"a refund of {asked.quantity} of line {asked.line} ({named}) "
                f"is more than the {quantity_left} left to refund of it (bought {line.quantity}, "
                f"refunded {line.refunded_quantity})",
                where,
            )
        lines_amount += line.price * asked.quantity
        products.append(
            {
                "line": line.line,
                "product_id": line.product_id,
                "variant_id": line.variant_id,
                "sku": line.sku,
                "name": line.name,
                "price": str(line.price),
                "quantity": asked.quantity,
            }
        )
    total = lines_amount if amount is None else amount
    currency = current.currency
    if total <= 0:
        raise RefundRefused(
            f"a refund must be of more than 0 {currency}: give an amount or lines", "amount"
        )
    left = current.left_to_refund
    if total > left:
        raise RefundRefused(
            f"a refund of {_shown(total)} {currency} is more than the {_shown(left)} {currency} "
            f"left to refund on order {order_id} (paid {_shown(current.total)}, refunded "
            f"{_shown(current.refunded)})",
            "amount",
        )
    if current.customer_id is None:
        raise RefundRefused(f"order {order_id} is about no known customer", "order_id")
    made = refund_id or f"rfd_{uuid.uuid4().hex}"
    event = internal_event(
        current.customer_id,
        "Order Refunded",
        {
            "order_id": order_id,
            "refund_id": made,
            "total": str(total),
            "currency": currency,
            "products": [{k: v for k, v in p.items() if v is not None} for p in products],
            "refunded_by": by,
        },
        now,
        f"commerce:refund:{made}",
        "admin",
    )
    append_events(conn, [[event]], now, reactions)
    refreshed = order(conn, order_id)
    assert refreshed is not None
    return refreshed


def _shown(amount: Decimal) -> str:
    return str(amount.quantize(_CENT)) if amount == amount.quantize(_CENT) else str(amount)
