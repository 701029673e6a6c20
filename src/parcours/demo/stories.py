"""What the demo's shoppers do, drawn from the seed: pure functions, no database.

Simulated time is cut into slots of a quarter of an hour. Each slot's stories (a
browse, a cart left, an order with its parcel, a sign-up, an unsubscription...) are
drawn from a generator seeded by the seed and the slot alone, and each story's events
from one seeded by the seed, the slot and the story's place in it: so the same seed gives
the same traffic, a story can be drawn again after a restart from its name alone
(`story`), and every event has a message id of its own that the log keeps once
(`demo-<seed>-<slot>-<story>-<step>`).

Each event says which door it takes: the shop's site (the tracking API's events) or the
carrier's webhook (its body, mapped as the webhook maps it)."""

from __future__ import annotations

import base64
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from parcours.commerce import reviews
from parcours.demo.images import image_url
from parcours.demo.people import Person, new_person
from parcours.demo.sectors import ProductSpec, Sector
from parcours.runtime.clock import iso
from parcours.runtime.i18n import text

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
SLOT_MS = 15 * MINUTE
# The doors: the site's tracking calls, the carrier webhook, the product page's "notify
# me" form (POST /v1/back-in-stock) and the hosted review form.
SITE, CARRIER, NOTIFY_ME, REVIEW_FORM = "site", "carrier", "notify me", "review form"
PUSH_SUBSCRIBE = "push subscribe"  # the site's script: POST /v1/push/subscribe
_BROWSERS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 15) AppleWebKit/537.36 Chrome/131.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
)
BRAND_ZONE = ZoneInfo("Europe/Paris")

# Stories per hour for a thousand customers at the day's busiest, and at least this many
# per hour whatever the number of customers (so that a small demo still moves).
RATES: dict[str, tuple[float, float]] = {
    "browse": (30.0, 3.0),
    "interest": (4.0, 0.6),
    "abandon": (8.0, 1.5),
    "recover": (3.0, 0.5),
    "order": (10.0, 2.0),
    "signup": (1.5, 0.3),
    "unsubscribe": (0.6, 0.15),
    "stock": (0.3, 0.3),
}
# How busy the shop is at each hour of the brand's day (Europe/Paris), busiest 1.
_HOURS = (
    0.12, 0.06, 0.04, 0.03, 0.03, 0.06, 0.15, 0.3, 0.45, 0.55, 0.65, 0.75,
    0.9, 0.85, 0.7, 0.65, 0.7, 0.8, 0.9, 1.0, 1.0, 0.85, 0.55, 0.3,
)  # fmt: skip
_CARRIERS = {
    "FR": (("Colissimo", "colissimo"), ("Chronopost", "chronopost"), ("DPD", "dpd")),
    "GB": (("Royal Mail", "royal-mail"), ("DPD UK", "dpd-uk"), ("Evri", "evri")),
}
_PICKUP = {"FR": ("Mondial Relay", "mondial-relay"), "GB": ("InPost", "inpost")}
_RETURN_REASONS = ("size", "changed_mind", "damaged", "not_as_described")
_REVIEWS = 4  # demo.review.<rating>.<n>: n texts per rating
# Every Thursday at ten (Paris), the brand opens a private sale to its VIP customers.
SALE_DAY, SALE_HOUR = 3, 10


