"""Commerce's hot path straight through the driver (docs/architecture.md, "One way to
write SQL"): what every ingested group reads and writes of the catalog and the
recommendation counts, where SQLAlchemy's own cost per row was most of the work (the
catalog's products read for every group of product views; thousands of view counts per
group added as one statement)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from parcours.commerce.tables import commerce_products, commerce_variants
from parcours.runtime.db import select_in, upsert_rows

_PRODUCT_COLUMNS = [c.name for c in commerce_products.c]
_VARIANT_COLUMNS = [c.name for c in commerce_variants.c]
_READ_VARIANTS = f"SELECT {', '.join(_VARIANT_COLUMNS)} FROM commerce_variants WHERE "


def catalog_rows(
    conn: Connection, product_ids: set[str], variant_ids: set[str], items: set[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The stored products of these ids, and the variants of these ids or inventory items
    (each once), as column -> value."""
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
