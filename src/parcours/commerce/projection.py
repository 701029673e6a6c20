"""Commerce projected from the log: the reaction that applies each appended order,
refund, cancellation, shipment and return event to commerce's tables, in the append's
transaction (docs/commerce.md, "Projected from the log").

Statements are written per event (SQLAlchemy Core): the events it reads are a small part
of what is appended, and `Commerce.on_events` skips the rest with one set lookup each.
The first time a shipment reaches a stage, one `Shipment Stage Reached` is appended
through the log's door for the group (docs/commerce.md, "Post-purchase messages").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Row, and_, delete, insert, select, update

from parcours.commerce import (
    back_in_stock,
    carts,
    catalog,
    replenishment,
    reviews,
    shipment_alerts,
    statuses,
    traits,
)
from parcours.commerce import people as commerce_people
from parcours.commerce import rows as commerce_rows
from parcours.commerce.people import REFRESH_JOB
from parcours.commerce.recommendations import count_orders, count_views, uncount_orders
from parcours.commerce.returns import RETURN_EVENTS, RETURN_STAGES, return_window
from parcours.commerce.tables import (
    commerce_cancellations,
    commerce_order_lines,
    commerce_orders,
    commerce_refunds,
    commerce_returns,
    commerce_shipment_scans,
    commerce_shipments,
)
from parcours.customers import decimal_of, order_key, order_total
from parcours.log import Event, Reactions, append_events, internal_event, queries
from parcours.runtime.clock import Clock, SystemClock, iso, parse_iso
from parcours.runtime.db import insert_rows, send_ahead
from parcours.runtime.documents import JsonObject
from parcours.runtime.queue import Job, Worker
from parcours.runtime.settings import (
    MAX_RECOMMENDATION_WEEKS,
    RECOMMENDATION_WEEKS,
    SHIPMENT_STALLED_AFTER_HOURS,
)

PLACED = "Order Completed"
UPDATED = "Order Updated"
CANCELLED = "Order Cancelled"
REFUNDED = "Order Refunded"
ORDER_EVENTS = frozenset({PLACED, UPDATED, CANCELLED, REFUNDED})
SHIPMENT_PREFIX = "Shipment "
# Appended by commerce itself the first time a shipment reaches a stage: no report of a
# shipment (the projection leaves it alone).
STAGE_REACHED = "Shipment Stage Reached"
DEFAULT_CURRENCY = "USD"  # as the customers' projection counts an order without one
# Who reported an order, in commerce's words (Event.source -> source).
SOURCES = {"api": "site", "shopify": "shopify", "import": "import", "admin": "admin"}
_ZERO = Decimal(0)


class Commerce:
    """The commerce reaction of one running Parcours, with the return window's settings
    (`return_window_days`, 0: the sector's custom or the default; the configured sector,
    under the one set on the Settings page)."""

    def __init__(
        self,
        *,
        return_window_days: int = 0,
        review_after_days: int = 0,
        sector: str = "",
        clock: Clock | None = None,
        cart_abandon_after_minutes: int = 60,
        cart_order_window_hours: int = 168,
        back_in_stock_limit_to_stock: bool = False,
        replenishment_lead_days: int = 3,
        vip_spend: Decimal | int | str = 500,
        shipment_stalled_after_hours: int = SHIPMENT_STALLED_AFTER_HOURS,
        recommendation_weeks: int = RECOMMENDATION_WEEKS,
    ) -> None:
        if return_window_days < 0:
            raise ValueError("return_window_days must be 0 (the default) or more")
        if cart_abandon_after_minutes < 1 or cart_order_window_hours < 0:
            raise ValueError("cart_abandon_after_minutes must be 1 or more, the window 0 or more")
        if review_after_days < 0:
            raise ValueError("review_after_days must be 0 (the sector's custom) or more")
        self.return_window_days = return_window_days
        self.review_after_days = review_after_days
        self.sector = sector
        self.clock: Clock = clock or SystemClock()
        self.cart_rules = carts.CartRules(
            abandon_after_ms=cart_abandon_after_minutes * 60_000,
            order_window_ms=cart_order_window_hours * 3_600_000,
        )
        # notify no more back-in-stock requests than the stock returned (docs/commerce.md)
        self.back_in_stock_limit_to_stock = back_in_stock_limit_to_stock
        if replenishment_lead_days < 0 or Decimal(vip_spend) < 0:
            raise ValueError("replenishment_lead_days and vip_spend must be 0 or more")
        self.replenishment_rules = replenishment.ReplenishmentRules(
            lead_ms=replenishment_lead_days * 86_400_000
        )
        self.vip_spend = Decimal(vip_spend)
        if shipment_stalled_after_hours < 1:
            raise ValueError("shipment_stalled_after_hours must be 1 or more")
        self.shipment_rules = shipment_alerts.ShipmentRules(
            stalled_after_ms=shipment_stalled_after_hours * shipment_alerts.HOUR_MS
        )
        if not 1 <= recommendation_weeks <= MAX_RECOMMENDATION_WEEKS:
            raise ValueError(
                f"recommendation_weeks must be between 1 and {MAX_RECOMMENDATION_WEEKS}"
            )
        self.recommendation_weeks = recommendation_weeks
        self.reactions: Reactions | None = None

    def install(self, reactions: Reactions, worker: Worker | None = None) -> None:
        """React to every append; with a worker, announce abandoned carts (its job)."""
        reactions.react("commerce", self.on_events)
        self.reactions = reactions
        if worker is not None:
            worker.register(carts.JOB, self.cart_abandoned)
            worker.register(reviews.JOB, self.review_due)
            worker.register(replenishment.JOB, self.replenishment_due)
            worker.register(REFRESH_JOB, self.refresh_customer)
            worker.register(shipment_alerts.JOB, self.shipment_stalled)
            worker.register(shipment_alerts.OVERDUE_JOB, self.shipment_overdue)

    def shipment_stalled(self, conn: Connection, job: Job) -> None:
        """The job of a parcel without a report for the delay (commerce/shipment_alerts.py)."""
        assert self.reactions is not None, "install() first"
        now = self.clock.now_ms()
        shipment_alerts.stalled(conn, job, now, self.shipment_rules, self.reactions)

    def shipment_overdue(self, conn: Connection, job: Job) -> None:
        """The job of a parcel whose estimated delivery passed (commerce/shipment_alerts.py)."""
        assert self.reactions is not None, "install() first"
        shipment_alerts.overdue(conn, job, self.clock.now_ms(), self.reactions)

    def review_due(self, conn: Connection, job: Job) -> None:
        """The job of an order's review falling due (commerce/reviews.py)."""
        assert self.reactions is not None, "install() first"
        reviews.announce_due(
            conn, job, self.clock.now_ms(), self.sector, self.review_after_days, self.reactions
        )

    def cart_abandoned(self, conn: Connection, job: Job) -> None:
        """The job of a cart without activity for the delay (commerce/carts.py)."""
        assert self.reactions is not None, "install() first"
        carts.abandon(conn, job, self.clock.now_ms(), self.cart_rules, self.reactions)

    def replenishment_due(self, conn: Connection, job: Job) -> None:
        """The job that announces a consumable about to run out (commerce/replenishment.py)."""
        assert self.reactions is not None, "install() first"
        now = self.clock.now_ms()
        replenishment.announce(conn, job, now, self.replenishment_rules, self.reactions)

    # ---- the orders' keeper for the customers package (customers.people.OrderBook) ----

    orders_table = commerce_orders.name

    def order_owners(self, conn: Connection, order_ids: Sequence[str]) -> list[tuple[str, int]]:
        """(order id, customer id) of these stored orders that have a customer."""
        return commerce_rows.order_owners(conn, order_ids)

    def order_ids_of(self, conn: Connection, customer_id: int) -> list[str]:
        """The ids of the customer's orders, cancelled ones included."""
        return commerce_people.order_ids_of(conn, customer_id)

    def take_away(self, conn: Connection, customer_id: int, order_ids: Sequence[str]) -> int:
        """Delete these orders of the customer and all that hangs on them."""
        return commerce_people.take_away(conn, customer_id, order_ids)

    def recount(self, conn: Connection, customer_ids: Sequence[int]) -> None:
        """These customers' order traits and replenishments, counted again."""
        customers = set(customer_ids)
        traits.refresh(conn, customers, self.vip_spend)
        replenishment.refresh(conn, customers, self.clock.now_ms(), self.replenishment_rules, set())

    def exported(self, conn: Connection, customer_id: int) -> list[JsonObject]:
        """The customer's orders as the export shows them."""
        return commerce_people.exported(conn, customer_id)

    def follow_merge(self, conn: Connection, merged_id: int, survivor_id: int, now: int) -> None:
        """Profiles merged (the merge hook, customers.people): the merged customer's rows
        are the survivor's, and so the survivor's order traits are counted again at once,
        in the merge's transaction (a segment or a journey reading them next sees both
        profiles' orders); the replenishments follow in commerce's job."""
        commerce_people.follow_merge(conn, merged_id, survivor_id, now)
        traits.refresh(conn, {survivor_id}, self.vip_spend)

    def refresh_customer(self, conn: Connection, job: Job) -> None:
        """A merge's survivor: their order traits and replenishments counted again from
        the orders that are now theirs (`people.follow_merge` schedules it)."""
        customer = int(job.payload["customer"])
        self._after_orders(conn, {customer}, {customer}, set(), self.clock.now_ms())

    def _after_orders(
        self,
        conn: Connection,
        customers: set[int],
        replenished: set[int],
        new_orders: set[str],
        now: int,
        placed: dict[str, int] | None = None,
        inserted: list[dict[str, Any]] | None = None,
    ) -> None:
        """What orders change beyond themselves: the customers' traits (`inserted`: see
        `traits.refresh`), the replenishments of those `replenished` (the others' orders
        changed none of their consumables), the counts recommendations read (`placed`: new
        orders known placed, and when), and `Product Reordered` for a consumable bought
        again."""
        traits.refresh(conn, customers, self.vip_spend, inserted)
        reordered = replenishment.refresh(
            conn, replenished, now, self.replenishment_rules, new_orders
        )
        count_orders(conn, sorted(new_orders), now, placed, weeks=self.recommendation_weeks)
        if reordered:
            append_events(conn, [reordered], now, self.reactions or Reactions())

    def on_events(self, conn: Connection, events: list[Event], now: int) -> None:
        """The log's reaction: apply the commerce events among those appended, in order.
        The new orders of the group (the most common case by far) are written first, in
        a few statements for all of them (`_place_new`): the same as one by one, since no
        earlier event of the group is about them."""
        first = _first_placed(events)
        send_ahead(conn, _read_ahead, conn, events, first)
        done, kept, inserted = _place_new(conn, first, now, self.shipment_rules)
        new_orders = {order_key(e.properties, e.message_id) for e in events if id(e) in done}
        touched: set[str] = set()  # the orders the group's order events are about
        reached: list[Event] = []
        for event in events:
            name = event.name
            if event.type != "track" or name is None or id(event) in done or _ours(event):
                continue
            if name in ORDER_EVENTS:
                touched.add(
                    _text(event.properties.get("order_id")) or ""
                    if name in (REFUNDED, CANCELLED)
                    else order_key(event.properties, event.message_id)
                )
                if name == REFUNDED:
                    _refunded(conn, event)
                elif name == CANCELLED:
                    _cancelled(conn, event, now)
                elif _placed(conn, event, now, self.shipment_rules, update_amounts=name == UPDATED):
                    new_orders.add(order_key(event.properties, event.message_id))
            elif name.startswith(SHIPMENT_PREFIX):
                reached += _shipment(conn, event, now, self.shipment_rules)
            elif name in RETURN_EVENTS:
                _return(conn, event, now, self)
        # Carts and the catalog: each applies the whole group in a few statements.
        carts.apply(conn, events, now, self.cart_rules)
        back_in_stock.record(conn, events, now)
        restocked = catalog.apply(conn, events, now)
        count_views(conn, events)
        # The orders placed by this group and named by no later event of it: their
        # customers, times and products are those of their events (no read), and only
        # those holding a consumable change their customer's replenishments.
        fresh = {
            order_key(e.properties, e.message_id): e
            for e in events
            if id(e) in done and order_key(e.properties, e.message_id) not in touched | kept
        }
        others = _customers_of(conn, (touched | new_orders) - {""} - set(fresh))
        customers = others | {e.customer_id for e in fresh.values() if e.customer_id is not None}
        if customers:
            consumable = commerce_rows.consumable_products(
                conn, {p for e in fresh.values() for p in _product_ids(e.properties)}
            )
            replenished = others | {
                e.customer_id
                for e in fresh.values()
                if e.customer_id is not None
                and not consumable.isdisjoint(_product_ids(e.properties))
            }
            placed = {order_id: e.occurred_at for order_id, e in fresh.items()}
            # Nothing but this group's new orders changed its customers' orders: their
            # traits count those from the rows inserted (and may have read the others
            # before they were, `_read_ahead`).
            alone = inserted if not touched and not kept else None
            self._after_orders(conn, customers, replenished, new_orders, now, placed, alone)
        if reached:
            self._announce(conn, reached, now)
            delivered = [e for e in reached if e.properties.get("stage") == statuses.DELIVERED]
            if delivered:
                reviews.schedule(conn, delivered, now, self.sector, self.review_after_days)
        if restocked:
            back_in_stock.announce(
                conn,
                restocked,
                now,
                self.reactions or Reactions(),
                limit_to_stock=self.back_in_stock_limit_to_stock,
            )

    def _announce(self, conn: Connection, reached: list[Event], now: int) -> None:
        """Append the group's `Shipment Stage Reached` (and `Shipment Delayed`) events
        through the log's door, in one group: each once (its message id is its shipment's
        and stage's, or estimate's: one seen again, in this group or before, is left
        out)."""
        first: dict[str, Event] = {}
        for event in reached:
            first.setdefault(event.message_id, event)
        stored = queries.stored_message_ids(conn, list(first))
        new = [event for message_id, event in first.items() if message_id not in stored]
        if new:
            append_events(conn, [new], now, self.reactions or Reactions())


