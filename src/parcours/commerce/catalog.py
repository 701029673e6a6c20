"""The catalog: products and their variants, with images, prices per currency, stock per
variant, a consumable flag and how long one lasts (docs/commerce.md, "The catalog").

Projected from the log like the rest of commerce. The catalog's own reports say what is
true and overwrite what they give: `Product Updated` (Parcours' event, which the import
and Shopify's product webhooks append too), `Product Deleted` (Shopify's `products/delete`:
the product withdrawn, its variants' stock 0, until a later report brings it back) and
Shopify's `Inventory Updated`. The
shopper's events (`Product Viewed`, `Product Added`, a cart's `products`...) only fill
what is not known yet: a product seen before the catalog told of it, its name, image and
price in that currency; never its stock nor whether it is consumable.

A group of events is applied in memory and written in a few statements for all of it:
three reads at most (its products, its variants, and Shopify's inventory items), then an
insert and an update per table for what is new and what changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import Connection, insert, select

from parcours.commerce.rows import catalog_rows, withdrawn_products
from parcours.commerce.tables import commerce_products, commerce_variants
from parcours.customers import decimal_of
from parcours.log import AppendResult, Event, Reactions, append_events
from parcours.runtime.db import PerDatabase, transaction_note, update_rows

CATALOG_EVENT = "Product Updated"
INVENTORY_EVENT = "Inventory Updated"  # Shopify's inventory_levels/update
DELETED_EVENT = "Product Deleted"  # Shopify's products/delete, or the brand's own
# The shopper's events that name products: they add what the catalog does not know yet.
SEEN_EVENTS = frozenset(
    {
        "Product Viewed",
        "Product Clicked",
        "Product Added",
        "Product Removed",
        "Cart Viewed",
        "Checkout Started",
        "Checkout Updated",
    }
)
EVENTS = SEEN_EVENTS | {CATALOG_EVENT, INVENTORY_EVENT, DELETED_EVENT}
_SOURCES = {"api": "catalog", "shopify": "shopify", "import": "import", "admin": "catalog"}
_encode = msgspec.json.Encoder().encode


class Variant(msgspec.Struct, frozen=True):
    variant_id: str  # a product reported without variants has one, of its own id
    product_id: str
    sku: str | None
    name: str | None
    image_url: str | None
    prices: dict[str, Decimal]  # currency -> one unit's price
    stock: int | None  # None: never reported
    stock_at: int | None  # when it was last reported

    @property
    def in_stock(self) -> bool:
        """Available to buy: stock above 0, or never reported (not tracked)."""
        return self.stock is None or self.stock > 0


class Product(msgspec.Struct, frozen=True):
    product_id: str
    name: str | None
    description: str | None
    category: str | None
    brand: str | None
    url: str | None
    image_url: str | None  # the main image
    images: tuple[str, ...]
    consumable: bool
    usage_days: int | None  # how long one lasts, for a consumable
    source: str  # catalog | shopify | import | seen (from the shopper's events only)
    updated_at: int
    variants: tuple[Variant, ...]
    deleted_at: int | None = None  # withdrawn from the catalog then (`Product Deleted`)

    @property
    def stock(self) -> int | None:
        """The stock of all its variants (None when none was ever reported)."""
        counted = [v.stock for v in self.variants if v.stock is not None]
        return sum(counted) if counted else None


class CatalogImportError(ValueError):
    """A row that cannot be imported: `row` is its index (0 for the first, -1 the header),
    `field` what is wrong in it, `reason` why (the message without the row)."""

    def __init__(self, reason: str, row: int, field: str) -> None:
        super().__init__(f"row {row + 1}: {reason}" if row >= 0 else f"header: {reason}")
        self.reason = reason
        self.row = row
        self.field = field


@dataclass(frozen=True)
class CatalogImported:
    stored: int  # rows that were new
    duplicates: int  # rows imported before, unchanged


# ---- the projection -----------------------------------------------------------------------


@dataclass
class _Product:
    values: dict[str, Any]
    new: bool = False
    changed: bool = False


@dataclass
class _Variant:
    values: dict[str, Any]
    prices: dict[str, str] = field(default_factory=dict)
    locations: dict[str, int] | None = None
    new: bool = False
    changed: bool = False
    stock_before: int | None = None  # as stored before the group (back in stock)


@dataclass(frozen=True)
class Restocked:
    """A variant whose stock went from 0 or unknown to above 0 in a group of events."""

    variant_id: str
    product_id: str
    stock: int
    at: int  # when the report that says so happened


def apply(conn: Connection, events: list[Event], now: int) -> list[Restocked]:
    """The reaction's part for the catalog: the group's catalog and shopper events. The
    variants back in stock after it (from 0, or never reported, to above 0) come back."""
    relevant = [e for e in events if e.type == "track" and e.name in EVENTS]
    if not relevant:
        return []
    filled = _FILLED.of(conn)
    product_ids: set[str] = set()
    variant_ids: set[str] = set()
    items: set[str] = set()
    deleted: set[str] = set()  # products withdrawn by the group: their variants are read
    reports: list[list[tuple[dict[str, Any], dict[str, Any]]]] = []
    for event in relevant:
        if event.name == INVENTORY_EVENT:
            if (item := _text(event.properties.get("inventory_item_id"))) is not None:
                items.add(item)
            reports.append([])
            continue
        if event.name == DELETED_EVENT:
            if (product_id := _text(event.properties.get("product_id"))) is not None:
                product_ids.add(product_id)
                deleted.add(product_id)
            reports.append([])
            continue
        reported = _reported(event)
        if event.name != CATALOG_EVENT:  # a shopper's: what it could fill, if anything
            reported = [(p, v) for p, v in reported if _may_fill(filled, p, v)]
        reports.append(reported)
        for product, variant in reported:
            product_ids.add(product["product_id"])
            variant_ids.add(variant["variant_id"])
    products, variants = _load(conn, product_ids, variant_ids, items, deleted, filled)
    for event, reported in zip(relevant, reports, strict=True):
        if event.name == INVENTORY_EVENT:
            _inventory(variants, event, now)
            continue
        if event.name == DELETED_EVENT:
            _withdraw(products, variants, event, now)
            continue
        own = event.name == CATALOG_EVENT
        source = _SOURCES.get(event.source, event.source) if own else "seen"
        for product, variant in reported:
            _product(products, product, own, source, event.occurred_at, now)
            _variant(variants, variant, own, event.occurred_at, now)
    _write(conn, products, variants)
    restocked = [
        Restocked(v.values["variant_id"], v.values["product_id"], v.values["stock"], at)
        for v in variants.values()
        if v.changed
        and not v.new  # no request can wait for a variant the catalog did not know
        and (v.values["stock"] or 0) > 0
        and (v.stock_before or 0) <= 0
        and (at := v.values["stock_at"]) is not None
    ]
    if not restocked:
        return []
    # A withdrawn product's stock (a late inventory report) tells no shopper it is back.
    unknown = {r.product_id for r in restocked} - set(products)
    withdrawn = {p for p, found in products.items() if found.values.get("deleted_at") is not None}
    withdrawn |= withdrawn_products(conn, unknown) if unknown else set()
    return [r for r in restocked if r.product_id not in withdrawn]


# ---- what a shopper's event can no longer change --------------------------------------------
#
# A shopper's event only fills what the catalog does not know, and nothing empties a field
# again (the catalog's own reports write values, never nothing; no catalog row is ever
# deleted): once a product's name is stored, no shopper's event changes it. The process
# keeps, per database, the fields it found filled in the products and variants it read as
# committed (not written by the transaction reading them), and a shopper's event skips
# the products it could fill nothing of: most groups then read no catalog row at all
# (docs/architecture.md, "What the catalog knows is filled"). What it keeps can only lag
# behind what is stored, which makes an event read its product again, never skip a blank.


@dataclass
class _Filled:
    products: dict[str, frozenset[str]] = field(default_factory=dict)
    variants: dict[str, frozenset[str]] = field(default_factory=dict)  # names, price:CUR


_FILLED: PerDatabase[_Filled] = PerDatabase(_Filled)
_FILLED_KEPT = 200_000  # products or variants kept at most; then it starts again
_WRITTEN = "parcours_catalog_written"
_PRODUCT_FILLS = ("name", "description", "category", "brand", "url", "image_url")
_VARIANT_FILLS = ("sku", "name", "image_url", "inventory_item_id")


def _learn(filled: _Filled, products: Iterable[_Product], variants: Iterable[_Variant]) -> None:
    """What these products and variants, as read and before the group changes them, have
    filled."""
    if len(filled.products) > _FILLED_KEPT or len(filled.variants) > _FILLED_KEPT:
        filled.products.clear()
        filled.variants.clear()
    for product in products:
        values = product.values
        names = [name for name in _PRODUCT_FILLS if values[name] is not None]
        if values["images"] != "[]":
            names.append("images")
        filled.products[values["product_id"]] = frozenset(names)
    for variant in variants:
        values = variant.values
        names = [name for name in _VARIANT_FILLS if values[name] is not None]
        names += (f"price:{currency}" for currency in variant.prices)
        filled.variants[values["variant_id"]] = frozenset(names)


def _may_fill(filled: _Filled, product: dict[str, Any], variant: dict[str, Any]) -> bool:
    """Whether a shopper's report of this product and variant may fill something (as
    `_product` and `_variant` apply it), from what is known filled."""
    known = filled.products.get(product["product_id"])
    if known is None or any(
        value is not None and name not in known
        for name, value in product.items()
        if name != "product_id"
    ):
        return True
    known = filled.variants.get(variant["variant_id"])
    return (
        known is None
        or any(variant[name] is not None and name not in known for name in _VARIANT_FILLS)
        or any(f"price:{currency}" not in known for currency in variant["prices"])
    )


def _load(
    conn: Connection,
    product_ids: set[str],
    variant_ids: set[str],
    items: set[str],
    deleted: set[str],
    filled: _Filled,
) -> tuple[dict[str, _Product], dict[str, _Variant]]:
    products: dict[str, _Product] = {}
    variants: dict[str, _Variant] = {}
    stored_products, stored_variants = catalog_rows(conn, product_ids, variant_ids, items, deleted)
    for values in stored_products:
        products[values["product_id"]] = _Product(values)
    for values in stored_variants:
        variants[values["variant_id"]] = _Variant(
            values,
            prices=json.loads(values["prices"]),
            locations=json.loads(values["stock_locations"]) if values["stock_locations"] else None,
            stock_before=values["stock"],
        )
    if not transaction_note(conn, _WRITTEN):  # all of it committed: learn what is filled
        _learn(filled, products.values(), variants.values())
    return products, variants


def _reported(event: Event) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The products an event tells of, each with one variant: (product, variant) fields
    as given, None where it says nothing."""
    props = event.properties
    if event.name == CATALOG_EVENT:
        product = _product_fields(props, own=True)
        if product is None:
            return []
        listed = props.get("variants")
        if isinstance(listed, list) and listed:
            return [
                (product, _variant_fields(v, product["product_id"], props))
                for v in listed
                if isinstance(v, dict)
            ]
        return [(product, _variant_fields(props, product["product_id"], props))]
    found: list[tuple[dict[str, Any], dict[str, Any]]] = []
    listed = props.get("products")
    sources = listed if isinstance(listed, list) else [props]
    for source in sources:
        if not isinstance(source, dict):
            continue
        product = _product_fields(source, own=False)
        if product is not None:
            found.append((product, _variant_fields(source, product["product_id"], props)))
    return found


