"""Recommendations: products to show a customer in a message or on an order's tracking
page, each with its reason (docs/commerce.md, "Recommendations").

Four sources, in this order: the consumables they will soon run out of (replenishment),
what others bought with what they just bought (co-occurrence in orders), what they viewed
and did not buy, and the best sellers of the categories they buy from. Never a product
out of stock, nor one they bought (the order's, or one of their last 20 orders') unless
it is a consumable due again.

Counted as the events arrive, not by a scan per request: each new order adds to the
counts of its products and of each pair of them in the week of its placing
(`commerce_product_sales`, `commerce_bought_together`; the last 12 weeks are read, older
ones deleted), and is kept with what it added (`commerce_counted_orders`), which its
cancellation takes back once; each `Product Viewed` adds to the customer's views of that
product that day (`commerce_product_views`); a recommendation reads a few rows by key.
"""

from __future__ import annotations

import json
import weakref
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from itertools import permutations
from typing import Any

import msgspec
from sqlalchemy import Connection, delete, func, or_, select

from parcours.commerce import rows as commerce_rows
from parcours.commerce.catalog import Product, _products_of
from parcours.commerce.replenishment import DAY
from parcours.commerce.rows import add_counts
from parcours.commerce.tables import (
    commerce_bought_together,
    commerce_counted_orders,
    commerce_order_lines,
    commerce_orders,
    commerce_product_sales,
    commerce_product_views,
    commerce_products,
    commerce_replenishments,
)
from parcours.log import Event
from parcours.runtime.db import chunks, insert_rows
from parcours.runtime.settings import RECOMMENDATION_WEEKS

VIEWED_EVENT = "Product Viewed"
REASONS = ("replenish", "bought_together", "viewed", "best_seller")
VIEWS_DAYS = 30  # views older than this are not recommended from
REPLENISH_AHEAD_DAYS = 14  # a consumable expected to run out within: recommended
PAIRS_PER_ORDER = 20  # an order's products counted in pairs (the first 20: 190 pairs)
WEEK = 7 * DAY  # sales and pairs are counted per week of the orders' placing
MAX_LIMIT = 12


class Recommendation(msgspec.Struct, frozen=True):
    """A product to show, and why."""

    product_id: str
    reason: str  # replenish | bought_together | viewed | best_seller
    name: str | None
    url: str | None
    image_url: str | None
    category: str | None
    price: Decimal | None  # one unit's, the lowest of its variants in `currency`
    currency: str | None


# ---- counting as the events arrive -------------------------------------------------------


def first_week(now: int, weeks: int = RECOMMENDATION_WEEKS) -> int:
    """The oldest week counted at `now`: the last `weeks` weeks, this one included."""
    return now // WEEK - (weeks - 1)


def count_orders(
    conn: Connection,
    order_ids: Sequence[str],
    now: int,
    placed: Mapping[str, int] | None = None,
    *,
    weeks: int = RECOMMENDATION_WEEKS,
) -> None:
    """New orders: each of their products sold once more (and its units), each pair of
    their products bought together once more, in the week of their placing; each order
    kept with what was counted (`commerce_counted_orders`), once. Counted when an order
    is first stored; lines given by a later report do not change the counts. An order
    placed before the window (the last `weeks` weeks), cancelled, or counted already is
    left out. Counts of weeks before the window are deleted (they are read no more)."""
    if not order_ids:
        return
    oldest = first_week(now, weeks)
    ids = sorted(set(order_ids))
    known = placed or {}
    counted_before = commerce_rows.counted_order_ids(conn, ids)
    placed_at = {order_id: known[order_id] for order_id in ids if order_id in known}
    placed_at |= commerce_rows.placed_at_of(conn, [o for o in ids if o not in known])
    week_of = {
        order_id: at // WEEK
        for order_id, at in placed_at.items()
        if order_id not in counted_before and at // WEEK >= oldest
    }
    per_order = _order_units(conn, sorted(week_of))
    insert_rows(
        conn,
        commerce_counted_orders,
        ["order_id", "week", "products"],
        [
            (order_id, week_of[order_id], json.dumps([[p, u] for p, u in products.items()]))
            for order_id, products in sorted(per_order.items())
        ],
    )
    _add_counts(conn, [(week_of[o], products) for o, products in per_order.items()], 1)
    _forget_weeks_before(conn, oldest)