# ---- orders -------------------------------------------------------------------------------


def _placed(
    conn: Connection,
    event: Event,
    now: int,
    rules: shipment_alerts.ShipmentRules,
    *,
    update_amounts: bool,
) -> bool:
    """Apply an order's report; whether it was the order's first (a new order)."""
    props = event.properties
    order_id = order_key(props, event.message_id)
    found = _order_row(conn, order_id)
    if found is None:
        conn.execute(
            insert(commerce_orders).values(
                order_id=order_id,
                customer_id=event.customer_id,
                source=SOURCES.get(event.source, event.source),
                number=_text(props.get("order_name") or props.get("order_number")),
                status="placed",
                currency=str(props.get("currency") or DEFAULT_CURRENCY).upper(),
                total=str(order_total(props)),
                refunded="0",
                placed_at=event.occurred_at,
                updated_at=now,
                **_amounts(props),
            )
        )
        _write_lines(conn, order_id, event.customer_id, props.get("products"))
        _attach(conn, order_id, now, rules)
        return True
    changes: dict[str, Any] = {}
    if found.customer_id is None and event.customer_id is not None:
        changes["customer_id"] = event.customer_id
    number = _text(props.get("order_name") or props.get("order_number"))
    if found.number is None and number:
        changes["number"] = number
    if update_amounts:  # Order Updated: the amounts it gives; refunded never above total
        changes.update(_amounts(props))
        if any(props.get(name) is not None for name in ("total", "revenue", "products")):
            total = order_total(props)
            changes["total"] = str(total)
            changes["refunded"] = str(min(_money(found.refunded), total))
        if props.get("currency"):
            changes["currency"] = str(props["currency"]).upper()
    lines = _has_lines(conn, order_id)
    products = props.get("products")
    if isinstance(products, list) and products and (not lines or update_amounts):
        refunded_lines = conn.execute(
            select(commerce_order_lines.c.line).where(
                commerce_order_lines.c.order_id == order_id,
                commerce_order_lines.c.refunded_quantity > 0,
            )
        ).first()
        if refunded_lines is None:  # lines already refunded are kept as they were
            conn.execute(
                commerce_order_lines.delete().where(commerce_order_lines.c.order_id == order_id)
            )
            _write_lines(conn, order_id, changes.get("customer_id", found.customer_id), products)
    if changes:
        changes["updated_at"] = now
        conn.execute(
            update(commerce_orders).where(commerce_orders.c.order_id == order_id).values(**changes)
        )
        if "customer_id" in changes:
            _attach(conn, order_id, now, rules)
    return False