def _product_fields(props: Mapping[str, Any], *, own: bool) -> dict[str, Any] | None:
    product_id = _text(props.get("product_id"))
    if product_id is None:
        return None
    fields: dict[str, Any] = {"product_id": product_id}
    for name in ("name", "description", "category", "brand", "url", "image_url"):
        fields[name] = _text(props.get(name))
    images = [i for i in (_image(x) for x in _list(props.get("images"))) if i]
    if fields["image_url"] and fields["image_url"] not in images:
        images.insert(0, fields["image_url"])
    fields["images"] = images or None
    if own:  # only the catalog says what a product is for
        consumable = props.get("consumable")
        fields["consumable"] = consumable if isinstance(consumable, bool) else None
        days = decimal_of(props.get("usage_days", props.get("typical_usage_days")))
        fields["usage_days"] = int(days) if days is not None and days > 0 else None
    return fields


def _variant_fields(
    props: Mapping[str, Any], product_id: str, event_props: Mapping[str, Any]
) -> dict[str, Any]:
    prices: dict[str, str] = {}
    given = props.get("prices")
    if isinstance(given, dict):
        for currency, amount in given.items():
            value = decimal_of(amount)
            if value is not None and isinstance(currency, str) and currency.strip():
                prices[currency.strip().upper()] = str(value)
    price = decimal_of(props.get("price"))
    currency = _text(props.get("currency")) or _text(event_props.get("currency"))
    if price is not None and currency:
        prices.setdefault(currency.upper(), str(price))
    stock = decimal_of(props.get("stock"))
    return {
        "variant_id": _text(props.get("variant_id")) or product_id,
        "product_id": product_id,
        "sku": _text(props.get("sku")),
        "name": _text(props.get("variant")) or _text(props.get("variant_name")),
        "image_url": _text(props.get("image_url")),
        "inventory_item_id": _text(props.get("inventory_item_id")),
        "prices": prices,
        "stock": max(int(stock), 0) if stock is not None else None,
    }


