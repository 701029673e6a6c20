"""What the demo's shoppers do, drawn from the seed: pure functions, no database.

Simulated time is cut into slots of a quarter of an hour. Each slot's stories (a
browse, a cart left, an order with its parcel, a sign-up, an unsubscription...) are
drawn from a generator seeded by the seed and the slot alone, and each story's events
from one seeded by the seed, the slot and the story's place in it: so the same seed gives
the same traffic, a story can be drawn again after a restart from its name alone
(`story`), and every event has a message id of its own that the log keeps once
(`demo-<seed>-<slot>-<story>-<step>`).

Each event says which door it takes (`world.py`): the shop's site (the tracking API's
events), the carrier's webhook, the "notify me" form, the review form, or the site's push
subscription script. An order's life once placed is `orders.py`'s."""

from __future__ import annotations

import base64
import math
import random
from collections.abc import Callable
from datetime import datetime
from typing import Any

from parcours.demo.orders import order_and_after
from parcours.demo.people import Person, new_person
from parcours.demo.world import (
    BRAND_ZONE,
    DAY,
    HOUR,
    MINUTE,
    NOTIFY_ME,
    PUSH_SUBSCRIBE,
    SLOT_MS,
    Planned,
    Teller,
    World,
    total,
)
from parcours.runtime.clock import iso
from parcours.runtime.i18n import text

_BROWSERS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 15) AppleWebKit/537.36 Chrome/131.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
)

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
# Every Thursday at ten (Paris), the brand opens a private sale to its VIP customers.
SALE_DAY, SALE_HOUR = 3, 10


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
    teller = Teller(world, rng, f"demo-{world.seed}-{slot}-{index}", slot * 10_000 + index)
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


# ---- the stories ---------------------------------------------------------------------


def _browse(teller: Teller, at: int) -> None:
    """A customer looks at a product or two and leaves."""
    person = teller.customer()
    for _ in range(teller.rng.choice((1, 1, 2))):
        item = teller.item()
        teller.track(
            person, at, "Product Viewed", item.line(teller.world.sector, person.language, 1, None)
        )
        at += teller.rng.randrange(MINUTE, 8 * MINUTE)


def _interest(teller: Teller, at: int) -> None:
    """A product looked at three times within a day, never added to the cart: the browse
    abandonment journey's customer."""
    person, item = teller.customer(), teller.item()
    line = item.line(teller.world.sector, person.language, 1, None)
    for _ in range(3):
        teller.track(person, at, "Product Viewed", line)
        at += teller.rng.randrange(HOUR, 7 * HOUR)


def _cart(teller: Teller, person: Person, at: int) -> tuple[str, list[dict[str, Any]], int]:
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


def _abandon(teller: Teller, at: int) -> None:
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
                "total": float(total(lines)),
                "currency": "EUR",
                "products": lines,
            },
        )


def _recover(teller: Teller, at: int) -> None:
    """A cart left, then ordered after all a few hours later (the reminder worked)."""
    person = teller.customer()
    cart_id, lines, at = _cart(teller, person, at)
    later = at + teller.rng.randrange(2 * HOUR, 26 * HOUR)
    order_and_after(teller, person, later, cart_id, lines)


def _order(teller: Teller, at: int, person: Person | None = None) -> None:
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
            "total": float(total(lines)),
            "currency": "EUR",
            "products": lines,
        },
    )
    order_and_after(
        teller, person, at + teller.rng.randrange(3 * MINUTE, 15 * MINUTE), cart_id, lines
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


def _signup(teller: Teller, at: int) -> None:
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


def _unsubscribe(teller: Teller, at: int) -> None:
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


def _private_sale(teller: Teller, at: int) -> None:
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


def _stock(teller: Teller, at: int) -> None:
    """A product sells out; a few shoppers ask, on its page, to be told when it is back
    (by email, with the words they agreed to); it comes back a day or three later."""
    rng = teller.rng
    item = teller.item()
    size = rng.choice(item.spec.sizes) if item.spec.sizes else None
    variant = item.variant_id(size)
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


_STORIES: dict[str, Callable[[Teller, int], None]] = {
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