# The oldest week each database's counts were last pruned to, in this process: the counts
# of weeks before the window are deleted once a week, not with every group of orders (three
# statements that read the whole of three tables each time on PostgreSQL).
_PRUNED: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def _forget_weeks_before(conn: Connection, oldest: int) -> None:
    if _PRUNED.get(conn.engine) == oldest:
        return
    for table in (commerce_product_sales, commerce_bought_together, commerce_counted_orders):
        conn.execute(delete(table).where(table.c.week < oldest))
    _PRUNED[conn.engine] = oldest


def uncount_orders(conn: Connection, order_ids: Sequence[str]) -> None:
    """Cancelled orders: what was counted of each (`count_orders`) is taken back, once
    (its row of `commerce_counted_orders` goes with it); an order not counted, or taken
    back already, changes nothing. Never below zero."""
    counted = commerce_counted_orders
    taken: list[tuple[int, dict[str, int]]] = []
    for part in chunks(sorted(set(order_ids))):
        rows = conn.execute(
            select(counted.c.week, counted.c.products).where(counted.c.order_id.in_(part))
        ).all()
        if rows:
            conn.execute(delete(counted).where(counted.c.order_id.in_(part)))
        taken += [(int(r.week), {str(p): int(u) for p, u in json.loads(r.products)}) for r in rows]
    _add_counts(conn, taken, -1)