def _product(
    products: dict[str, _Product],
    fields: dict[str, Any],
    own: bool,
    source: str,
    at: int,
    now: int,
) -> None:
    product_id = fields["product_id"]
    found = products.get(product_id)
    if found is None:
        values = {
            "product_id": product_id,
            "name": None,
            "description": None,
            "category": None,
            "brand": None,
            "url": None,
            "image_url": None,
            "images": "[]",
            "consumable": False,
            "usage_days": None,
            "source": source,
            "created_at": now,
            "updated_at": now,
            "deleted_at": None,
        }
        found = products[product_id] = _Product(values, new=True)
    values = found.values
    if own and values["source"] == "seen":
        values["source"] = source  # the catalog told of it at last
    if own and values["deleted_at"] is not None and at > values["deleted_at"]:
        values["deleted_at"] = None  # the catalog reports it again, after its deletion
        found.changed = True
    for name, value in fields.items():
        if value is None or name == "product_id":
            continue
        if name == "images":
            value = json.dumps(value)
            if not own and values["images"] != "[]":
                continue
        elif not own and values.get(name) is not None:
            continue  # the shopper's events fill blanks only
        if values.get(name) != value:
            values[name] = value
            found.changed = True
    if found.changed:
        values["updated_at"] = now


def _variant(
    variants: dict[str, _Variant], fields: dict[str, Any], own: bool, at: int, now: int
) -> None:
    variant_id = fields["variant_id"]
    found = variants.get(variant_id)
    if found is None:
        values = {
            "variant_id": variant_id,
            "product_id": fields["product_id"],
            "sku": None,
            "name": None,
            "image_url": None,
            "prices": "{}",
            "stock": None,
            "stock_locations": None,
            "inventory_item_id": None,
            "stock_at": None,
            "created_at": now,
            "updated_at": now,
        }
        found = variants[variant_id] = _Variant(values, new=True)
    values = found.values
    for name in ("product_id", "sku", "name", "image_url", "inventory_item_id"):
        value = fields[name]
        if value is None or (not own and values.get(name) is not None):
            continue
        if values.get(name) != value:
            values[name] = value
            found.changed = True
    for currency, amount in fields["prices"].items():
        if (own or currency not in found.prices) and found.prices.get(currency) != amount:
            found.prices[currency] = amount
            found.changed = True
    if own and fields["stock"] is not None:
        found.locations = None  # the brand's own figure, all places together
        _set_stock(found, fields["stock"], at)