@dataclass(frozen=True)
class Item:
    """A product of the demo's catalog, as the site's events name it."""

    spec: ProductSpec
    product_id: str
    price: Decimal
    image: str
    url: str

    def line(
        self, sector: Sector, language: str, quantity: int, size: str | None
    ) -> dict[str, Any]:
        line: dict[str, Any] = {
            "product_id": self.product_id,
            "variant_id": f"{self.product_id}-{size.lower()}" if size else self.product_id,
            "sku": (f"{self.product_id}-{size}" if size else self.product_id).upper(),
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
    site; the carrier webhook's body for the carrier)."""

    at: int
    door: str
    document: dict[str, Any]


def slot_plan(world: World, slot: int) -> list[str]:
    """The kinds of the stories that begin in `slot`, in order: how many of each is drawn
    from the shop's rate at that hour of the brand's day."""
    rng = random.Random(f"parcours-demo:{world.seed}:slot:{slot}")
    hour = datetime.fromtimestamp(world.slot_start(slot) / 1000, BRAND_ZONE).hour
    busy = _HOURS[hour]
    scale = len(world.customers) / 1000
    kinds: list[str] = []
    for kind, (per_thousand, floor) in RATES.items():
        per_hour = per_thousand * scale if kind != "stock" else per_thousand
        expected = max(per_hour, floor) * busy * SLOT_MS / HOUR
        kinds += [kind] * _poisson(rng, expected)
    rng.shuffle(kinds)
    local = datetime.fromtimestamp(world.slot_start(slot) / 1000, BRAND_ZONE)
    if (local.weekday(), local.hour) == (SALE_DAY, SALE_HOUR) and local.minute < 15:
        kinds.append("private_sale")
    return kinds


def story(world: World, slot: int, index: int) -> list[Planned]:
    """The events of the `index`th story of `slot`, in the order of their times."""
    kinds = slot_plan(world, slot)
    if index >= len(kinds):
        return []
    rng = random.Random(f"parcours-demo:{world.seed}:story:{slot}:{index}")
    teller = _Teller(world, rng, f"demo-{world.seed}-{slot}-{index}", slot * 10_000 + index)
    begins = world.slot_start(slot) + rng.randrange(SLOT_MS)
    _STORIES[kinds[index]](teller, begins)
    return teller.planned()


def _poisson(rng: random.Random, expected: float) -> int:
    """A count drawn from Poisson's law (Knuth's method: fine for small means)."""
    limit, count, product = math.exp(-expected), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


class _Teller:
    """Builds one story's events with their message ids and times."""

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

    def carrier(self, at: int, parcel: _Parcel, status: str, **more: str | None) -> None:
        body = {
            "shipment_id": parcel.shipment_id,
            "order_id": parcel.order_id,
            "status": status,
            "occurred_at": iso(at),
            "carrier": parcel.carrier,
            "tracking_number": parcel.tracking_number,
            "tracking_url": parcel.tracking_url,
            **more,
        }
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
    if planned.door == PUSH_SUBSCRIBE:  # the site's script names no message id: the demo does
        return {**planned.document, "messageId": message_id}
    return {**planned.document, "messageId": message_id}


def _total(lines: list[dict[str, Any]]) -> Decimal:
    return sum(
        (Decimal(str(line["price"])) * int(line["quantity"]) for line in lines), Decimal("0")
    )


# ---- the stories ---------------------------------------------------------------------


def _browse(teller: _Teller, at: int) -> None:
    """A customer looks at a product or two and leaves."""
    person = teller.customer()
    for _ in range(teller.rng.choice((1, 1, 2))):
        item = teller.item()
        teller.track(
            person, at, "Product Viewed", item.line(teller.world.sector, person.language, 1, None)
        )
        at += teller.rng.randrange(MINUTE, 8 * MINUTE)


def _interest(teller: _Teller, at: int) -> None:
    """A product looked at three times within a day, never added to the cart: the browse
    abandonment journey's customer."""
    person, item = teller.customer(), teller.item()
    line = item.line(teller.world.sector, person.language, 1, None)
    for _ in range(3):
        teller.track(person, at, "Product Viewed", line)
        at += teller.rng.randrange(HOUR, 7 * HOUR)


def _cart(teller: _Teller, person: Person, at: int) -> tuple[str, list[dict[str, Any]], int]:
    """Views, then products added to a cart, perhaps a checkout begun: the cart's id, its
    lines, and the time of its last activity."""
    cart_id = f"cart-{teller.name}"
    lines = teller.cart_lines(person, teller.rng.choice((1, 1, 2, 3)))
    for line in lines:
        teller.track(
            person, at, "Product Viewed", {k: v for k, v in line.items() if k != "quantity"}
        )
        at += teller.rng.randrange(MINUTE, 5 * MINUTE)
        teller.track(person, at, "Product Added", {"cart_id": cart_id, **line})
        at += teller.rng.randrange(MINUTE, 4 * MINUTE)
    return cart_id, lines, at


def _abandon(teller: _Teller, at: int) -> None:
    """A cart left: commerce announces it after an hour without activity."""
    person = teller.customer()
    cart_id, lines, at = _cart(teller, person, at)
    if teller.rng.random() < 0.4:
        teller.track(
            person,
            at,
            "Checkout Started",
            {
                "checkout_id": f"checkout-{teller.name}",
                "cart_id": cart_id,
                "total": float(_total(lines)),
                "currency": "EUR",
                "products": lines,
            },
        )


def _recover(teller: _Teller, at: int) -> None:
    """A cart left, then ordered after all a few hours later (the reminder worked)."""
    person = teller.customer()
    cart_id, lines, at = _cart(teller, person, at)
    later = at + teller.rng.randrange(2 * HOUR, 26 * HOUR)
    _order_and_after(teller, person, later, cart_id, lines)


def _order(teller: _Teller, at: int, person: Person | None = None) -> None:
    """An order, from the first view to the parcel's delivery, and what may follow."""
    person = person or teller.customer()
    cart_id, lines, at = _cart(teller, person, at)
    teller.track(
        person,
        at,
        "Checkout Started",
        {
            "checkout_id": f"checkout-{teller.name}",
            "cart_id": cart_id,
            "total": float(_total(lines)),
            "currency": "EUR",
            "products": lines,
        },
    )
    _order_and_after(
        teller, person, at + teller.rng.randrange(3 * MINUTE, 15 * MINUTE), cart_id, lines
    )


def _order_and_after(
    teller: _Teller, person: Person, at: int, cart_id: str, lines: list[dict[str, Any]]
) -> None:
    rng = teller.rng
    subtotal = _total(lines)
    shipping = Decimal("0") if subtotal >= 60 else Decimal("4.90")
    # An order's id is the number the customer reads: the brand's initials, then a number.
    initials = "".join(word[0] for word in teller.world.sector.slug.split("-")[:2]).upper()
    order_id = number = f"{initials}-{100_000 + teller.number}"
    teller.track(
        person,
        at,
        "Order Completed",
        {
            "order_id": order_id,
            "order_number": number,
            "checkout_id": f"checkout-{teller.name}",
            "cart_id": cart_id,
            "subtotal": float(subtotal),
            "shipping": float(shipping),
            "total": float(subtotal + shipping),
            "currency": "EUR",
            "products": lines,
        },
    )
    delivered = _parcel(teller, person, _Parcel.of(teller, person, order_id), at)
    if delivered is None:
        return
    if rng.random() < 0.08:
        _return(teller, person, order_id, lines, delivered + rng.randrange(DAY, 10 * DAY))
    elif rng.random() < 0.35:
        # Commerce asks for the review its sector's days after delivery, at 18:30 (Paris):
        # the customer answers that evening, or one of the next two.
        days = reviews.SECTOR_REVIEW_DAYS.get(teller.world.sector.preset, 7)
        _review(teller, person, order_id, lines, delivered + days * DAY + rng.randrange(3) * DAY)


@dataclass(frozen=True)
class _Parcel:
    shipment_id: str
    order_id: str
    carrier: str
    tracking_number: str
    tracking_url: str
    country: str

    @classmethod
    def of(cls, teller: _Teller, person: Person, order_id: str) -> _Parcel:
        country = person.country if person.country in _CARRIERS else "FR"
        pickup = teller.rng.random() < 0.15
        name, slug = _PICKUP[country] if pickup else teller.rng.choice(_CARRIERS[country])
        number = f"{slug[:2].upper()}{teller.rng.randrange(10**11, 10**12)}"
        return cls(
            f"parcel-{teller.name}",
            order_id,
            name,
            number,
            f"https://tracking.example.com/{slug}/{number}",
            country,
        )

    @property
    def to_pickup_point(self) -> bool:
        return self.carrier in {name for name, _ in _PICKUP.values()}


def _daytime(moment: int, rng: random.Random, first_hour: int, last_hour: int) -> int:
    """A moment between these hours (UTC, daytime in Paris and London) of `moment`'s day."""
    midnight = moment - moment % DAY
    return midnight + rng.randrange(first_hour * HOUR, last_hour * HOUR)


def _parcel(teller: _Teller, person: Person, parcel: _Parcel, ordered: int) -> int | None:
    """The parcel's life from its label to its delivery: the delivery's time, or None when
    it went back to the sender."""
    rng = teller.rng
    shipment = {
        "shipment_id": parcel.shipment_id,
        "order_id": parcel.order_id,
        "carrier": parcel.carrier,
        "tracking_number": parcel.tracking_number,
        "tracking_url": parcel.tracking_url,
    }
    labelled = ordered + rng.randrange(30 * MINUTE, 4 * HOUR)  # shipped the same day
    day = labelled - labelled % DAY + rng.choice((1, 2, 2, 3)) * DAY
    estimate = {
        "estimated_delivery_from": iso(day + 8 * HOUR),
        "estimated_delivery_to": iso(day + 18 * HOUR),
    }
    teller.track(
        person,
        labelled,
        "Shipment Label Created",
        {**shipment, "status": "label_created", **estimate},
    )
    moving = labelled + rng.randrange(HOUR, 5 * HOUR)
    teller.carrier(moving, parcel, "in_transit", **estimate)
    chance = rng.random()
    if chance < 0.1:  # late: the estimate slips by a day
        day += DAY
        later = {
            "estimated_delivery_from": iso(day + 8 * HOUR),
            "estimated_delivery_to": iso(day + 18 * HOUR),
        }
        teller.track(
            person,
            moving + rng.randrange(6 * HOUR, 20 * HOUR),
            "Shipment Delayed",
            {**shipment, "status": "delayed", **later},
        )
    elif chance < 0.14:  # a problem at the depot, solved the next day
        teller.carrier(
            moving + rng.randrange(6 * HOUR, 20 * HOUR), parcel, "failed", location=_depot(parcel)
        )
        day += DAY
    if parcel.to_pickup_point:
        ready = _daytime(day, rng, 7, 11)
        teller.carrier(ready, parcel, "ready_for_pickup", location=_relay(parcel, rng))
        if rng.random() < 0.06:  # never collected
            teller.carrier(ready + 10 * DAY, parcel, "expired")
            teller.carrier(ready + 13 * DAY, parcel, "returned_to_sender")
            return None
        collected = ready + rng.randrange(3 * HOUR, 3 * DAY)
        teller.track(person, collected, "Shipment Delivered", {**shipment, "status": "picked_up"})
        return collected
    out = _daytime(day, rng, 6, 8)
    teller.carrier(out, parcel, "out_for_delivery")
    attempts = 0
    while rng.random() < (0.12 if attempts == 0 else 0.2):
        attempts += 1
        teller.carrier(out + rng.randrange(3 * HOUR, 9 * HOUR), parcel, "delivery_attempted")
        if attempts == 2:
            teller.carrier(out + 5 * DAY, parcel, "returned_to_sender")
            return None
        out = _daytime(out + DAY, rng, 6, 8)
        teller.carrier(out, parcel, "out_for_delivery")
    delivered = out + rng.randrange(2 * HOUR, 9 * HOUR)
    teller.track(person, delivered, "Shipment Delivered", {**shipment, "status": "delivered"})
    return delivered


def _depot(parcel: _Parcel) -> str:
    return "Roissy" if parcel.country == "FR" else "Heathrow"


def _relay(parcel: _Parcel, rng: random.Random) -> str:
    shops = ("Tabac du Marché", "Librairie des Halles", "Pressing Central", "Fleurs & Co")
    if parcel.country == "GB":
        shops = ("Corner Shop Locker", "High Street Newsagent", "Station Locker", "Post Office")
    return rng.choice(shops)


def _return(
    teller: _Teller, person: Person, order_id: str, lines: list[dict[str, Any]], at: int
) -> None:
    """A return: asked, its label sent, received at the warehouse, refunded."""
    rng = teller.rng
    line = rng.choice(lines)
    returned = [
        {
            "product_id": line["product_id"],
            "variant_id": line["variant_id"],
            "price": line["price"],
            "quantity": line["quantity"],
        }
    ]
    return_id = f"return-{teller.name}"
    base = {"return_id": return_id, "order_id": order_id}
    reason = rng.choice(_RETURN_REASONS)
    teller.track(
        person,
        at,
        "Return Requested",
        {**base, "reason": text(person.language, f"demo.return.{reason}"), "products": returned},
    )
    teller.track(person, at + rng.randrange(HOUR, 4 * HOUR), "Return Label Sent", base)
    received = at + rng.randrange(2 * DAY, 5 * DAY)
    teller.track(person, received, "Return Received", base)
    refunded = received + rng.randrange(4 * HOUR, DAY)
    teller.track(person, refunded, "Return Refunded", base)
    amount = float(Decimal(str(line["price"])) * int(line["quantity"]))
    teller.track(
        person,
        refunded + MINUTE,
        "Order Refunded",
        {
            "order_id": order_id,
            "refund_id": f"refund-{teller.name}",
            "total": amount,
            "currency": "EUR",
            "products": returned,
        },
    )


def _review(
    teller: _Teller, person: Person, order_id: str, lines: list[dict[str, Any]], at: int
) -> None:
    """A review of the order through the hosted form: a rating per product and a few
    words, in the customer's language."""
    rng = teller.rng
    rating = rng.choices((5, 4, 3, 2, 1), weights=(50, 30, 12, 5, 3))[0]
    ratings = {
        str(line["product_id"]): max(1, min(5, rating + rng.choice((0, 0, 0, -1, 1))))
        for line in lines
    }
    teller.form(
        _daytime(at, rng, 18, 22),
        REVIEW_FORM,
        {
            "order_id": order_id,
            "ratings": ratings,
            "text": text(person.language, f"demo.review.{rating}.{rng.randrange(_REVIEWS)}"),
            "locale": person.language,
        },
    )


# What the site records when a shopper accepts its notifications prompt.
PUSH_CONSENT = {
    "channel": "push",
    "purpose": "marketing",
    "status": "granted",
    "source": "notifications prompt",
}


def push_subscription(seed: int, person: Person, chance: float) -> dict[str, Any] | None:
    """What the site's script sends when `person` lets the shop's pages notify them (with
    this chance, drawn for them alone): their browser's subscription, whose endpoint only
    the sandbox ever sees."""
    rng = random.Random(f"parcours-demo:{seed}:push:{person.user_id}")
    if rng.random() >= chance:
        return None
    point = bytes([4]) + rng.randbytes(64)  # an uncompressed P-256 point's size
    return {
        "userId": person.user_id,
        "subscription": {
            "endpoint": f"https://push.example.com/demo/{seed}/{person.user_id}",
            "keys": {"p256dh": _base64url(point), "auth": _base64url(rng.randbytes(16))},
        },
        "userAgent": rng.choice(_BROWSERS),
    }


def _base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _signup(teller: _Teller, at: int) -> None:
    """A new customer signs up for the newsletter (some let the site notify them too);
    some order within days."""
    rng = teller.rng
    person = new_person(teller.world.seed, teller.newcomer_number, rng.random() < 0.6)
    teller.identify(person, at, person.traits())
    teller.track(person, at + rng.randrange(MINUTE), "Signed Up", {"method": "newsletter"})
    push = push_subscription(teller.world.seed, person, 0.4)
    if push is not None:
        allowed = at + rng.randrange(MINUTE, 5 * MINUTE)
        teller.track(person, allowed, "Consent Updated", PUSH_CONSENT)
        teller.form(allowed + 1000, PUSH_SUBSCRIBE, push)
    if rng.random() < 0.35:
        _order(teller, at + rng.randrange(DAY, 3 * DAY), person)


def _unsubscribe(teller: _Teller, at: int) -> None:
    """A customer withdraws a marketing consent (the email's unsubscribe link, or STOP)."""
    person = teller.customer()
    channel = "sms" if person.phone and teller.rng.random() < 0.3 else "email"
    teller.track(
        person,
        at,
        "Consent Updated",
        {
            "channel": channel,
            "purpose": "marketing",
            "status": "withdrawn",
            "source": "unsubscribe link" if channel == "email" else "STOP reply",
        },
    )


def _private_sale(teller: _Teller, at: int) -> None:
    """The week's private sale, announced by the brand to each of its VIP customers (as
    its shop or CRM tells Parcours, one event per customer), opening the next day."""
    opens = at - at % DAY + DAY + 8 * HOUR
    sale_id = f"sale-{str(iso(opens))[:10]}"
    for number, person in enumerate(p for p in teller.world.customers if p.vip):
        teller.track(
            person,
            at + number * 1000,
            "Private Sale Announced",
            {
                "sale_id": sale_id,
                "name": text(person.language, f"demo.private_sale.{teller.world.sector.key}"),
                "starts_at": iso(opens),
                "ends_at": iso(opens + 3 * DAY),
                "url": f"{teller.world.shop_url}/private-sale",
            },
        )


def _stock(teller: _Teller, at: int) -> None:
    """A product sells out; a few shoppers ask, on its page, to be told when it is back
    (by email, with the words they agreed to); it comes back a day or three later."""
    rng = teller.rng
    item = teller.item()
    size = rng.choice(item.spec.sizes) if item.spec.sizes else None
    variant = f"{item.product_id}-{size.lower()}" if size else item.product_id
    base = {"product_id": item.product_id}
    teller.catalog(at, {**base, "variants": [{"variant_id": variant, "stock": 0}]})
    for _ in range(rng.randrange(1, 6)):
        person = teller.customer()
        teller.form(
            at + rng.randrange(HOUR, DAY),
            NOTIFY_ME,
            {
                "email": person.email,
                "variantId": variant,
                "productId": item.product_id,
                "consentWording": text(person.language, "demo.notify_me.consent"),
                "locale": person.locale,
                "pageUrl": item.url,
            },
        )
    back = at + rng.randrange(DAY, 3 * DAY)
    stock = rng.randrange(5, 40)
    teller.catalog(back, {**base, "variants": [{"variant_id": variant, "stock": stock}]})


_STORIES: dict[str, Callable[[_Teller, int], None]] = {
    "browse": _browse,
    "interest": _interest,
    "abandon": _abandon,
    "recover": _recover,
    "order": _order,
    "signup": _signup,
    "unsubscribe": _unsubscribe,
    "stock": _stock,
    "private_sale": _private_sale,
}