def _order_units(conn: Connection, order_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """The units of each product of these orders, in their lines' order (orders with
    none left out)."""
    per_order: dict[str, dict[str, int]] = defaultdict(dict)
    for row in commerce_rows.order_units(conn, order_ids):
        found = per_order[row.order_id]
        found[row.product_id] = found.get(row.product_id, 0) + int(row.quantity)
    return per_order


def _add_counts(conn: Connection, orders: list[tuple[int, dict[str, int]]], sign: int) -> None:
    """Add (`sign` 1) or take back (-1) these orders' sales and pairs, each in its week:
    one statement per table."""
    sales: dict[tuple[str, int], list[int]] = {}
    pairs: dict[tuple[str, int, str], int] = defaultdict(int)
    for week, products in orders:
        for product_id, units in products.items():
            found = sales.setdefault((product_id, week), [0, 0])
            found[0] += sign
            found[1] += sign * units
        for a, b in permutations(list(products)[:PAIRS_PER_ORDER], 2):
            pairs[(a, week, b)] += sign
    floor = sign < 0
    add_counts(
        conn,
        commerce_product_sales,
        [
            {"product_id": p, "week": w, "orders": o, "units": u}
            for (p, w), (o, u) in sorted(sales.items())
        ],
        ["product_id", "week"],
        floor=floor,
    )
    add_counts(
        conn,
        commerce_bought_together,
        [
            {"product_id": a, "week": w, "other_id": b, "orders": n}
            for (a, w, b), n in sorted(pairs.items())
        ],
        ["product_id", "week", "other_id"],
        floor=floor,
    )


def count_views(conn: Connection, events: list[Event]) -> None:
    """The group's `Product Viewed` of known customers, per customer, product and day."""
    views: dict[tuple[int, str, int], list[int]] = {}
    for event in events:
        if event.type != "track" or event.name != VIEWED_EVENT or event.customer_id is None:
            continue
        product_id = _text(event.properties.get("product_id"))
        if product_id is None:
            continue
        key = (event.customer_id, product_id, event.occurred_at // DAY)
        counted = views.setdefault(key, [0, event.occurred_at])
        counted[0] += 1
        counted[1] = max(counted[1], event.occurred_at)
    _add_views(conn, views)


def _add_views(conn: Connection, views: dict[tuple[int, str, int], list[int]]) -> None:
    rows = [
        {"customer_id": c, "product_id": p, "day": d, "views": n, "last_viewed_at": at}
        for (c, p, d), (n, at) in sorted(views.items())
    ]
    add_counts(conn, commerce_product_views, rows, ["customer_id", "product_id", "day"])


def follow_merge(conn: Connection, merged_id: int, survivor_id: int) -> None:
    """Profiles merged: the merged customer's views are added to the survivor's."""
    table = commerce_product_views
    rows = conn.execute(select(table).where(table.c.customer_id == merged_id)).all()
    if not rows:
        return
    _add_views(
        conn,
        {(survivor_id, r.product_id, r.day): [r.views, r.last_viewed_at] for r in rows},
    )
    conn.execute(delete(table).where(table.c.customer_id == merged_id))


class ProductViews(msgspec.Struct, frozen=True):
    """How many times a customer viewed a product on a day (UTC)."""

    product_id: str
    day: str  # YYYY-MM-DD
    views: int
    last_viewed_at: int


def product_views(conn: Connection, customer_id: int, *, since: int) -> list[ProductViews]:
    """The customer's views per product and day from `since` (ms), the latest day first."""
    table = commerce_product_views
    rows = conn.execute(
        select(table)
        .where(table.c.customer_id == customer_id, table.c.day >= since // DAY)
        .order_by(table.c.day.desc(), table.c.views.desc(), table.c.product_id)
    ).all()
    return [
        ProductViews(
            r.product_id,
            _day_text(int(r.day)),
            int(r.views),
            int(r.last_viewed_at),
        )
        for r in rows
    ]


def _day_text(day: int) -> str:
    return datetime.fromtimestamp(day * 86_400, UTC).date().isoformat()


# ---- choosing -------------------------------------------------------------------------------


def recommendations(
    conn: Connection,
    customer_id: int,
    *,
    now: int,
    for_order: str | None = None,
    limit: int = 4,
    weeks: int = RECOMMENDATION_WEEKS,
) -> list[Recommendation]:
    """Up to `limit` products for this customer (at most 12), each once, with its reason:
    their consumables due within two weeks, then what was bought with what they just
    bought (the order `for_order`, else their latest), then what they viewed in the last
    30 days and did not buy since, then the best sellers of the categories of what they
    bought or viewed (of the whole shop when none is known). Never a product out of
    stock, nor one they bought (`for_order`'s, their last 20 orders'), unless due again."""
    limit = max(0, min(limit, MAX_LIMIT))
    if limit == 0:
        return []
    orders = _recent_orders(conn, customer_id)
    ids = [order_id for order_id, _, _ in orders]
    if for_order is not None and for_order not in ids:
        ids.append(for_order)
    lines = _order_products(conn, ids)
    seed_order = for_order or (orders[0][0] if orders else None)
    seed = lines.get(seed_order, []) if seed_order else []
    last_bought: dict[str, int] = {}
    for order_id, placed_at, _ in orders:
        for product_id in lines.get(order_id, []):
            last_bought[product_id] = max(last_bought.get(product_id, 0), placed_at)
    bought = set(seed) | set(last_bought)
    candidates: list[tuple[str, str]] = []  # (product, reason), best first
    in_order = set(seed) if for_order is not None else set()  # its own page: not again
    candidates += [(p, "replenish") for p in _due(conn, customer_id, now) if p not in in_order]
    together = _bought_with(conn, seed, limit * 3, first_week(now, weeks))
    candidates += [(p, "bought_together") for p in together]
    viewed = [
        product_id
        for product_id, last_view in _viewed(conn, customer_id, now)
        if last_bought.get(product_id, -1) < last_view
    ]
    candidates += [(p, "viewed") for p in viewed]
    best = _best_sellers(conn, [*seed, *viewed], limit * 3 + len(bought), first_week(now, weeks))
    candidates += [(p, "best_seller") for p in best]
    chosen: dict[str, str] = {}
    for product_id, reason in candidates:
        if product_id in chosen or (reason != "replenish" and product_id in bought):
            continue
        chosen[product_id] = reason
    currencies = {order_id: currency for order_id, _, currency in orders}
    currency = currencies.get(seed_order) if seed_order else None
    return _shown(conn, chosen, currency, limit)


def _recent_orders(conn: Connection, customer_id: int) -> list[tuple[str, int, str]]:
    """The customer's orders not cancelled, the latest first (at most 20): id, time,
    currency."""
    rows = conn.execute(
        select(commerce_orders.c.order_id, commerce_orders.c.placed_at, commerce_orders.c.currency)
        .where(commerce_orders.c.customer_id == customer_id, commerce_orders.c.status == "placed")
        .order_by(commerce_orders.c.placed_at.desc(), commerce_orders.c.order_id.desc())
        .limit(20)
    ).all()
    return [(row.order_id, int(row.placed_at), str(row.currency)) for row in rows]


def _order_products(conn: Connection, order_ids: list[str]) -> dict[str, list[str]]:
    """The products of these orders' lines, per order, in their lines' order."""
    found: dict[str, list[str]] = defaultdict(list)
    if not order_ids:
        return found
    rows = conn.execute(
        select(commerce_order_lines.c.order_id, commerce_order_lines.c.product_id)
        .where(
            commerce_order_lines.c.order_id.in_(order_ids),
            commerce_order_lines.c.product_id.is_not(None),
        )
        .order_by(commerce_order_lines.c.order_id, commerce_order_lines.c.line)
    ).all()
    for row in rows:
        if row.product_id not in found[row.order_id]:
            found[row.order_id].append(str(row.product_id))
    return found


def _due(conn: Connection, customer_id: int, now: int) -> list[str]:
    table = commerce_replenishments
    rows = conn.execute(
        select(table.c.product_id)
        .where(
            table.c.customer_id == customer_id,
            table.c.depletes_at.is_not(None),
            table.c.depletes_at <= now + REPLENISH_AHEAD_DAYS * DAY,
        )
        .order_by(table.c.depletes_at, table.c.product_id)
    ).scalars()
    return [str(p) for p in rows]


def _bought_with(conn: Connection, products: list[str], limit: int, oldest: int) -> list[str]:
    """What orders of the weeks from `oldest` held with these products, the most
    orders first (the pairs' key begins with the product and the week)."""
    if not products:
        return []
    table = commerce_bought_together
    orders = func.sum(table.c.orders)
    rows = conn.execute(
        select(table.c.other_id)
        .where(table.c.product_id.in_(products), table.c.week >= oldest)
        .group_by(table.c.other_id)
        .having(orders > 0)
        .order_by(orders.desc(), table.c.other_id)
        .limit(limit + len(products))
    ).all()
    return [str(row.other_id) for row in rows if row.other_id not in products]


def _viewed(conn: Connection, customer_id: int, now: int) -> list[tuple[str, int]]:
    """Products viewed in the last 30 days, the most viewed first, with the last view."""
    views = commerce_product_views
    rows = conn.execute(
        select(
            views.c.product_id,
            func.sum(views.c.views).label("views"),
            func.max(views.c.last_viewed_at).label("last"),
        )
        .where(views.c.customer_id == customer_id, views.c.day >= (now - VIEWS_DAYS * DAY) // DAY)
        .group_by(views.c.product_id)
        .order_by(
            func.sum(views.c.views).desc(),
            func.max(views.c.last_viewed_at).desc(),
            views.c.product_id,
        )
        .limit(50)
    ).all()
    return [(str(row.product_id), int(row.last)) for row in rows]


def _best_sellers(conn: Connection, products: list[str], limit: int, oldest: int) -> list[str]:
    """The best sellers of the weeks from `oldest` in these products' categories (of
    the whole shop when they have none): most orders, then most units."""
    sales, catalog = commerce_product_sales, commerce_products
    orders, units = func.sum(sales.c.orders), func.sum(sales.c.units)
    query = (
        select(sales.c.product_id)
        .join(catalog, catalog.c.product_id == sales.c.product_id)
        .where(sales.c.week >= oldest)
        .group_by(sales.c.product_id)
        .having(orders > 0)
        .order_by(orders.desc(), units.desc(), sales.c.product_id)
        .limit(limit)
    )
    if products:
        of = commerce_products.alias("of")
        categories = select(of.c.category).where(
            of.c.product_id.in_(products), of.c.category.is_not(None)
        )
        query = query.where(  # their categories; any, when none has one
            or_(catalog.c.category.in_(categories.scalar_subquery()), ~categories.exists())
        )
    return [str(p) for p in conn.execute(query).scalars()]


def _shown(
    conn: Connection, chosen: dict[str, str], currency: str | None, limit: int
) -> list[Recommendation]:
    """The chosen products the catalog knows, by name, in stock, the first `limit`."""
    ids = list(chosen)
    known: dict[str, Product] = {}
    for part in chunks(ids):
        rows = conn.execute(
            select(commerce_products).where(commerce_products.c.product_id.in_(part))
        ).all()
        known.update({item.product_id: item for item in _products_of(conn, rows)})
    shown: list[Recommendation] = []
    for product_id in ids:
        item = known.get(product_id)
        if item is None or not item.name or not _in_stock(item):
            continue
        price, in_currency = _price(item, currency)
        shown.append(
            Recommendation(
                product_id=product_id,
                reason=chosen[product_id],
                name=item.name,
                url=item.url,
                image_url=item.image_url,
                category=item.category,
                price=price,
                currency=in_currency,
            )
        )
        if len(shown) == limit:
            break
    return shown


def _in_stock(item: Product) -> bool:
    """A product some variant of which can be bought (stock above 0, or not tracked),
    not withdrawn from the catalog."""
    if item.deleted_at is not None:
        return False
    return not item.variants or any(variant.in_stock for variant in item.variants)


def _price(item: Product, currency: str | None) -> tuple[Decimal | None, str | None]:
    in_stock = [variant for variant in item.variants if variant.in_stock]
    for wanted in [currency] if currency else []:
        prices = [v.prices[wanted] for v in in_stock if wanted in v.prices]
        if prices:
            return min(prices), wanted
    for variant in in_stock:
        for name, price in sorted(variant.prices.items()):
            return price, name
    return None, None


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool | dict | list):
        return None
    text = str(value).strip()
    return text or None