def _withdraw(
    products: dict[str, _Product], variants: dict[str, _Variant], event: Event, now: int
) -> None:
    """`Product Deleted`: the product withdrawn when the deletion happened, and each of
    its variants' stock 0, whatever was reported before (a report older than the
    deletion, come late, changes neither). One the catalog never knew is not recorded."""
    product_id = _text(event.properties.get("product_id"))
    found = products.get(product_id) if product_id is not None else None
    if found is None:
        return
    at = event.occurred_at
    deleted_at = found.values.get("deleted_at")
    if deleted_at is not None and deleted_at <= at:
        return  # withdrawn already, by an earlier deletion
    found.values["deleted_at"] = at
    found.values["updated_at"] = now
    found.changed = True
    for variant in variants.values():
        values = variant.values
        if values["product_id"] == product_id:
            variant.locations = None
            values["stock"] = 0
            values["stock_at"] = max(at, values["stock_at"] or at)
            variant.changed = True


def _inventory(variants: dict[str, _Variant], event: Event, now: int) -> None:
    """Shopify's stock of an inventory item at one location: the variant's stock is the
    sum over its locations."""
    props = event.properties
    item = _text(props.get("inventory_item_id"))
    available = decimal_of(props.get("available"))
    if item is None or available is None:
        return
    for variant in variants.values():
        if variant.values["inventory_item_id"] == item:
            locations = dict(variant.locations or {})
            locations[_text(props.get("location_id")) or ""] = int(available)
            variant.locations = locations
            _set_stock(variant, max(sum(locations.values()), 0), event.occurred_at)


