"""Commerce's hot path straight through the driver (docs/architecture.md, "One way to
write SQL"): what every ingested group reads and writes of the catalog and the
recommendation counts, where SQLAlchemy's own cost per row was most of the work (the
catalog's products read for every group of product views; thousands of view counts per
group added as one statement)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

from sqlalchemy import Connection

from parcours.commerce.tables import (
    commerce_carts,
    commerce_products,
    commerce_replenishments,
    commerce_variants,
)
from parcours.runtime.db import select_in, sql, upsert_rows

_PRODUCT_COLUMNS = [c.name for c in commerce_products.c]
_VARIANT_COLUMNS = [c.name for c in commerce_variants.c]
_READ_VARIANTS = f"SELECT {', '.join(_VARIANT_COLUMNS)} FROM commerce_variants WHERE "


def catalog_rows(
    conn: Connection,
    product_ids: set[str],
    variant_ids: set[str],
    items: set[str],
    of_products: Collection[str] = (),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The stored products of these ids, and the variants of these ids, inventory items
    or products (`of_products`), each once, as column -> value."""
    products = [
        dict(zip(_PRODUCT_COLUMNS, row, strict=True))
        for row in select_in(
            conn,
            f"SELECT {', '.join(_PRODUCT_COLUMNS)} FROM commerce_products "
            "WHERE product_id IN ({marks})",
            sorted(product_ids),
        )
    ]
    found = select_in(conn, _READ_VARIANTS + "variant_id IN ({marks})", sorted(variant_ids))
    found += select_in(conn, _READ_VARIANTS + "inventory_item_id IN ({marks})", sorted(items))
    if of_products:  # rare: products withdrawn
        found += select_in(conn, _READ_VARIANTS + "product_id IN ({marks})", sorted(of_products))
    variants: dict[str, dict[str, Any]] = {}
    for row in found:
        values = dict(zip(_VARIANT_COLUMNS, row, strict=True))
        variants.setdefault(values["variant_id"], values)
    return products, list(variants.values())


def add_counts(
    conn: Connection,
    table: Any,
    rows: list[dict[str, Any]],
    keys: list[str],
    *,
    floor: bool = False,
) -> None:
    """Add rows' counts to those stored (a row not stored is inserted as it is); `floor`:
    never below zero (a count taken back)."""
    if not rows:
        return
    columns = list(rows[0])
    later = "greatest" if conn.dialect.name == "postgresql" else "max"
    name = table.name

    def added(column: str) -> str:
        if column == "last_viewed_at":
            return f"{later}({name}.{column}, excluded.{column})"  # the later of the two
        if floor:
            return f"{later}(0, {name}.{column} + excluded.{column})"
        return f"{name}.{column} + excluded.{column}"

    upsert_rows(
        conn,
        table,
        columns,
        [tuple(row[c] for c in columns) for row in rows],
        conflict=keys,
        updates={c: added(c) for c in columns if c not in keys},
    )


# ---- the orders, carts and replenishments a group of events touches ----------------------
# Each a statement per list of ids (`select_in`: one array on PostgreSQL), read as named
# tuples with the columns' names, as SQLAlchemy's rows were (ingest spent a third of the
# writer's time in SQLAlchemy's execution of these few reads).


_CART_COLUMNS = ", ".join(c.name for c in commerce_carts.c)
_REPLENISHMENT_COLUMNS = ", ".join(c.name for c in commerce_replenishments.c)


def withdrawn_products(conn: Connection, product_ids: Iterable[str]) -> set[str]:
    """Those of these products the catalog deleted (`Product Deleted`)."""
    statement = (
        "SELECT product_id FROM commerce_products "
        "WHERE product_id IN ({marks}) AND deleted_at IS NOT NULL"
    )
    return {row[0] for row in select_in(conn, statement, sorted(product_ids))}


# What a group of new orders is checked against: the orders stored (0), and what a
# shipment, a refund, a return or a cancellation kept before its order came (1).
_KNOWN_TABLES = (
    "commerce_orders",
    "commerce_shipments",
    "commerce_refunds",
    "commerce_returns",
    "commerce_cancellations",
)
_KNOWN = " UNION ALL ".join(
    f"SELECT {int(index > 0)}, order_id FROM {table} WHERE order_id IN ({{marks}})"
    for index, table in enumerate(_KNOWN_TABLES)
)


def orders_stored_or_named(conn: Connection, order_ids: Iterable[str]) -> tuple[set[str], set[str]]:
    """Of these orders, those stored, and those a shipment, a refund, a return or a
    cancellation kept before the order: one statement over the five tables."""
    stored: set[str] = set()
    named: set[str] = set()
    for kind, order_id in select_in(conn, _KNOWN, sorted(order_ids), uses=len(_KNOWN_TABLES)):
        (named if kind else stored).add(order_id)
    return stored, named


def order_owners(conn: Connection, order_ids: Sequence[str]) -> list[tuple[str, int]]:
    """(order id, customer id) of these orders that are stored with a customer: how the
    customers' projection attributes an event that names an order and no person."""
    statement = (
        "SELECT order_id, customer_id FROM commerce_orders "
        "WHERE order_id IN ({marks}) AND customer_id IS NOT NULL"
    )
    return [
        (str(order), int(customer)) for order, customer in select_in(conn, statement, order_ids)
    ]


def customers_of_orders(conn: Connection, order_ids: Iterable[str]) -> set[int]:
    """The customers of these orders (those known, with a customer)."""
    statement = (
        "SELECT customer_id FROM commerce_orders "
        "WHERE order_id IN ({marks}) AND customer_id IS NOT NULL"
    )
    return {int(row[0]) for row in select_in(conn, statement, sorted(order_ids))}


