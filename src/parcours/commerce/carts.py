"""Carts and checkouts projected from the shopper's events, announced once as `Cart
Abandoned` after a time without activity, closed by an order (docs/commerce.md, "Carts
and checkouts").

A group of appended events is applied in memory, then written in a few statements for
all its carts: one read of the carts it names (by cart, checkout or order id, or the
shopper's live carts), one insert of the new carts, one update of those it changed and one
of those an order closed; then each cart's abandonment job is scheduled (or cancelled)
under its unique key, so that every activity pushes it back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
    update,
)

from parcours.commerce import rows as commerce_rows
from parcours.commerce.tables import commerce_carts
from parcours.customers import decimal_of, order_key
from parcours.log import Event, Reactions, append_events, internal_event
from parcours.runtime.clock import iso
from parcours.runtime.db import (
    holding_writes,
    insert_rows,
    reading_ahead,
    stop_holding,
    update_rows,
)
from parcours.runtime.queue import Job, cancel, enqueue

ADDED = "Product Added"
REMOVED = "Product Removed"
VIEWED = "Cart Viewed"
CHECKOUT_STARTED = "Checkout Started"
CHECKOUT_UPDATED = "Checkout Updated"
CART_EVENTS = frozenset({ADDED, REMOVED, VIEWED, CHECKOUT_STARTED, CHECKOUT_UPDATED})
ORDER_PLACED = "Order Completed"
ABANDONED_EVENT = "Cart Abandoned"
JOB = "commerce.cart_abandoned"

OPEN = "open"
ABANDONED = "abandoned"
ORDERED = "ordered"
RECOVERED = "recovered"
LIVE = (OPEN, ABANDONED)
STATUSES = (OPEN, ABANDONED, ORDERED, RECOVERED)
_ZERO = Decimal(0)
_SOURCES = {"api": "site", "shopify": "shopify", "import": "import", "admin": "admin"}


@dataclass(frozen=True)
class CartRules:
    """When a cart is abandoned (`cart_abandon_after_minutes` without activity) and how
    long after its last activity an order of its customer, naming no cart, closes it
    (`cart_order_window_hours`)."""

    abandon_after_ms: int = 60 * 60_000
    order_window_ms: int = 168 * 3_600_000


class CartItem(msgspec.Struct, frozen=True):
    product_id: str | None
    variant_id: str | None
    sku: str | None
    name: str | None
    variant: str | None  # the variant's name (size, colour)
    image_url: str | None
    url: str | None
    price: Decimal | None  # one unit's
    quantity: int


class Cart(msgspec.Struct, frozen=True):
    cart_key: str  # cart:<cart_id>, checkout:<checkout_id> or customer:<id>:<first event>
    cart_id: str | None
    checkout_id: str | None
    order_id: str | None  # the order its checkout named, or the one that closed it
    customer_id: int | None
    status: str  # open | abandoned | ordered | recovered
    currency: str | None
    value: Decimal
    items: tuple[CartItem, ...]
    item_count: int
    recovery_url: str | None  # checkout_url, else cart_url
    source: str
    created_at: int
    last_activity_at: int
    checkout_started_at: int | None
    abandoned_at: int | None
    ordered_at: int | None

    @property
    def recovered(self) -> bool:
        """Abandoned, then ordered."""
        return self.status == RECOVERED


# ---- the projection -----------------------------------------------------------------------


@dataclass
class _State:
    """A cart being changed by a group of events."""

    key: str
    cart_id: str | None
    checkout_id: str | None
    order_id: str | None
    customer_id: int | None
    status: str
    currency: str | None
    value: Decimal
    items: list[dict[str, Any]]
    recovery_url: str | None
    source: str
    created_at: int
    last_activity_at: int
    checkout_started_at: int | None
    abandoned_at: int | None
    ordered_at: int | None
    new: bool = False
    touched: bool = False
    closed: bool = False
    was_open_with_items: bool = False

    @property
    def item_count(self) -> int:
        return sum(int(item["quantity"]) for item in self.items)


_IDS = ("cart_id", "checkout_id", "order_id", "customer_id")


class _Carts:
    """The group's carts by key, in the order they were read or made, and those under each
    cart id, checkout id, order id and shopper, so that an event finds its own without
    going through them all (a flash sale's group of 1,000 new carts went through every
    one for each of its events: a quarter of the writer's time). A cart is `noted` under
    each id it takes; one found under an id it no longer has is left out where looked up."""

    def __init__(self) -> None:
        self.by_key: dict[str, _State] = {}
        self._position: dict[str, int] = {}
        self._under: dict[tuple[str, object], list[_State]] = {}

    def values(self) -> Iterable[_State]:
        return self.by_key.values()

    def add(self, state: _State) -> None:
        self._position.setdefault(state.key, len(self._position))  # as a dict keeps it
        self.by_key[state.key] = state
        for kind in _IDS:
            self.note(state, kind)

    def note(self, state: _State, kind: str) -> None:
        """`state` has taken an id of this kind (an attribute of `_IDS`)."""
        value = getattr(state, kind)
        if value is not None:
            found = self._under.setdefault((kind, value), [])
            if not any(other is state for other in found):
                found.append(state)

    def under(self, kind: str, value: object) -> list[_State]:
        """The group's carts whose id of this kind is `value`, in the order they came."""
        found = [
            state
            for state in self._under.get((kind, value), ())
            if getattr(state, kind) == value and self.by_key.get(state.key) is state
        ]
        return sorted(found, key=lambda state: self._position[state.key])


def apply(conn: Connection, events: list[Event], now: int, rules: CartRules) -> None:
    """The reaction's part for carts: the group's cart events and orders, in order."""
    relevant = _relevant(events)
    if not relevant:
        return
    carts = _load(conn, relevant)
    for event in relevant:
        if event.name == ORDER_PLACED:
            _close(carts, event, rules)
        else:
            _activity(carts, event, now)
    _write(conn, carts, now)
    _schedule(conn, carts, now, rules)


def read_ahead(conn: Connection, events: list[Event]) -> None:
    """`apply`'s read of the stored carts, for these events (inside `runtime.db.send_ahead`:
    sent now, taken by `apply`)."""
    relevant = _relevant(events)
    if relevant:
        _load(conn, relevant)


def _relevant(events: list[Event]) -> list[Event]:
    return [
        event
        for event in events
        if event.type == "track" and (event.name in CART_EVENTS or event.name == ORDER_PLACED)
    ]


def _load(conn: Connection, events: list[Event]) -> _Carts:
    """The stored carts the group may touch, in one statement: those it names by cart,
    checkout or order id, and the live carts of its shoppers."""
    cart_ids: set[str] = set()
    checkout_ids: set[str] = set()
    order_ids: set[str] = set()
    customers: set[int] = set()
    for event in events:
        props = event.properties
        for found, name in ((cart_ids, "cart_id"), (checkout_ids, "checkout_id")):
            if (value := _text(props.get(name))) is not None:
                found.add(value)
        if (order_id := _text(props.get("order_id"))) is not None:
            order_ids.add(order_id)
        if event.customer_id is not None:
            customers.add(event.customer_id)
    carts = _Carts()
    touched = commerce_rows.carts_touched(conn, cart_ids, checkout_ids, order_ids, customers, LIVE)
    for row in touched:
        state = _State(
            key=row.cart_key,
            cart_id=row.cart_id,
            checkout_id=row.checkout_id,
            order_id=row.order_id,
            customer_id=row.customer_id,
            status=row.status,
            currency=row.currency,
            value=decimal_of(row.value) or _ZERO,
            items=json.loads(row.items),
            recovery_url=row.recovery_url,
            source=row.source,
            created_at=row.created_at,
            last_activity_at=row.last_activity_at,
            checkout_started_at=row.checkout_started_at,
            abandoned_at=row.abandoned_at,
            ordered_at=row.ordered_at,
        )
        state.was_open_with_items = state.status == OPEN and state.item_count > 0
        carts.add(state)
    return carts


def _find(
    carts: _Carts, cart_id: str | None, checkout_id: str | None, customer: int | None
) -> _State | None:
    """The cart an event is about: the one with its cart id, else its checkout id, else
    its shopper's live cart that names no other (the latest active)."""
    if cart_id is not None and (named := carts.under("cart_id", cart_id)):
        return named[0]
    if checkout_id is not None and (named := carts.under("checkout_id", checkout_id)):
        return named[0]
    if customer is None:
        return None
    live = [
        state
        for state in carts.under("customer_id", customer)
        if state.status in LIVE
        and (cart_id is None or state.cart_id is None)
        and (checkout_id is None or state.checkout_id is None)
    ]
    return max(live, key=lambda state: state.last_activity_at, default=None)


def _activity(carts: _Carts, event: Event, now: int) -> None:
    props = event.properties
    name = event.name
    cart_id = _text(props.get("cart_id"))
    checkout_id = _text(props.get("checkout_id"))
    at = event.occurred_at
    state = _find(carts, cart_id, checkout_id, event.customer_id)
    if state is None:
        if cart_id is not None:
            key = f"cart:{cart_id}"
        elif checkout_id is not None:
            key = f"checkout:{checkout_id}"
        elif event.customer_id is not None:
            key = f"customer:{event.customer_id}:{event.message_id}"
        else:
            return  # nobody's, and no id to find it by again
        state = _State(
            key=key,
            cart_id=cart_id,
            checkout_id=checkout_id,
            order_id=None,
            customer_id=event.customer_id,
            status=OPEN,
            currency=None,
            value=_ZERO,
            items=[],
            recovery_url=None,
            source=_SOURCES.get(event.source, event.source),
            created_at=at,
            last_activity_at=at,
            checkout_started_at=None,
            abandoned_at=None,
            ordered_at=None,
            new=True,
        )
        carts.add(state)
    if state.status not in LIVE:
        return  # a late report of a cart already ordered changes nothing
    state.touched = True
    if state.cart_id is None and cart_id is not None:
        state.cart_id = cart_id
        carts.note(state, "cart_id")
    if state.checkout_id is None and checkout_id is not None:
        state.checkout_id = checkout_id
        carts.note(state, "checkout_id")
    if state.customer_id is None and event.customer_id is not None:
        state.customer_id = event.customer_id
        carts.note(state, "customer_id")
    changed = False
    if name == ADDED:
        _add(state.items, _item(props))
        changed = True
    elif name == REMOVED:
        _remove(state.items, _item(props), props.get("quantity") is not None)
        changed = True
    elif isinstance(props.get("products"), list):
        state.items = [_item(p) for p in props["products"] if isinstance(p, dict)]
        changed = True
    given = None
    if name != ADDED and name != REMOVED:
        given = next(
            (
                value
                for key in ("value", "total", "revenue")
                if (value := decimal_of(props.get(key))) is not None
            ),
            None,
        )
    if given is not None:
        state.value = given
    elif changed:
        state.value = sum(
            (
                (decimal_of(item.get("price")) or _ZERO) * int(item["quantity"])
                for item in state.items
            ),
            _ZERO,
        )
    if currency := _text(props.get("currency")):
        state.currency = currency.upper()
    if url := _text(props.get("checkout_url")) or _text(props.get("cart_url")):
        state.recovery_url = url
    if name in (CHECKOUT_STARTED, CHECKOUT_UPDATED):
        if state.checkout_started_at is None or at < state.checkout_started_at:
            state.checkout_started_at = at
        if (order_id := _text(props.get("order_id"))) is not None:
            state.order_id = order_id  # Segment's Checkout Started names the order to come
            carts.note(state, "order_id")
    state.last_activity_at = max(state.last_activity_at, at)
    state.created_at = min(state.created_at, at)


def _item(props: dict[str, Any]) -> dict[str, Any]:
    price = decimal_of(props.get("price"))
    quantity = decimal_of(props.get("quantity"))
    return {
        "product_id": _text(props.get("product_id")),
        "variant_id": _text(props.get("variant_id")),
        "sku": _text(props.get("sku")),
        "name": _text(props.get("name")),
        "variant": _text(props.get("variant")),
        "image_url": _text(props.get("image_url")),
        "url": _text(props.get("url")),
        "price": None if price is None else str(price),
        "quantity": int(quantity) if quantity is not None and quantity >= 1 else 1,
    }


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two lines of one product and variant: by variant id, else SKU, else product and
    variant name."""
    for key in ("variant_id", "sku"):
        if a[key] is not None or b[key] is not None:
            return bool(a[key] == b[key])
    return bool(a["product_id"] == b["product_id"] and a["variant"] == b["variant"])


def _add(items: list[dict[str, Any]], item: dict[str, Any]) -> None:
    for line in items:
        if _same(line, item):
            line["quantity"] = int(line["quantity"]) + item["quantity"]
            for key, value in item.items():  # what the new report tells of it
                if key != "quantity" and value is not None:
                    line[key] = value
            return
    items.append(item)


def _remove(items: list[dict[str, Any]], item: dict[str, Any], counted: bool) -> None:
    """A `Product Removed` takes its quantity off the line, the whole line without one."""
    for index, line in enumerate(items):
        if _same(line, item):
            left = int(line["quantity"]) - item["quantity"] if counted else 0
            if left > 0:
                line["quantity"] = left
            else:
                del items[index]
            return


def _close(carts: _Carts, event: Event, rules: CartRules) -> None:
    """An order closes the carts it names (cart, checkout or the order its checkout
    announced) and its customer's live carts active within the window before it; a
    cart abandoned before is recovered."""
    props = event.properties
    at = event.occurred_at
    order_id = order_key(props, event.message_id)
    cart_id = _text(props.get("cart_id"))
    checkout_id = _text(props.get("checkout_id"))
    customer = event.customer_id
    named = [
        *(carts.under("cart_id", cart_id) if cart_id is not None else ()),
        *(carts.under("checkout_id", checkout_id) if checkout_id is not None else ()),
        *carts.under("order_id", order_id),
    ]
    recent = [
        state
        for state in (carts.under("customer_id", customer) if customer is not None else ())
        if state.created_at <= at and at - state.last_activity_at <= rules.order_window_ms
    ]
    closing = {id(state): state for state in (*named, *recent) if state.status in LIVE}
    for state in closing.values():
        state.status = RECOVERED if state.status == ABANDONED else ORDERED
        state.ordered_at = at
        state.order_id = order_id
        state.closed = True
        carts.note(state, "order_id")


def _row(state: _State, now: int) -> dict[str, Any]:
    return {
        "cart_key": state.key,
        "cart_id": state.cart_id,
        "checkout_id": state.checkout_id,
        "order_id": state.order_id,
        "customer_id": state.customer_id,
        "status": state.status,
        "currency": state.currency,
        "value": str(state.value),
        "items": json.dumps(state.items, sort_keys=True),
        "item_count": state.item_count,
        "recovery_url": state.recovery_url,
        "source": state.source,
        "created_at": state.created_at,
        "last_activity_at": state.last_activity_at,
        "checkout_started_at": state.checkout_started_at,
        "abandoned_at": state.abandoned_at,
        "ordered_at": state.ordered_at,
        "updated_at": now,
    }


# What an activity changes of a stored cart (never its status: the abandonment job may
# have changed that meanwhile; an order's closing is written apart).
_ACTIVITY_COLUMNS = (
    "cart_id",
    "checkout_id",
    "customer_id",
    "currency",
    "value",
    "items",
    "item_count",
    "recovery_url",
    "created_at",
    "last_activity_at",
    "checkout_started_at",
    "updated_at",
)


def _write(conn: Connection, carts: _Carts, now: int) -> None:
    table = commerce_carts
    new = [_row(state, now) for state in carts.values() if state.new]
    if new:
        insert_rows(conn, table, list(new[0]), [tuple(row.values()) for row in new])
    touched = [_row(state, now) for state in carts.values() if state.touched and not state.new]
    update_rows(
        conn,
        table,
        _ACTIVITY_COLUMNS,
        "cart_key",
        [(*(row[name] for name in _ACTIVITY_COLUMNS), row["cart_key"]) for row in touched],
    )
    closed = [
        {"b_key": state.key, "b_at": state.ordered_at, "b_order": state.order_id}
        for state in carts.values()
        if state.closed and not state.new
    ]
    if closed:
        statement = (
            update(table)
            .where(
                table.c.cart_key == bindparam("b_key"),
                or_(table.c.status == OPEN, table.c.status == ABANDONED),  # no IN: executemany
            )
            .values(
                status=case((table.c.status == ABANDONED, RECOVERED), else_=ORDERED),
                ordered_at=bindparam("b_at"),
                order_id=bindparam("b_order"),
                updated_at=now,
            )
        )
        conn.execute(statement, closed)


def _schedule(conn: Connection, carts: _Carts, now: int, rules: CartRules) -> None:
    """Each open cart with items that an event touched: its abandonment job, at its last
    activity plus the delay (one job per cart: its key replaces the one before). A cart
    closed or emptied: its job cancelled. A cart whose last activity is already older than
    the delay and the order window (events of long ago, imported) is not announced.
    Several carts' jobs are written together, in a statement or two (the queue's held
    writes), unless the connection holds its writes already (a set of jobs appending)."""
    changing = [state for state in carts.values() if state.touched or state.closed]
    if len(changing) > 1 and not reading_ahead(conn):
        holder = holding_writes(conn)
        try:
            _schedule_each(conn, changing, now, rules)
            holder.release(conn)
        finally:
            stop_holding(conn)
    else:
        _schedule_each(conn, changing, now, rules)


def _schedule_each(conn: Connection, carts: list[_State], now: int, rules: CartRules) -> None:
    for state in carts:
        key = job_key(state.key)
        due = state.last_activity_at + rules.abandon_after_ms
        wanted = (
            state.status == OPEN
            and state.item_count > 0
            and state.customer_id is not None
            and now - due < rules.order_window_ms
        )
        if wanted:
            enqueue(
                conn,
                JOB,
                {"cart": state.key},
                run_at=due,
                now=now,
                unique_key=key,
                customer_id=state.customer_id,
            )
        elif state.was_open_with_items:
            cancel(conn, key)


def job_key(cart_key: str) -> str:
    return f"commerce:cart-abandoned:{cart_key}"


# ---- the abandonment job ------------------------------------------------------------------


def abandon(
    conn: Connection,
    job: Job,
    now: int,
    rules: CartRules,
    reactions: Reactions,
) -> None:
    """A cart's time without activity is up: it is abandoned, and `Cart Abandoned` is
    appended once (its message id is the cart's), unless an order or an activity came
    meanwhile (then there is nothing to do, or the job is scheduled again)."""
    key = str(job.payload.get("cart", ""))
    table = commerce_carts
    row = conn.execute(select(table).where(table.c.cart_key == key)).first()
    if row is None or row.status != OPEN or row.item_count <= 0 or row.customer_id is None:
        return
    due = row.last_activity_at + rules.abandon_after_ms
    if due > now:  # an activity the job was not moved for (it always is: a safeguard)
        enqueue(
            conn,
            JOB,
            {"cart": key},
            run_at=due,
            now=now,
            unique_key=job_key(key),
            customer_id=row.customer_id,
        )
        return
    moved = conn.execute(
        update(table)
        .where(
            table.c.cart_key == key,
            table.c.status == OPEN,
            table.c.last_activity_at == row.last_activity_at,
        )
        .values(status=ABANDONED, abandoned_at=now, updated_at=now)
    )
    if moved.rowcount != 1:
        return  # an order or an activity got there first
    event = internal_event(
        int(row.customer_id),
        ABANDONED_EVENT,
        abandoned_properties(_cart(row), rules),
        now,
        abandoned_message_id(key),
        "system",
    )
    append_events(conn, [[event]], now, reactions)


def abandoned_message_id(cart_key: str) -> str:
    """The message id of a cart's `Cart Abandoned` (appended once per cart): how the
    journeys it entered name it (their runs' entry message)."""
    return f"commerce:cart-abandoned:{cart_key}"


def abandoned_properties(cart: Cart, rules: CartRules) -> dict[str, Any]:
    """The properties of `Cart Abandoned`: the cart's ids, items, value and recovery link,
    as the cart events name them (so that a journey and its templates read them alike)."""
    props: dict[str, Any] = {
        "cart_id": cart.cart_id or cart.cart_key,
        "cart_key": cart.cart_key,
        "total": float(cart.value),
        "value": float(cart.value),
        "item_count": cart.item_count,
        "products": [
            {
                key: (float(value) if isinstance(value, Decimal) else value)
                for key, value in msgspec.structs.asdict(item).items()
                if value is not None
            }
            for item in cart.items
        ],
        "last_activity_at": iso(cart.last_activity_at),
        "inactive_minutes": rules.abandon_after_ms // 60_000,
    }
    for name, value in (
        ("checkout_id", cart.checkout_id),
        ("order_id", cart.order_id),
        ("currency", cart.currency),
        ("checkout_url", cart.recovery_url),
        ("cart_url", cart.recovery_url),
    ):
        if value is not None:
            props[name] = value
    return props


def _cart(row: Any) -> Cart:
    return Cart(
        cart_key=row.cart_key,
        cart_id=row.cart_id,
        checkout_id=row.checkout_id,
        order_id=row.order_id,
        customer_id=row.customer_id,
        status=row.status,
        currency=row.currency,
        value=decimal_of(row.value) or _ZERO,
        items=tuple(
            CartItem(
                product_id=item.get("product_id"),
                variant_id=item.get("variant_id"),
                sku=item.get("sku"),
                name=item.get("name"),
                variant=item.get("variant"),
                image_url=item.get("image_url"),
                url=item.get("url"),
                price=decimal_of(item.get("price")),
                quantity=int(item.get("quantity") or 1),
            )
            for item in json.loads(row.items)
        ),
        item_count=row.item_count,
        recovery_url=row.recovery_url,
        source=row.source,
        created_at=row.created_at,
        last_activity_at=row.last_activity_at,
        checkout_started_at=row.checkout_started_at,
        abandoned_at=row.abandoned_at,
        ordered_at=row.ordered_at,
    )


# ---- the face's reads ---------------------------------------------------------------------


def cart_of(conn: Connection, cart_id: str) -> Cart | None:
    """A cart by its key, its cart id or its checkout id."""
    table = commerce_carts
    row = conn.execute(
        select(table)
        .where(
            or_(
                table.c.cart_key == cart_id,
                table.c.cart_id == cart_id,
                table.c.checkout_id == cart_id,
            )
        )
        .order_by(table.c.last_activity_at.desc())
        .limit(1)
    ).first()
    return None if row is None else _cart(row)


def carts_of(conn: Connection, customer_id: int, *, status: str | None = None) -> list[Cart]:
    """A customer's carts, the latest active first (only those of one status if given)."""
    table = commerce_carts
    query = select(table).where(table.c.customer_id == customer_id)
    if status is not None:
        query = query.where(table.c.status == status)
    rows = conn.execute(query.order_by(table.c.last_activity_at.desc(), table.c.cart_key))
    return [_cart(row) for row in rows]


# ---- the console's page of carts -----------------------------------------------------------


@dataclass(frozen=True)
class CartSummary:
    """The carts abandoned since a moment (recovered later or not), those of them an order
    recovered, and the recovered carts' value per currency."""

    since: int
    abandoned: int
    recovered: int
    revenue: dict[str, Decimal]

    @property
    def rate(self) -> float | None:
        """The recovered share of the abandoned (None: none abandoned)."""
        return self.recovered / self.abandoned if self.abandoned else None


def carts_list(
    conn: Connection,
    *,
    status: str | None = None,
    active_since: int | None = None,
    before: tuple[int, str] | None = None,
    limit: int = 50,
) -> list[Cart]:
    """Carts, the latest active first (ties by key, the highest first), of one status
    and active since a moment if asked; those after `before` (a cart's last activity and
    key) when a page is asked from a cursor. One statement on an index of the status and
    the last activity (migration 0039): a page costs its rows alone, however many carts."""
    table = commerce_carts
    query = select(table)
    if status is not None:
        query = query.where(table.c.status == status)
    if active_since is not None:
        query = query.where(table.c.last_activity_at >= active_since)
    if before is not None:
        at, key = before
        query = query.where(
            or_(
                table.c.last_activity_at < at,
                and_(table.c.last_activity_at == at, table.c.cart_key < key),
            )
        )
    query = query.order_by(table.c.last_activity_at.desc(), table.c.cart_key.desc()).limit(limit)
    return [_cart(row) for row in conn.execute(query)]


def cart_summary(conn: Connection, since: int) -> CartSummary:
    """The carts abandoned since `since` and what orders recovered of them: a count per
    status read from the index of status and abandonment time alone (migration 0039),
    then the recovered carts' currencies and values (one row each, summed exactly here).
    Only abandoned carts have an abandonment time; an order makes them recovered."""
    table = commerce_carts
    counts: dict[str, int] = {
        str(status): int(count)
        for status, count in conn.execute(
            select(table.c.status, func.count())
            .where(table.c.status.in_((ABANDONED, RECOVERED)), table.c.abandoned_at >= since)
            .group_by(table.c.status)
        )
    }
    revenue: dict[str, Decimal] = {}
    for currency, value in conn.execute(
        select(table.c.currency, table.c.value).where(
            table.c.abandoned_at >= since, table.c.status == RECOVERED
        )
    ):
        amount = decimal_of(value) or _ZERO
        revenue[currency or ""] = revenue.get(currency or "", _ZERO) + amount
    return CartSummary(
        since=since,
        abandoned=sum(counts.values()),
        recovered=counts.get(RECOVERED, 0),
        revenue=revenue,
    )


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool | dict | list):
        return None
    text = str(value).strip()
    return text or None