def _set_stock(variant: _Variant, stock: int, at: int) -> None:
    values = variant.values
    if values["stock_at"] is not None and at < values["stock_at"]:
        return  # an older report than the one the stock comes from
    values["stock"] = stock
    values["stock_at"] = at
    variant.changed = True


_PRODUCT_COLUMNS = tuple(c.name for c in commerce_products.c if c.name != "product_id")
_VARIANT_COLUMNS = tuple(c.name for c in commerce_variants.c if c.name != "variant_id")


def _write(conn: Connection, products: dict[str, _Product], variants: dict[str, _Variant]) -> None:
    for variant in variants.values():
        variant.values["prices"] = json.dumps(variant.prices, sort_keys=True)
        variant.values["stock_locations"] = (
            None if variant.locations is None else json.dumps(variant.locations, sort_keys=True)
        )
    for table, key, columns, rows in (
        (commerce_products, "product_id", _PRODUCT_COLUMNS, list(products.values())),
        (commerce_variants, "variant_id", _VARIANT_COLUMNS, list(variants.values())),
    ):
        new = [row.values for row in rows if row.new]
        if new:
            conn.execute(insert(table), new)
        changed = [
            (*(row.values[name] for name in columns), row.values[key])
            for row in rows
            if row.changed and not row.new
        ]
        update_rows(conn, table, columns, key, changed)
        if new or changed:
            transaction_note(conn, _WRITTEN)["catalog"] = True


# ---- the import ---------------------------------------------------------------------------

IMPORT_COLUMNS = (
    "product_id",
    "name",
    "description",
    "category",
    "brand",
    "url",
    "image_url",
    "images",
    "consumable",
    "usage_days",
    "variant_id",
    "sku",
    "variant",
    "price",
    "currency",
    "stock",
)


def import_events(rows: Iterable[Mapping[str, object]], now: int) -> list[Event]:
    """A catalog's rows (one per variant; a CSV file's lines read as dicts, say) as
    `Product Updated` events, refused as a whole at the first bad row, naming it. `images`
    may be a list or links separated by spaces; `consumable` true/false/yes/no/1/0; empty
    cells say nothing. Each event's message id is made of the row, so a file imported twice
    is stored once."""
    return [import_event(row, now, index) for index, row in enumerate(rows)]


def import_event(row: Mapping[str, object], now: int, index: int = 0) -> Event:
    """The `Product Updated` event of one row (`index` names it in a refusal)."""
    props = _import_row(index, row)
    digest = hashlib.sha256(_encode(props)).hexdigest()[:32]
    document = {
        "type": "track",
        "event": CATALOG_EVENT,
        "messageId": f"catalog:{digest}",
        "properties": props,
    }
    return Event(
        message_id=f"catalog:{digest}",
        type="track",
        name=CATALOG_EVENT,
        user_id=None,
        anonymous_id=None,
        properties=props,
        traits={},
        context={},
        occurred_at=now,
        received_at=now,
        timestamp=None,
        sent_at=None,
        source="import",
        payload=_encode(document).decode("utf-8"),
    )


def check_import_header(names: Iterable[object]) -> None:
    """Refuse a file's header with a column the import does not know, or without
    `product_id`."""
    names = list(names)
    _check_columns(names, -1)
    if "product_id" not in names:
        raise CatalogImportError("the header lacks product_id", -1, "product_id")


def _check_columns(names: Iterable[object], index: int) -> None:
    unknown = sorted(str(name) for name in names if name not in IMPORT_COLUMNS)
    if unknown:
        raise CatalogImportError(
            f"unknown column {unknown[0]!r}; the columns are {', '.join(IMPORT_COLUMNS)}",
            index,
            unknown[0],
        )


def import_catalog(
    conn: Connection, rows: Iterable[Mapping[str, object]], now: int, reactions: Reactions
) -> CatalogImported:
    """Import a catalog's rows (`import_events`) through the log, in the caller's
    transaction: the projection writes them as it does every `Product Updated`."""
    events = import_events(rows, now)
    if not events:
        return CatalogImported(0, 0)
    results, _ = append_events(conn, [events], now, reactions)
    result: AppendResult = results[0]
    return CatalogImported(result.stored, result.duplicates)


