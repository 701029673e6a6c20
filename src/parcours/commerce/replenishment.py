"""Replenishment: when each customer is expected to run out of each consumable they bought,
and `Replenishment Due` appended a few days before, once per purchase (docs/commerce.md,
"Replenishment").

Kept per customer and product in `commerce_replenishments`, recomputed from the
customer's orders whenever one of their orders changes (placed, updated, cancelled,
refunded) or two profiles merge: so a reorder, a cancellation or a refund moves the date,
and orders arriving out of order count in the order they were placed. The announcement is
a job per customer and product (its key replaced when the date moves); the job appends
the event through the log's door, and the ready-made journey enters on it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import Connection, and_, delete, insert, select, update

from parcours.commerce import rows as commerce_rows
from parcours.commerce.catalog import product as catalog_product
from parcours.commerce.tables import (
    commerce_replenishments,
)
from parcours.log import Event, Reactions, append_events, internal_event
from parcours.runtime.clock import iso
from parcours.runtime.queue import Job, cancel, enqueue

JOB = "commerce.replenishment_due"
DUE_EVENT = "Replenishment Due"
REORDERED_EVENT = "Product Reordered"
DAY = 86_400_000
USAGE, OWN_PACE, UNKNOWN = "usage", "own_pace", "unknown"


@dataclass(frozen=True)
class ReplenishmentRules:
    lead_ms: int  # how long before the expected depletion `Replenishment Due` is appended


class Replenishment(msgspec.Struct, frozen=True):
    """A consumable a customer bought, and when they are expected to run out of it."""

    customer_id: int
    product_id: str
    last_order_id: str
    last_ordered_at: int
    quantity: int  # units of the last order
    orders: int  # orders of it that count (not cancelled, not refunded in full)
    basis: str  # usage (the catalog's usage days) | own_pace (theirs) | unknown
    pace_days: float | None  # how long one unit lasts them
    depletes_at: int | None
    due_at: int | None  # when `Replenishment Due` is (or was) appended
    announced_at: int | None


@dataclass(frozen=True)
class _Purchase:
    order_id: str
    at: int
    units: int


@dataclass(frozen=True)
class _Expected:
    basis: str
    pace_ms: int | None
    depletes_at: int | None


def expected(purchases: list[_Purchase], usage_days: int | None) -> _Expected:
    """When the last purchase runs out. With two orders or more, the customer's own pace:
    the time from their first order to their last, over the units they bought before the
    last (the mean of their intervals, weighted by what each order held); a pace under a
    day (two orders the same day) says nothing, and the catalog's usage days count
    instead: one unit lasts `usage_days`. The last order's units times the pace."""
    last = purchases[-1]
    pace: int | None = None
    basis = UNKNOWN
    if len(purchases) >= 2:
        before = sum(purchase.units for purchase in purchases[:-1])
        own = (last.at - purchases[0].at) // before
        if own >= DAY:
            pace, basis = own, OWN_PACE
    if pace is None and usage_days:
        pace, basis = usage_days * DAY, USAGE
    if pace is None:
        return _Expected(UNKNOWN, None, None)
    return _Expected(basis, pace, last.at + pace * last.units)


def refresh(
    conn: Connection,
    customer_ids: Iterable[int],
    now: int,
    rules: ReplenishmentRules,
    new_orders: set[str],
) -> list[Event]:
    """Recompute these customers' replenishments from their orders, move or cancel each
    announcement's job; the `Product Reordered` events of the new orders (`new_orders`)
    holding a consumable the customer had bought before, to be appended."""
    customers = sorted(set(customer_ids))
    if not customers:
        return []
    bought, usage = _purchases(conn, customers)
    stored = {
        (row.customer_id, row.product_id): row
        for row in commerce_rows.replenishment_rows(conn, customers)
    }
    reordered: list[Event] = []
    for key in sorted(set(bought) | set(stored)):
        customer, product_id = key
        purchases = bought.get(key, [])
        row = stored.get(key)
        if not purchases:
            conn.execute(
                delete(commerce_replenishments).where(
                    commerce_replenishments.c.customer_id == customer,
                    commerce_replenishments.c.product_id == product_id,
                )
            )
            cancel(conn, job_key(customer, product_id))
            continue
        _store(conn, customer, product_id, purchases, usage.get(product_id), row, now, rules)
        reordered += [
            _reordered(customer, product_id, purchase, len(purchases), now)
            for purchase in purchases[1:]
            if purchase.order_id in new_orders
        ]
    return reordered


