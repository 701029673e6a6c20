"""The demo's fictional brands, one per sector: a name, colours, the sector preset it
stands for, and a small catalog whose words are in the locale files
(`locales/{en,fr}/demo.json`, keys `demo.product.<sector>.<slug>` and
`demo.category.<sector>.<slug>`), so that it reads in English and in French. What each
sector is, is data: `sectors.toml`, beside this module."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from parcours.runtime.i18n import text


@dataclass(frozen=True)
class ProductSpec:
    slug: str
    category: str
    price: str  # EUR, exact decimal text
    usage_days: int | None = None  # how long one lasts: a consumable's
    sizes: tuple[str, ...] = ()  # variants; none: one variant of the product's own id

    @property
    def consumable(self) -> bool:
        return self.usage_days is not None


@dataclass(frozen=True)
class Sector:
    key: str  # the --sector flag's word
    preset: str  # the brand settings' sector (messaging's SECTOR_PRESETS)
    brand: str  # a proper name, the same in every language
    slug: str  # the brand's host name: https://<slug>.example
    primary: str
    accent: str
    products: tuple[ProductSpec, ...]

    def product_id(self, spec: ProductSpec) -> str:
        return f"{self.key}-{spec.slug}"

    def name(self, spec: ProductSpec, locale: str) -> str:
        return text(locale, f"demo.product.{self.key}.{spec.slug}")

    def category(self, spec: ProductSpec, locale: str) -> str:
        return text(locale, f"demo.category.{self.key}.{spec.category}")


DATA = Path(__file__).parent / "sectors.toml"
_SECTOR_KEYS = {"preset", "brand", "slug", "primary", "accent", "products"}
_PRODUCT_KEYS = {"slug", "category", "price"}
_PRODUCT_OPTIONS = {"usage_days", "sizes"}


def load_sectors(source: str) -> dict[str, Sector]:
    """The sectors a `sectors.toml` text describes, in its order (ValueError naming the
    sector, the product and what is missing or unknown, for one that is not complete)."""
    data = tomllib.loads(source)
    runs: dict[str, list[str]] = data.get("sizes", {})
    sectors: dict[str, Sector] = {}
    for key, row in data.get("sectors", {}).items():
        _check_keys(f"sector {key}", row, _SECTOR_KEYS, set())
        products = []
        for number, item in enumerate(row["products"], 1):
            where = f"sector {key}, product {item.get('slug', number)}"
            _check_keys(where, item, _PRODUCT_KEYS, _PRODUCT_OPTIONS)
            if "sizes" in item and item["sizes"] not in runs:
                raise ValueError(f"{where}: no run of sizes named {item['sizes']!r}")
            products.append(
                ProductSpec(
                    item["slug"],
                    item["category"],
                    item["price"],
                    item.get("usage_days"),
                    tuple(runs[item["sizes"]]) if "sizes" in item else (),
                )
            )
        sectors[key] = Sector(
            key,
            row["preset"],
            row["brand"],
            row["slug"],
            row["primary"],
            row["accent"],
            tuple(products),
        )
    return sectors


def _check_keys(where: str, row: dict[str, object], required: set[str], optional: set[str]) -> None:
    missing = required - row.keys()
    unknown = row.keys() - required - optional
    if missing or unknown:
        said = [f"missing {', '.join(sorted(missing))}"] if missing else []
        said += [f"unknown {', '.join(sorted(unknown))}"] if unknown else []
        raise ValueError(f"{where}: {'; '.join(said)}")


SECTORS = load_sectors(DATA.read_text(encoding="utf-8"))

# The sector presets' own word for the baby sector is accepted too.
ALIASES = {"children": "baby"}


def sector_named(word: str) -> Sector:
    """The sector a --sector word names (ValueError naming the words otherwise)."""
    key = ALIASES.get(word.strip().lower(), word.strip().lower())
    if key not in SECTORS:
        raise ValueError(f"--sector must be one of {', '.join(SECTORS)}, got {word!r}")
    return SECTORS[key]
