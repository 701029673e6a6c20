"""What the demo's stories are drawn from and made of: its world (the brand's sector, its
customers, its catalog, where its simulated time began), the events a story plans (each
with its time and the door it takes), and the teller that writes them down. Pure: no
database."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from parcours.demo.images import image_url
from parcours.demo.people import Person
from parcours.demo.sectors import ProductSpec, Sector
from parcours.runtime.clock import iso

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
SLOT_MS = 15 * MINUTE
BRAND_ZONE = ZoneInfo("Europe/Paris")
# The doors: the site's tracking calls, the carrier webhook, the product page's "notify
# me" form (POST /v1/back-in-stock), the hosted review form, and the site's script that
# subscribes a browser to push (POST /v1/push/subscribe).
SITE, CARRIER, NOTIFY_ME, REVIEW_FORM = "site", "carrier", "notify me", "review form"
PUSH_SUBSCRIBE = "push subscribe"


@dataclass(frozen=True)
class Item:
    """A product of the demo's catalog, as the site's events name it."""

    spec: ProductSpec
    product_id: str
    price: Decimal
    image: str
    url: str

    def variant_id(self, size: str | None) -> str:
        """The variant of that size (the product's own id when it comes in one size)."""
        return f"{self.product_id}-{size.lower()}" if size else self.product_id

    def sku(self, size: str | None) -> str:
        return (f"{self.product_id}-{size}" if size else self.product_id).upper()

    def line(
        self, sector: Sector, language: str, quantity: int, size: str | None
    ) -> dict[str, Any]:
        line: dict[str, Any] = {
            "product_id": self.product_id,
            "variant_id": self.variant_id(size),
            "sku": self.sku(size),
            "name": sector.name(self.spec, language),
            "category": sector.category(self.spec, language),
            "price": float(self.price),
            "quantity": quantity,
            "image_url": self.image,
            "url": self.url,
        }
        if size:
            line["variant"] = size
        return line


@dataclass(frozen=True)
class World:
    """Everything the stories are drawn from; the same for the same saved demo."""

    seed: int
    sector: Sector
    customers: tuple[Person, ...]
    start_ms: int  # slot 0 begins here
    public_url: str
    shop_url: str
    catalog: tuple[Item, ...] = field(default=())

    @classmethod
    def build(
        cls,
        seed: int,
        sector: Sector,
        customers: tuple[Person, ...],
        start_ms: int,
        public_url: str,
    ) -> World:
        shop_url = f"https://{sector.slug}.example"
        catalog = tuple(
            Item(
                spec,
                sector.product_id(spec),
                Decimal(spec.price),
                image_url(public_url, sector.product_id(spec)),
                f"{shop_url}/products/{spec.slug.replace('_', '-')}",
            )
            for spec in sector.products
        )
        return cls(seed, sector, customers, start_ms, public_url, shop_url, catalog)

    def slot_start(self, slot: int) -> int:
        return self.start_ms + slot * SLOT_MS

    def slot_of(self, moment: int) -> int:
        """The slot `moment` falls in (slot 0 for any moment before the start)."""
        return max(0, (moment - self.start_ms) // SLOT_MS)


@dataclass(frozen=True)
class Planned:
    """One event of a story: when, by which door, and what (the Segment event for the
    site; the body of the carrier webhook or of the form for the others)."""

    at: int
    door: str
    document: dict[str, Any]


class Teller:
    """Builds one story's events, each with its time and door; `planned()` gives them in
    the order of their times, with their message ids."""

    def __init__(self, world: World, rng: random.Random, name: str, number: int) -> None:
        self.world = world
        self.rng = rng
        self.name = name
        self.number = number  # the story's own, among all the demo's stories
        # A customer who signs up in this story is numbered after the seeded ones.
        self.newcomer_number = len(world.customers) + number
        self._events: list[Planned] = []

    def planned(self) -> list[Planned]:
        ordered = sorted(self._events, key=lambda planned: planned.at)
        # The step number is the place in time order: what a restart finds the story by.
        return [
            Planned(p.at, p.door, _with_id(p, f"{self.name}-{step}"))
            for step, p in enumerate(ordered)
        ]

    def customer(self) -> Person:
        return self.rng.choice(self.world.customers)

    def item(self) -> Item:
        return self.rng.choice(self.world.catalog)

    def track(self, person: Person, at: int, event: str, properties: dict[str, Any]) -> None:
        self._events.append(
            Planned(
                at,
                SITE,
                {
                    "type": "track",
                    "userId": person.user_id,
                    "event": event,
                    "timestamp": iso(at),
                    "context": person.context(),
                    "properties": properties,
                },
            )
        )

    def identify(self, person: Person, at: int, traits: dict[str, Any]) -> None:
        self._events.append(
            Planned(
                at,
                SITE,
                {
                    "type": "identify",
                    "userId": person.user_id,
                    "timestamp": iso(at),
                    "context": person.context(),
                    "traits": traits,
                },
            )
        )

    def catalog(self, at: int, properties: dict[str, Any]) -> None:
        self._events.append(
            Planned(
                at,
                SITE,
                {
                    "type": "track",
                    "event": "Product Updated",
                    "timestamp": iso(at),
                    "properties": properties,
                },
            )
        )

    def form(self, at: int, door: str, body: dict[str, Any]) -> None:
        """What a customer sends through one of Parcours' own forms."""
        self._events.append(Planned(at, door, body))

    def carrier(self, at: int, shipment: dict[str, str], status: str, **more: str | None) -> None:
        """A carrier's scan of a parcel (`shipment`: its id, order, carrier and tracking)."""
        body = {**shipment, "status": status, "occurred_at": iso(at), **more}
        self._events.append(Planned(at, CARRIER, body))

    def cart_lines(self, person: Person, count: int) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        for item in self.rng.sample(self.world.catalog, min(count, len(self.world.catalog))):
            size = self.rng.choice(item.spec.sizes) if item.spec.sizes else None
            quantity = 1 if not item.spec.consumable else self.rng.choice((1, 1, 2, 3))
            lines.append(item.line(self.world.sector, person.language, quantity, size))
        return lines


def _with_id(planned: Planned, message_id: str) -> dict[str, Any]:
    if planned.door == CARRIER:
        return {**planned.document, "event_id": message_id}
    if planned.door == REVIEW_FORM:  # the form names the order; a review is one per order
        return planned.document
    return {**planned.document, "messageId": message_id}


def total(lines: list[dict[str, Any]]) -> Decimal:
    """What a cart's or an order's lines come to."""
    return sum(
        (Decimal(str(line["price"])) * int(line["quantity"]) for line in lines), Decimal("0")
    )