def _purchases(
    conn: Connection, customers: list[int]
) -> tuple[dict[tuple[int, str], list[_Purchase]], dict[str, int | None]]:
    """Each customer's purchases of each consumable (an order's lines of one product
    added up, less what was refunded), in the order they were placed; and the products'
    usage days."""
    units: dict[tuple[int, str], dict[str, list[int]]] = defaultdict(dict)
    usage: dict[str, int | None] = {}
    for row in commerce_rows.consumable_purchases(conn, customers):
        usage[row.product_id] = row.usage_days
        found = units[(int(row.customer_id), row.product_id)]
        entry = found.setdefault(row.order_id, [int(row.placed_at), 0])
        entry[1] += int(row.quantity) - int(row.refunded_quantity)
    bought = {
        key: sorted(
            (
                _Purchase(order_id, at, count)
                for order_id, (at, count) in found.items()
                if count > 0
            ),
            key=lambda purchase: (purchase.at, purchase.order_id),
        )
        for key, found in units.items()
    }
    return {key: found for key, found in bought.items() if found}, usage


def _store(
    conn: Connection,
    customer: int,
    product_id: str,
    purchases: list[_Purchase],
    usage_days: int | None,
    row: Any,
    now: int,
    rules: ReplenishmentRules,
) -> None:
    last = purchases[-1]
    guess = expected(purchases, usage_days)
    due = None if guess.depletes_at is None else guess.depletes_at - rules.lead_ms
    same_purchase = row is not None and row.last_order_id == last.order_id
    values: dict[str, Any] = {
        "last_order_id": last.order_id,
        "last_ordered_at": last.at,
        "quantity": last.units,
        "orders": len(purchases),
        "basis": guess.basis,
        "pace_ms": guess.pace_ms,
        "depletes_at": guess.depletes_at,
        "due_at": due,
        "announced_at": row.announced_at if same_purchase else None,
        "updated_at": now,
    }
    table = commerce_replenishments
    if row is None:
        conn.execute(insert(table).values(customer_id=customer, product_id=product_id, **values))
    elif any(getattr(row, name) != value for name, value in values.items() if name != "updated_at"):
        conn.execute(
            update(table)
            .where(table.c.customer_id == customer, table.c.product_id == product_id)
            .values(**values)
        )
    else:
        return  # nothing moved: its job stands
    key = job_key(customer, product_id)
    wanted = guess.depletes_at is not None and due is not None and guess.depletes_at > now
    if wanted and due is not None and values["announced_at"] is None:
        enqueue(
            conn,
            JOB,
            {"customer": customer, "product": product_id, "depletes_at": guess.depletes_at},
            run_at=max(due, now),
            now=now,
            unique_key=key,
            customer_id=customer,
        )
        return
    cancel(conn, key)  # gone past (orders of long ago, imported), unknown, or announced


def _reordered(customer: int, product_id: str, purchase: _Purchase, orders: int, now: int) -> Event:
    return internal_event(
        customer,
        REORDERED_EVENT,
        {"product_id": product_id, "order_id": purchase.order_id, "orders": orders},
        purchase.at,
        f"commerce:product-reordered:{purchase.order_id}:{product_id}",
        "system",
        received_at=now,
    )


def job_key(customer: int, product_id: str) -> str:
    return f"commerce:replenishment:{customer}:{product_id}"


# ---- the announcement's job ---------------------------------------------------------------