def _first_placed(events: list[Event]) -> dict[str, Event]:
    """The orders placed in this group that no earlier commerce event of it named, each
    with its first `Order Placed`."""
    first: dict[str, Event] = {}
    named: set[str] = set()
    for event in events:
        name = event.name
        if event.type != "track" or name is None:
            continue
        if name == PLACED:
            order_id = order_key(event.properties, event.message_id)
            if order_id not in named:
                first[order_id] = event
        elif _ours(event):
            continue
        elif name in ORDER_EVENTS or name.startswith(SHIPMENT_PREFIX) or name in RETURN_EVENTS:
            about = _text(event.properties.get("order_id"))
            if about is None or about in first:
                continue  # about an order placed earlier in the group: in order, after it
            order_id = about
        else:
            continue
        named.add(order_id)
    return first


def _read_ahead(conn: Connection, events: list[Event], first: dict[str, Event]) -> None:
    """The writer's (`runtime.db.send_ahead`): the reads of `on_events` whose inputs are
    in the group's events, sent together before the first is needed, so that they cost
    one round trip where each cost one: the check of the new orders, the carts, the
    consumables among the products ordered, the orders counted already, and the buyers'
    orders for their traits (those the group places counted apart). Each is sent
    only where nothing the reaction writes before its read changes what it reads (the
    catalog's events change the products, a cancellation the orders counted); a read
    asked with other inputs after all (an order already stored) reads again. `first`: the
    group's new orders (`_first_placed`)."""
    if len(first) >= 2:
        commerce_rows.orders_stored_or_named(conn, sorted(first))
    carts.read_ahead(conn, events)
    tracked = {event.name for event in events if event.type == "track"}
    if tracked.isdisjoint(catalog.EVENTS):
        products = {p for event in first.values() for p in _product_ids(event.properties)}
        commerce_rows.consumable_products(conn, products)
    if CANCELLED not in tracked and first:
        commerce_rows.counted_order_ids(conn, sorted(first))
    changing = any(
        (name != PLACED and (name in ORDER_EVENTS or name in RETURN_EVENTS))
        or name.startswith(SHIPMENT_PREFIX)
        for name in tracked
        if name is not None
    )
    if not changing and len(first) >= 2:  # the orders' traits: see `traits.refresh`
        buyers = {e.customer_id for e in first.values() if e.customer_id is not None}
        commerce_rows.order_figures_rows(conn, sorted(buyers), with_ids=True)