def _import_row(index: int, row: Mapping[str, object]) -> dict[str, Any]:
    _check_columns(row, index)
    props: dict[str, Any] = {}
    for name in IMPORT_COLUMNS:
        value = row.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        props[name] = value.strip() if isinstance(value, str) else value
    if "product_id" not in props:
        raise CatalogImportError("product_id is required", index, "product_id")
    for name in ("price", "stock", "usage_days"):
        if name in props and decimal_of(props[name]) is None:
            raise CatalogImportError(
                f"{name} must be a number, got {str(props[name])[:40]!r}",
                index,
                name,
            )
        if name in props:
            props[name] = str(decimal_of(props[name]))
    for name in ("stock", "usage_days"):
        if name in props:
            whole = Decimal(props[name])
            if whole != whole.to_integral_value():
                raise CatalogImportError(
                    f"{name} must be a whole number, got {props[name]}", index, name
                )
            props[name] = int(whole)
    if "consumable" in props:
        props["consumable"] = _flag(index, props["consumable"])
    if "images" in props and isinstance(props["images"], str):
        props["images"] = props["images"].split()
    if "price" in props and "currency" not in props:
        raise CatalogImportError("a price needs its currency", index, "currency")
    return props


def _flag(index: int, value: object) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in ("true", "yes", "1", "y"):
        return True
    if word in ("false", "no", "0", "n"):
        return False
    raise CatalogImportError(
        f"consumable must be true or false, got {str(value)[:20]!r}",
        index,
        "consumable",
    )


# ---- the face's reads ---------------------------------------------------------------------


def _variant_of(row: Any) -> Variant:
    return Variant(
        variant_id=row.variant_id,
        product_id=row.product_id,
        sku=row.sku,
        name=row.name,
        image_url=row.image_url,
        prices={k: Decimal(v) for k, v in json.loads(row.prices).items()},
        stock=row.stock,
        stock_at=row.stock_at,
    )


def _products_of(conn: Connection, rows: Sequence[Any]) -> list[Product]:
    ids = [row.product_id for row in rows]
    variants: dict[str, list[Variant]] = {product_id: [] for product_id in ids}
    if ids:
        query = (
            select(commerce_variants)
            .where(commerce_variants.c.product_id.in_(ids))
            .order_by(commerce_variants.c.product_id, commerce_variants.c.variant_id)
        )
        for row in conn.execute(query):
            variants[row.product_id].append(_variant_of(row))
    return [
        Product(
            product_id=row.product_id,
            name=row.name,
            description=row.description,
            category=row.category,
            brand=row.brand,
            url=row.url,
            image_url=row.image_url,
            images=tuple(json.loads(row.images)),
            consumable=bool(row.consumable),
            usage_days=row.usage_days,
            source=row.source,
            updated_at=row.updated_at,
            variants=tuple(variants[row.product_id]),
            deleted_at=row.deleted_at,
        )
        for row in rows
    ]


def product(conn: Connection, product_id: str) -> Product | None:
    """A product with its variants."""
    rows = conn.execute(
        select(commerce_products).where(commerce_products.c.product_id == product_id)
    ).all()
    found = _products_of(conn, rows)
    return found[0] if found else None


def products(conn: Connection, *, after: str | None = None, limit: int = 100) -> list[Product]:
    """The catalog in product id order, a page at a time (`after`: the last id seen)."""
    query = select(commerce_products).order_by(commerce_products.c.product_id).limit(limit)
    if after is not None:
        query = query.where(commerce_products.c.product_id > after)
    return _products_of(conn, conn.execute(query).all())


def variant(conn: Connection, variant_id: str) -> Variant | None:
    """A variant by its id (a product without variants: the product's id), else its SKU."""
    row = conn.execute(
        select(commerce_variants).where(commerce_variants.c.variant_id == variant_id)
    ).first()
    if row is None:
        row = conn.execute(
            select(commerce_variants)
            .where(commerce_variants.c.sku == variant_id)
            .order_by(commerce_variants.c.variant_id)
            .limit(1)
        ).first()
    return None if row is None else _variant_of(row)


def stock_of(conn: Connection, variant_id: str) -> int | None:
    """A variant's stock (by id or SKU); None when unknown or never reported."""
    found = variant(conn, variant_id)
    return None if found is None else found.stock


def _image(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("url") or value.get("src")
    return _text(value)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool | dict | list):
        return None
    text = str(value).strip()
    return text or None