def announce(
    conn: Connection, job: Job, now: int, rules: ReplenishmentRules, reactions: Reactions
) -> None:
    """The time to remind has come: `Replenishment Due` is appended, once per purchase
    (its message id names the last order), unless the date moved or passed meanwhile."""
    customer = int(job.payload["customer"])
    product_id = str(job.payload["product"])
    table = commerce_replenishments
    row = conn.execute(
        select(table).where(table.c.customer_id == customer, table.c.product_id == product_id)
    ).first()
    if (
        row is None
        or row.depletes_at is None
        or row.depletes_at != job.payload.get("depletes_at")
        or row.announced_at is not None
        or row.depletes_at < now  # run out already (a worker long away): too late
    ):
        return
    moved = conn.execute(
        update(table)
        .where(
            and_(
                table.c.customer_id == customer,
                table.c.product_id == product_id,
                table.c.depletes_at == row.depletes_at,
                table.c.announced_at.is_(None),
            )
        )
        .values(announced_at=now, updated_at=now)
    )
    if moved.rowcount != 1:
        return
    event = internal_event(
        customer,
        DUE_EVENT,
        due_properties(conn, _replenishment(row), now),
        now,
        f"commerce:replenishment-due:{customer}:{product_id}:{row.last_order_id}",
        "system",
    )
    append_events(conn, [[event]], now, reactions)


def due_properties(conn: Connection, found: Replenishment, now: int) -> dict[str, Any]:
    """What `Replenishment Due` tells a journey and its templates: the product as the
    catalog has it, the last order, and when it is expected to run out."""
    props: dict[str, Any] = {
        "product_id": found.product_id,
        "order_id": found.last_order_id,
        "last_ordered_at": iso(found.last_ordered_at),
        "quantity": found.quantity,
        "orders": found.orders,
        "basis": found.basis,
    }
    if found.depletes_at is not None:
        props["expected_depletion_at"] = iso(found.depletes_at)
        props["days_left"] = max(0, -(-(found.depletes_at - now) // DAY))
    if found.pace_days is not None:
        props["pace_days"] = found.pace_days
    item = catalog_product(conn, found.product_id)
    if item is not None:
        for name in ("name", "category", "url", "image_url"):
            if (value := getattr(item, name)) is not None:
                props[name] = value
    return props


# ---- reads --------------------------------------------------------------------------------


def _replenishment(row: Any) -> Replenishment:
    return Replenishment(
        customer_id=int(row.customer_id),
        product_id=row.product_id,
        last_order_id=row.last_order_id,
        last_ordered_at=int(row.last_ordered_at),
        quantity=int(row.quantity),
        orders=int(row.orders),
        basis=row.basis,
        pace_days=None if row.pace_ms is None else round(int(row.pace_ms) / DAY, 2),
        depletes_at=row.depletes_at,
        due_at=row.due_at,
        announced_at=row.announced_at,
    )


def replenishments_of(conn: Connection, customer_id: int) -> list[Replenishment]:
    """The consumables the customer bought, the soonest to run out first (those whose
    date is unknown last)."""
    rows = conn.execute(
        select(commerce_replenishments).where(commerce_replenishments.c.customer_id == customer_id)
    ).all()
    found = [_replenishment(row) for row in rows]
    return sorted(found, key=lambda r: (r.depletes_at is None, r.depletes_at or 0, r.product_id))


def forget(conn: Connection, customer_ids: list[int]) -> None:
    """A merged profile's rows, recomputed on the survivor (`refresh`): theirs go, and so
    do their jobs."""
    for customer in customer_ids:
        for product_id in conn.execute(
            select(commerce_replenishments.c.product_id).where(
                commerce_replenishments.c.customer_id == customer
            )
        ).scalars():
            cancel(conn, job_key(customer, product_id))
    conn.execute(
        delete(commerce_replenishments).where(
            commerce_replenishments.c.customer_id.in_(customer_ids)
        )
    )
