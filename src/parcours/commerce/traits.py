"""The computed traits commerce's orders make (docs/commerce.md, "Traits from commerce"):
how many orders a customer placed, what they spent per currency, their first and last
order, and whether their spending makes them a VIP; handed to the customers' profiles
(`profiles.record_order_figures`) in the append's transaction.

Read from `commerce_orders`, where an order counts once whatever reported it: an order
cancelled, or refunded in full, does not count; what was refunded of the others comes
off what was spent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import Connection

from parcours.commerce import rows as commerce_rows
from parcours.customers import decimal_of
from parcours.customers import profiles as customer_profiles

_ZERO = Decimal(0)
_CENT = Decimal("0.01")


class _Placed(NamedTuple):
    """An order just inserted, as `commerce_rows.order_figures_rows` reads one."""

    customer_id: int
    status: str
    currency: str
    total: str
    refunded: str
    placed_at: int


def refresh(
    conn: Connection,
    customer_ids: Iterable[int],
    vip_spend: Decimal,
    inserted: Sequence[Mapping[str, Any]] | None = None,
) -> None:
    """Recompute these customers' order traits from their orders and store them.

    `inserted`: orders this transaction has just inserted (the rows as written), when
    nothing else changed these customers' orders since the group began: they are counted
    from here and left out of what is read, so that the read may have been sent before
    they were written (commerce's `_read_ahead`, the writer's first commerce round trip),
    or be made now, and count the same."""
    customers = sorted(set(customer_ids))
    if not customers:
        return
    rows: dict[int, list[Any]] = defaultdict(list)
    if inserted is None:
        for row in commerce_rows.order_figures_rows(conn, customers):
            rows[int(row.customer_id)].append(row)
    else:
        new = {order["order_id"] for order in inserted}
        for row in commerce_rows.order_figures_rows(conn, customers, with_ids=True):
            if row.order_id not in new:
                rows[int(row.customer_id)].append(row)
        wanted = set(customers)
        for order in inserted:
            if order["customer_id"] in wanted:
                rows[int(order["customer_id"])].append(
                    _Placed(
                        int(order["customer_id"]),
                        order["status"],
                        order["currency"],
                        order["total"],
                        order["refunded"],
                        int(order["placed_at"]),
                    )
                )
    customer_profiles.record_order_figures(
        conn, {customer: figures(rows.get(customer, []), vip_spend) for customer in customers}
    )


def figures(orders: list[Any], vip_spend: Decimal) -> customer_profiles.OrderFigures:
    """A customer's order traits from their order rows. VIP: spent at least `vip_spend`
    in one currency (0: nobody is)."""
    counted = [
        (row, _money(row.total) - _money(row.refunded))
        for row in orders
        if row.status != "cancelled" and not (_money(row.total) > 0 and _refunded_in_full(row))
    ]
    revenue: dict[str, dict[str, Any]] = {}
    per_currency: dict[str, list[Decimal]] = defaultdict(list)
    for row, spent in counted:
        per_currency[row.currency].append(spent)
    for currency in sorted(per_currency):
        spent_all = per_currency[currency]
        total = sum(spent_all, _ZERO)
        revenue[currency] = {
            "orders": len(spent_all),
            "total_spent": str(total),
            "average_order_value": str((total / len(spent_all)).quantize(_CENT)),
        }
    vip = vip_spend > 0 and any(
        sum(spent_all, _ZERO) >= vip_spend for spent_all in per_currency.values()
    )
    times = [int(row.placed_at) for row, _ in counted]
    return customer_profiles.OrderFigures(
        orders_count=len(counted),
        first_order_at=min(times) if times else None,
        last_order_at=max(times) if times else None,
        revenue=revenue,
        vip=vip,
    )


def _refunded_in_full(row: Any) -> bool:
    return _money(row.refunded) >= _money(row.total)


def _money(value: Any) -> Decimal:
    return decimal_of(value) or _ZERO
