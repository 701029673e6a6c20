"""The demo's fictional brands, one per sector: a name, colours, the sector preset it
stands for, and a small catalog whose words are in the locale files
(`locales/{en,fr}/demo.json`, keys `demo.product.<sector>.<slug>` and
`demo.category.<sector>.<slug>`), so that it reads in English and in French."""

from __future__ import annotations

from dataclasses import dataclass

from parcours.runtime.i18n import text


@dataclass(frozen=True)
class ProductSpec:
    slug: str
    category: str
    price: str  # EUR, exact decimal text
    consumable: bool = False
    usage_days: int | None = None  # how long one lasts, for a consumable
    sizes: tuple[str, ...] = ()  # variants; none: one variant of the product's own id


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


_CLOTHES = ("XS", "S", "M", "L", "XL")
_SHOES = ("37", "38", "39", "40", "41", "42")

SECTORS: dict[str, Sector] = {
    sector.key: sector
    for sector in (
        Sector(
            "fashion",
            "fashion",
            "Maison Lumen",
            "maison-lumen",
            "#8a2c3b",
            "#1f5c4a",
            (
                ProductSpec("trench", "coats", "189.00", sizes=_CLOTHES),
                ProductSpec("scarf", "accessories", "49.00"),
                ProductSpec("boots", "shoes", "129.00", sizes=_SHOES),
                ProductSpec("shirt", "tops", "69.00", sizes=_CLOTHES),
                ProductSpec("sweater", "knitwear", "95.00", sizes=_CLOTHES),
                ProductSpec("trousers", "trousers", "85.00", sizes=_CLOTHES),
                ProductSpec("belt", "accessories", "45.00"),
                ProductSpec("tote", "accessories", "29.00"),
            ),
        ),
        Sector(
            "beauty",
            "beauty",
            "Éclat de Sève",
            "eclat-de-seve",
            "#6b3d7a",
            "#2e6b4f",
            (
                ProductSpec("serum", "skincare", "39.00", True, 60),
                ProductSpec("day_cream", "skincare", "32.00", True, 60),
                ProductSpec("cleanser", "skincare", "18.00", True, 45),
                ProductSpec("lip_balm", "skincare", "9.00", True, 60),
                ProductSpec("hair_mask", "haircare", "24.00", True, 45),
                ProductSpec("perfume", "fragrance", "68.00", True, 120),
                ProductSpec("body_oil", "body", "27.00", True, 60),
                ProductSpec("eye_cream", "skincare", "29.00", True, 60),
            ),
        ),
        Sector(
            "electronics",
            "electronics",
            "Voltaire Tech",
            "voltaire-tech",
            "#1d4f8c",
            "#0f6b5c",
            (
                ProductSpec("earbuds", "audio", "129.00"),
                ProductSpec("speaker", "audio", "99.00"),
                ProductSpec("charger", "accessories", "35.00"),
                ProductSpec("reader", "reading", "139.00"),
                ProductSpec("keyboard", "computing", "119.00"),
                ProductSpec("power_bank", "accessories", "49.00"),
                ProductSpec("watch", "wearables", "199.00"),
                ProductSpec("webcam", "computing", "79.00"),
            ),
        ),
        Sector(
            "home",
            "home",
            "Atelier Nid",
            "atelier-nid",
            "#8a4b1f",
            "#3b5e2b",
            (
                ProductSpec("duvet_cover", "bedding", "119.00", sizes=("140", "200", "240")),
                ProductSpec("vase", "decoration", "45.00"),
                ProductSpec("side_table", "furniture", "229.00"),
                ProductSpec("throw", "bedding", "89.00"),
                ProductSpec("candle", "decoration", "28.00", True, 40),
                ProductSpec("lamp", "lighting", "129.00"),
                ProductSpec("cushion", "decoration", "35.00"),
                ProductSpec("rug", "decoration", "249.00"),
            ),
        ),
        Sector(
            "food",
            "food",
            "Potager & Cie",
            "potager-et-cie",
            "#2f6b2a",
            "#8a3b12",
            (
                ProductSpec("coffee", "drinks", "14.00", True, 30),
                ProductSpec("olive_oil", "pantry", "19.00", True, 45),
                ProductSpec("tea", "drinks", "9.00", True, 30),
                ProductSpec("honey", "sweets", "12.00", True, 40),
                ProductSpec("chocolate", "sweets", "6.00", True, 14),
                ProductSpec("granola", "pantry", "8.00", True, 14),
                ProductSpec("pasta", "pantry", "5.00", True, 21),
                ProductSpec("jam", "sweets", "7.00", True, 30),
            ),
        ),
        Sector(
            "luxury",
            "luxury",
            "Orfèvre Vauclair",
            "orfevre-vauclair",
            "#5c4a1e",
            "#2b2b5c",
            (
                ProductSpec("necklace", "jewellery", "890.00"),
                ProductSpec("handbag", "leather", "1450.00"),
                ProductSpec("silk_square", "accessories", "390.00"),
                ProductSpec("coat", "ready_to_wear", "1890.00", sizes=("36", "38", "40", "42")),
                ProductSpec("watch", "watches", "3200.00"),
                ProductSpec("ring", "jewellery", "650.00", sizes=("50", "52", "54", "56")),
                ProductSpec("cufflinks", "jewellery", "420.00"),
                ProductSpec("earrings", "jewellery", "2400.00"),
            ),
        ),
        Sector(
            "baby",
            "children",
            "Petit Nuage",
            "petit-nuage",
            "#2c5d8a",
            "#7a3b5c",
            (
                ProductSpec("bodysuit", "clothing", "22.00", sizes=("0-3m", "3-6m", "6-12m")),
                ProductSpec("plush", "toys", "29.00"),
                ProductSpec("nappies", "care", "39.00", True, 21),
                ProductSpec("wipes", "care", "12.00", True, 14),
                ProductSpec("sleeping_bag", "nursery", "59.00"),
                ProductSpec("rattle", "toys", "18.00"),
                ProductSpec("bottle", "care", "15.00"),
                ProductSpec("blanket", "nursery", "45.00"),
            ),
        ),
        Sector(
            "subscription",
            "subscription",
            "La Box Mensuelle",
            "la-box-mensuelle",
            "#5a2d82",
            "#1f6b5a",
            (
                ProductSpec("discovery_box", "boxes", "29.00", True, 30),
                ProductSpec("coffee_box", "boxes", "24.00", True, 30),
                ProductSpec("tea_box", "boxes", "19.00", True, 30),
                ProductSpec("razor_refill", "refills", "15.00", True, 30),
                ProductSpec("gift_box", "gifts", "49.00"),
                ProductSpec("snack_box", "boxes", "22.00", True, 30),
                ProductSpec("beauty_box", "boxes", "26.00", True, 30),
                ProductSpec("wine_box", "boxes", "45.00", True, 30),
            ),
        ),
    )
}
# The sector presets' own word for the baby sector is accepted too.
ALIASES = {"children": "baby"}


def sector_named(word: str) -> Sector:
    """The sector a --sector word names (ValueError naming the words otherwise)."""
    key = ALIASES.get(word.strip().lower(), word.strip().lower())
    if key not in SECTORS:
        raise ValueError(f"--sector must be one of {', '.join(SECTORS)}, got {word!r}")
    return SECTORS[key]