def placed_at_of(conn: Connection, order_ids: Sequence[str]) -> dict[str, int]:
    """When each of these orders still placed (not cancelled) was placed."""
    statement = (
        "SELECT order_id, placed_at FROM commerce_orders "
        "WHERE order_id IN ({marks}) AND status = 'placed'"
    )
    return {row[0]: int(row[1]) for row in select_in(conn, statement, order_ids)}


def consumable_products(conn: Connection, product_ids: Iterable[str]) -> set[str]:
    """Those of these products that the catalog says are consumables."""
    statement = (
        "SELECT product_id FROM commerce_products WHERE product_id IN ({marks}) AND consumable"
    )
    return {row[0] for row in select_in(conn, statement, sorted(product_ids))}


def counted_order_ids(conn: Connection, order_ids: Sequence[str]) -> set[str]:
    """Those of these orders the recommendations counted already."""
    statement = "SELECT order_id FROM commerce_counted_orders WHERE order_id IN ({marks})"
    return {row[0] for row in select_in(conn, statement, order_ids)}


def order_units(conn: Connection, order_ids: Sequence[str]) -> list[Any]:
    """These orders' lines that name a product, each order's in its lines' order."""
    statement = (
        "SELECT order_id, product_id, quantity FROM commerce_order_lines "
        "WHERE order_id IN ({marks}) AND product_id IS NOT NULL ORDER BY order_id, line"
    )
    return select_in(conn, statement, order_ids, named=True)


def order_figures_rows(
    conn: Connection, customers: Sequence[int], *, with_ids: bool = False
) -> list[Any]:
    """Every order of these customers, as the order traits read them (`with_ids`: with
    each order's id, for a caller that leaves some out and counts them from elsewhere)."""
    statement = (
        f"SELECT {'order_id, ' if with_ids else ''}customer_id, status, currency, total, "
        "refunded, placed_at FROM commerce_orders WHERE customer_id IN ({marks})"
    )
    return select_in(conn, statement, customers, named=True)


def consumable_purchases(conn: Connection, customers: Sequence[int]) -> list[Any]:
    """The lines of these customers' placed orders that are of a consumable product, with
    its usage days."""
    statement = (
        "SELECT o.customer_id, o.order_id, o.placed_at, l.product_id, l.quantity, "
        "l.refunded_quantity, p.usage_days FROM commerce_orders o "
        "JOIN commerce_order_lines l ON l.order_id = o.order_id "
        "JOIN commerce_products p ON p.product_id = l.product_id "
        "WHERE o.customer_id IN ({marks}) AND o.status = 'placed' AND p.consumable"
    )
    return select_in(conn, statement, customers, named=True)


def replenishment_rows(conn: Connection, customers: Sequence[int]) -> list[Any]:
    """The stored replenishments of these customers (rows with the table's columns)."""
    statement = (
        f"SELECT {_REPLENISHMENT_COLUMNS} FROM commerce_replenishments "
        "WHERE customer_id IN ({marks})"
    )
    return select_in(conn, statement, customers, named=True)


def carts_touched(
    conn: Connection,
    cart_ids: set[str],
    checkout_ids: set[str],
    order_ids: set[str],
    customers: set[int],
    live: Sequence[str],
) -> list[Any]:
    """The stored carts of these cart, checkout or order ids, and the carts of these
    customers whose status is one of `live`, each once (rows with the table's columns)."""
    if not (cart_ids or checkout_ids or order_ids or customers):
        return []
    statuses = ", ".join(f"'{status}'" for status in live)  # the module's own constants
    found: dict[str, Any] = {}
    if conn.dialect.name != "sqlite":
        # One statement, one round trip, where it took one for each kind of id; only the
        # kinds given (each part is planned at every run: a group of orders names no cart
        # nor checkout).
        parts = {
            "carts": ("cart_id = ANY(CAST(:carts AS text[]))", sorted(cart_ids)),
            "checkouts": ("checkout_id = ANY(CAST(:checkouts AS text[]))", sorted(checkout_ids)),
            "orders": ("order_id = ANY(CAST(:orders AS text[]))", sorted(order_ids)),
            "customers": (
                f"customer_id = ANY(CAST(:customers AS bigint[])) AND status IN ({statuses})",
                sorted(customers),
            ),
        }
        given = {name: part for name, part in parts.items() if part[1]}
        statement = " UNION ALL ".join(
            f"SELECT {_CART_COLUMNS} FROM commerce_carts WHERE {where}"
            for where, _ in given.values()
        )
        arrays: dict[str, Any] = {name: values for name, (_, values) in given.items()}
        for row in sql(conn, statement, arrays).all():
            found.setdefault(row[0], row)
        return list(found.values())
    for column, values in (
        ("cart_id", sorted(cart_ids)),
        ("checkout_id", sorted(checkout_ids)),
        ("order_id", sorted(order_ids)),
    ):
        statement = f"SELECT {_CART_COLUMNS} FROM commerce_carts WHERE {column} IN ({{marks}})"
        for row in select_in(conn, statement, values, named=True):
            found.setdefault(row[0], row)
    statement = (
        f"SELECT {_CART_COLUMNS} FROM commerce_carts "
        f"WHERE customer_id IN ({{marks}}) AND status IN ({statuses})"
    )
    for row in select_in(conn, statement, sorted(customers), named=True):
        found.setdefault(row[0], row)
    return list(found.values())