def _place_new(
    conn: Connection, first: dict[str, Event], now: int, rules: shipment_alerts.ShipmentRules
) -> tuple[set[int], set[str], list[dict[str, Any]]]:
    """The orders placed in this group whose id is neither stored nor named by an earlier
    commerce event of the group (`first`, from `_first_placed`), inserted with their lines in two
    statements for all of them; those that something kept before they came (a shipment, a
    refund, a return) take their customer as one by one (`_attach`). The ids (`id()`) of
    the events done, the orders among them something kept before, and the orders' rows
    as inserted."""
    if len(first) < 2:
        return set(), set(), []  # one order: the general path costs no more
    ids = sorted(first)
    stored, named_before = commerce_rows.orders_stored_or_named(conn, ids)
    new = [order_id for order_id in ids if order_id not in stored]
    if not new:
        return set(), set(), []
    orders: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    for order_id in new:
        event = first[order_id]
        props = event.properties
        orders.append(
            {
                "order_id": order_id,
                "customer_id": event.customer_id,
                "source": SOURCES.get(event.source, event.source),
                "number": _text(props.get("order_name") or props.get("order_number")),
                "status": "placed",
                "currency": str(props.get("currency") or DEFAULT_CURRENCY).upper(),
                "total": str(order_total(props)),
                "refunded": "0",
                "placed_at": event.occurred_at,
                "updated_at": now,
                **{name: None for name in ("subtotal", "discount", "shipping", "tax", "coupon")},
                **_amounts(props),
            }
        )
        lines += _lines(order_id, event.customer_id, props.get("products"))
    for table, rows in ((commerce_orders, orders), (commerce_order_lines, lines)):
        if rows:  # COPY on PostgreSQL
            columns = list(rows[0])
            insert_rows(conn, table, columns, [tuple(row[c] for c in columns) for row in rows])
    kept = named_before.intersection(new)
    for order_id in sorted(kept):
        _attach(conn, order_id, now, rules)
    return {id(first[order_id]) for order_id in new}, kept, orders


def _product_ids(props: dict[str, Any]) -> set[str]:
    """The product ids of an order's lines, as `_lines` reads them."""
    return {
        product_id
        for line in _lines("", None, props.get("products"))
        if (product_id := line["product_id"]) is not None
    }


def _customers_of(conn: Connection, order_ids: set[str]) -> set[int]:
    """The customers of these orders (those known, with a customer)."""
    return commerce_rows.customers_of_orders(conn, order_ids)


def _amounts(props: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name in ("subtotal", "discount", "shipping", "tax"):
        value = decimal_of(props.get(name))
        if value is not None:
            found[name] = str(value)
    coupon = _text(props.get("coupon"))
    if coupon:
        found["coupon"] = coupon
    return found


def _write_lines(conn: Connection, order_id: str, customer_id: int | None, products: Any) -> None:
    rows = _lines(order_id, customer_id, products)
    if rows:
        conn.execute(insert(commerce_order_lines), rows)


def _lines(order_id: str, customer_id: int | None, products: Any) -> list[dict[str, Any]]:
    """An order's lines as rows, from its event's `products`."""
    rows: list[dict[str, Any]] = []
    if not isinstance(products, list):
        return rows
    for product in products:
        if not isinstance(product, dict):
            continue
        rows.append(
            {
                "order_id": order_id,
                "line": len(rows) + 1,
                "customer_id": customer_id,
                "product_id": _text(product.get("product_id")),
                "variant_id": _text(product.get("variant_id")),
                "sku": _text(product.get("sku")),
                "name": _text(product.get("name")),
                "image_url": _text(product.get("image_url")),
                "price": str(decimal_of(product.get("price")) or _ZERO),
                "quantity": _quantity(product.get("quantity")),
                "refunded_quantity": 0,
                "refunded_amount": "0",
            }
        )
    return rows


def _cancelled(conn: Connection, event: Event, now: int) -> None:
    """An order cancelled; one not known yet has its cancellation kept until it comes
    (the first one reported), when `_attach` applies it."""
    order_id = _text(event.properties.get("order_id"))
    if not order_id:
        return
    reason = _text(event.properties.get("cancel_reason"))
    found = _order_row(conn, order_id)
    if found is not None:
        _cancel(conn, found, event.occurred_at, reason, now)
        return
    c = commerce_cancellations.c
    if conn.execute(select(c.order_id).where(c.order_id == order_id)).first() is None:
        conn.execute(
            insert(commerce_cancellations).values(
                order_id=order_id,
                customer_id=event.customer_id,
                reason=reason,
                occurred_at=event.occurred_at,
                recorded_at=now,
            )
        )


def _cancel(conn: Connection, order: Any, at: int, reason: str | None, now: int) -> None:
    if order.status == "cancelled":
        return
    conn.execute(
        update(commerce_orders)
        .where(commerce_orders.c.order_id == order.order_id)
        .values(status="cancelled", cancelled_at=at, cancel_reason=reason, updated_at=now)
    )
    uncount_orders(conn, [order.order_id])  # its recommendation counts taken back


def _refunded(conn: Connection, event: Event) -> None:
    props = event.properties
    order_id = _text(props.get("order_id"))
    if not order_id:
        return
    refund_id = _text(props.get("refund_id")) or event.message_id
    if conn.execute(
        select(commerce_refunds.c.refund_id).where(commerce_refunds.c.refund_id == refund_id)
    ).first():
        return
    lines = _refund_lines(props.get("products"))
    reported = decimal_of(props.get("total", props.get("revenue")))
    if reported is None:
        reported = sum((line["amount"] for line in lines), _ZERO)
    conn.execute(
        insert(commerce_refunds).values(
            refund_id=refund_id,
            order_id=order_id,
            customer_id=event.customer_id,
            source=SOURCES.get(event.source, event.source),
            reported=str(reported),
            amount="0",
            currency=_text(props.get("currency")),
            lines=json.dumps(
                [{**line, "amount": str(line["amount"])} for line in lines], sort_keys=True
            ),
            applied=False,
            occurred_at=event.occurred_at,
        )
    )
    order = _order_row(conn, order_id)
    if order is not None:
        _apply_refund(conn, order, refund_id)


def _refund_lines(products: Any) -> list[dict[str, Any]]:
    """What a refund names of each line: its keys, quantity and amount."""
    found: list[dict[str, Any]] = []
    for product in products if isinstance(products, list) else []:
        if not isinstance(product, dict):
            continue
        quantity = _quantity(product.get("quantity"))
        price = decimal_of(product.get("price"))
        line = product.get("line")
        found.append(
            {
                "line": line if isinstance(line, int) and not isinstance(line, bool) else None,
                "product_id": _text(product.get("product_id")),
                "variant_id": _text(product.get("variant_id")),
                "sku": _text(product.get("sku")),
                "quantity": quantity,
                "price": None if price is None else str(price),
                "amount": (price or _ZERO) * quantity,
            }
        )
    return found


def _apply_refund(conn: Connection, order: Row[Any], refund_id: str) -> None:
    """Count a refund on its order and lines: never past what is left to refund of
    either (the row keeps the amount reported)."""
    refund = conn.execute(
        select(commerce_refunds).where(commerce_refunds.c.refund_id == refund_id)
    ).one()
    total = _money(order.total)
    refunded = _money(order.refunded)
    counted = max(_ZERO, min(_money(refund.reported), total - refunded))
    lines = {
        row.line: row
        for row in conn.execute(
            select(commerce_order_lines).where(commerce_order_lines.c.order_id == order.order_id)
        )
    }
    taken: dict[int, tuple[int, Decimal]] = {}
    for asked in json.loads(refund.lines):
        row = _matching_line(lines, asked, taken)
        if row is None:
            continue
        done_quantity, done_amount = taken.get(
            row.line, (row.refunded_quantity, _money(row.refunded_amount))
        )
        quantity = min(int(asked["quantity"]), row.quantity - done_quantity)
        price = decimal_of(asked.get("price")) or _money(row.price)
        amount = min(price * quantity, _money(row.price) * row.quantity - done_amount)
        taken[row.line] = (done_quantity + quantity, done_amount + max(amount, _ZERO))
    for line, (quantity, amount) in taken.items():
        conn.execute(
            update(commerce_order_lines)
            .where(
                commerce_order_lines.c.order_id == order.order_id,
                commerce_order_lines.c.line == line,
            )
            .values(refunded_quantity=quantity, refunded_amount=str(amount))
        )
    conn.execute(
        update(commerce_orders)
        .where(commerce_orders.c.order_id == order.order_id)
        .values(refunded=str(refunded + counted))
    )
    conn.execute(
        update(commerce_refunds)
        .where(commerce_refunds.c.refund_id == refund_id)
        .values(amount=str(counted), applied=True, customer_id=order.customer_id)
    )


def _matching_line(
    lines: dict[int, Row[Any]], asked: dict[str, Any], taken: dict[int, tuple[int, Decimal]]
) -> Row[Any] | None:
    """The order's line a refund names: by its number, else its variant, product or SKU
    (the first with a quantity left)."""
    if asked.get("line") is not None:
        return lines.get(int(asked["line"]))
    for key in ("variant_id", "product_id", "sku"):
        if not asked.get(key):
            continue
        for row in lines.values():
            done = taken.get(row.line, (row.refunded_quantity, _ZERO))[0]
            if getattr(row, key) == asked[key] and done < row.quantity:
                return row
    return None


def _attach(
    conn: Connection, order_id: str, now: int, rules: shipment_alerts.ShipmentRules
) -> None:
    """An order arrived (or learnt its customer): what was kept for it takes its customer
    (its parcels on their way are watched for a stall from their last report), and its
    refunds kept meanwhile are counted, in their order."""
    order = _order_row(conn, order_id)
    if order is None:
        return
    customer = order.customer_id
    if customer is not None:
        s = commerce_shipments.c
        unwatched = conn.execute(
            select(s.shipment_id, s.updated_at, s.estimated_to).where(
                s.order_id == order_id,
                s.customer_id.is_(None),
                s.status.not_in(sorted(statuses.FINAL)),
            )
        ).all()
        shipment_ids = select(commerce_shipments.c.shipment_id).where(
            commerce_shipments.c.order_id == order_id
        )
        conn.execute(
            update(commerce_shipment_scans)
            .where(
                commerce_shipment_scans.c.shipment_id.in_(shipment_ids),
                commerce_shipment_scans.c.customer_id.is_(None),
            )
            .values(customer_id=customer)
        )
        for table in (commerce_shipments, commerce_refunds, commerce_returns):
            conn.execute(
                update(table)
                .where(table.c.order_id == order_id, table.c.customer_id.is_(None))
                .values(customer_id=customer)
            )
        shipment_alerts.watch_from_last_report(
            conn,
            [
                (
                    row.shipment_id,
                    int(row.updated_at),
                    None if row.estimated_to is None else int(row.estimated_to),
                )
                for row in unwatched
            ],
            customer,
            now,
            rules,
        )
    kept = conn.execute(
        select(commerce_cancellations).where(commerce_cancellations.c.order_id == order_id)
    ).first()
    if kept is not None:  # cancelled before it came
        _cancel(conn, order, int(kept.occurred_at), kept.reason, now)
        conn.execute(
            delete(commerce_cancellations).where(commerce_cancellations.c.order_id == order_id)
        )
    pending = conn.execute(
        select(commerce_refunds.c.refund_id)
        .where(commerce_refunds.c.order_id == order_id, commerce_refunds.c.applied.is_(False))
        .order_by(commerce_refunds.c.occurred_at, commerce_refunds.c.refund_id)
    ).scalars()
    for refund_id in list(pending):
        current = _order_row(conn, order_id)
        assert current is not None
        _apply_refund(conn, current, refund_id)


# ---- shipments ----------------------------------------------------------------------------


def _ours(event: Event) -> bool:
    """An event commerce appended itself about a parcel: no report of one."""
    return event.name == STAGE_REACHED or shipment_alerts.emitted(event)


def _shipment(
    conn: Connection, event: Event, now: int, rules: shipment_alerts.ShipmentRules
) -> list[Event]:
    """Apply a shipment's report: the `Shipment Stage Reached` it makes when it moves the
    shipment to a stage (or `exception`) and the `Shipment Delayed` when it moves its
    estimate later, about a known customer; its stall job moved or cancelled."""
    props = event.properties
    shipment_id = _text(props.get("shipment_id") or props.get("fulfillment_id"))
    if not shipment_id:
        return []
    named = (event.name or "").removeprefix(SHIPMENT_PREFIX)
    word = _text(props.get("status")) or named.replace(" ", "_").lower()
    status = statuses.status_of(word)
    at = event.occurred_at
    order_id = _text(props.get("order_id"))
    found = conn.execute(
        select(commerce_shipments).where(commerce_shipments.c.shipment_id == shipment_id)
    ).first()
    details: dict[str, Any] = {
        name: value
        for name in ("carrier", "tracking_number", "tracking_url")
        if (value := _text(props.get(name))) is not None
    }
    estimate = _estimate(props)
    applied: bool
    moved_to: str | None = None  # the stage this report moved the shipment to
    first_seen_delivered = False
    if found is None:
        customer = event.customer_id
        if customer is None and order_id:
            order = _order_row(conn, order_id)
            customer = order.customer_id if order is not None else None
        position = statuses.first_position(status, at)
        conn.execute(
            insert(commerce_shipments).values(
                shipment_id=shipment_id,
                order_id=order_id,
                customer_id=customer,
                status=position.status,
                progress=position.progress,
                status_at=at,
                first_status=position.status,
                estimated_from=estimate[0] if estimate else None,
                estimated_to=estimate[1] if estimate else None,
                estimate_at=at if estimate else None,
                first_estimated_to=estimate[1] if estimate else None,
                delivered_at=at if position.status == statuses.DELIVERED else None,
                created_at=now,
                updated_at=now,
                **details,
            )
        )
        applied = status is not None
        moved_to = position.status if applied else None
        first_seen_delivered = position.status == statuses.DELIVERED
        status_now, was_final = position.status, None
        current: dict[str, Any] = {
            "order_id": order_id,
            "estimated_from": estimate[0] if estimate else None,
            "estimated_to": estimate[1] if estimate else None,
            **details,
        }
    else:
        customer = found.customer_id if found.customer_id is not None else event.customer_id
        changes: dict[str, Any] = dict(details)
        if found.order_id is None and order_id:
            changes["order_id"] = order_id
        if found.customer_id is None and customer is not None:
            changes["customer_id"] = customer
        moved = statuses.advance(
            statuses.Position(found.status, found.progress, found.status_at), status, at
        )
        applied = moved is not None
        if moved is not None:
            changes.update(status=moved.status, progress=moved.progress, status_at=moved.at)
            if moved.status == statuses.DELIVERED:
                changes["delivered_at"] = at
            moved_to = moved.status
        if estimate and (found.estimate_at is None or at >= found.estimate_at):
            changes.update(estimated_from=estimate[0], estimated_to=estimate[1], estimate_at=at)
        if estimate and found.first_estimated_to is None:
            changes["first_estimated_to"] = estimate[1]
        current = {**found._asdict(), **changes}
        status_now, was_final = current["status"], found.status in statuses.FINAL
        changes["updated_at"] = now
        conn.execute(
            update(commerce_shipments)
            .where(commerce_shipments.c.shipment_id == shipment_id)
            .values(**changes)
        )
    conn.execute(
        insert(commerce_shipment_scans).values(
            shipment_id=shipment_id,
            customer_id=customer,
            message_id=event.message_id,
            reported=word,
            status=status,
            location=_text(props.get("location")),
            source=SOURCES.get(event.source, event.source),
            applied=applied,
            occurred_at=at,
            recorded_at=now,
        )
    )
    shipment_alerts.watch(
        conn,
        shipment_id,
        customer,
        status_now,
        was_final,
        current["estimated_to"],
        now,
        rules,
    )
    made: list[Event] = []
    if moved_to is not None and customer is not None:
        made.append(
            _stage_reached(
                int(customer), shipment_id, moved_to, current, event, now, first_seen_delivered
            )
        )
    if found is not None:
        delayed = shipment_alerts.slipped(
            customer,
            shipment_id,
            status_now,
            (found.estimated_from, found.estimated_to),
            (current["estimated_from"], current["estimated_to"]),
            current,
            event,
            now,
        )
        if delayed is not None:
            made.append(delayed)
    return made


def _stage_reached(
    customer: int,
    shipment_id: str,
    stage: str,
    shipment: dict[str, Any],
    report: Event,
    now: int,
    first_seen_delivered: bool,
) -> Event:
    """`Shipment Stage Reached`: dated by the report that moved the shipment, its message
    id made of the shipment and the stage (once each, ever)."""
    props: dict[str, Any] = {
        "shipment_id": shipment_id,
        "stage": stage,
        "stage_key": f"{shipment_id}:{stage}",  # a journey's entry key: one run each
        "first_seen_delivered": first_seen_delivered,
    }
    for name in ("order_id", "carrier", "tracking_number", "tracking_url"):
        if (value := shipment.get(name)) is not None:
            props[name] = value
    if shipment.get("estimated_from") is not None:
        props["estimated_delivery_from"] = iso(int(shipment["estimated_from"]))
    if shipment.get("estimated_to") is not None:
        props["estimated_delivery_to"] = iso(int(shipment["estimated_to"]))
    if (location := _text(report.properties.get("location"))) is not None:
        props["location"] = location
    return internal_event(
        customer,
        STAGE_REACHED,
        props,
        report.occurred_at,
        f"commerce:shipment-stage:{shipment_id}:{stage}",
        "system",
        received_at=now,
    )


def _estimate(props: dict[str, Any]) -> tuple[int, int] | None:
    """The estimated delivery window: `estimated_delivery_from`/`_to`, or the one time
    `estimated_delivery_at` (ISO 8601). A day without a time (`2026-12-10`) ends at the
    end of that day (UTC): a parcel expected that day is late only once it is over."""
    single = props.get("estimated_delivery_at")
    start = _time(props.get("estimated_delivery_from")) or _time(single)
    end = _day_end(props.get("estimated_delivery_to")) or _day_end(single) or start
    if start is None or end is None:
        return None
    return (min(start, end), max(start, end))


def _day_end(value: Any) -> int | None:
    """The time a window's end says; the last millisecond of a day given without a time."""
    found = _time(value)
    if found is not None and isinstance(value, str) and len(value.strip()) == len("2026-12-10"):
        return found + reviews.DAY_MS - 1
    return found


# ---- returns ------------------------------------------------------------------------------


def _return(conn: Connection, event: Event, now: int, commerce: Commerce) -> None:
    props = event.properties
    return_id = _text(props.get("return_id"))
    if not return_id or event.name is None:
        return
    stage = RETURN_EVENTS[event.name]
    at = event.occurred_at
    found = conn.execute(
        select(commerce_returns).where(commerce_returns.c.return_id == return_id)
    ).first()
    if found is None:
        order_id = _text(props.get("order_id"))
        if not order_id:
            return
        order = _order_row(conn, order_id)
        customer = event.customer_id
        if customer is None and order is not None:
            customer = order.customer_id
        values: dict[str, Any] = {
            "return_id": return_id,
            "order_id": order_id,
            "customer_id": customer,
            "status": stage,
            "reason": _text(props.get("reason")),
            f"{stage}_at": at,
            "updated_at": now,
        }
        if stage == "requested":
            window = return_window(conn, commerce.return_window_days, commerce.sector)
            values["window_days"] = window.days
            since = _window_start(conn, order_id, order)
            if since is not None:
                values["within_window"] = at <= since + window.days * 86_400_000
        conn.execute(insert(commerce_returns).values(**values))
        return
    changes: dict[str, Any] = {"updated_at": now}
    if getattr(found, f"{stage}_at") is None:
        changes[f"{stage}_at"] = at
    if RETURN_STAGES.index(stage) > RETURN_STAGES.index(found.status):
        changes["status"] = stage
    conn.execute(
        update(commerce_returns).where(commerce_returns.c.return_id == return_id).values(**changes)
    )


def _window_start(conn: Connection, order_id: str, order: Row[Any] | None) -> int | None:
    """When the return window opened: the order's last delivery, else its placing."""
    delivered = conn.execute(
        select(commerce_shipments.c.delivered_at)
        .where(
            and_(
                commerce_shipments.c.order_id == order_id,
                commerce_shipments.c.delivered_at.is_not(None),
            )
        )
        .order_by(commerce_shipments.c.delivered_at.desc())
        .limit(1)
    ).scalar()
    if delivered is not None:
        return int(delivered)
    return int(order.placed_at) if order is not None else None


# ---- helpers ------------------------------------------------------------------------------


def _order_row(conn: Connection, order_id: str | None) -> Row[Any] | None:
    if not order_id:
        return None
    return conn.execute(
        select(commerce_orders).where(commerce_orders.c.order_id == order_id)
    ).first()


def _has_lines(conn: Connection, order_id: str) -> bool:
    return (
        conn.execute(
            select(commerce_order_lines.c.line)
            .where(commerce_order_lines.c.order_id == order_id)
            .limit(1)
        ).first()
        is not None
    )


def _money(value: Any) -> Decimal:
    return decimal_of(value) or _ZERO


def _quantity(value: Any) -> int:
    number = decimal_of(value)
    if number is None or number < 1:
        return 1
    return int(number)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool | dict | list):
        return None
    text = str(value).strip()
    return text or None


def _time(value: Any) -> int | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return parse_iso(value)
    except ValueError:
        return None
