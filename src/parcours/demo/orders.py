"""An order's life once placed: the order itself, its parcel from the label to the door
(or back to the sender), then a return, or a review through the hosted form. Pure: no
database."""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from parcours.commerce import reviews
from parcours.demo.people import Person
from parcours.demo.world import DAY, HOUR, MINUTE, REVIEW_FORM, Teller, total
from parcours.runtime.clock import iso
from parcours.runtime.i18n import text

_CARRIERS = {
    "FR": (("Colissimo", "colissimo"), ("Chronopost", "chronopost"), ("DPD", "dpd")),
    "GB": (("Royal Mail", "royal-mail"), ("DPD UK", "dpd-uk"), ("Evri", "evri")),
}
_PICKUP = {"FR": ("Mondial Relay", "mondial-relay"), "GB": ("InPost", "inpost")}
_RETURN_REASONS = ("size", "changed_mind", "damaged", "not_as_described")
_REVIEWS = 4  # demo.review.<rating>.<n>: n texts per rating


def order_and_after(
    teller: Teller, person: Person, at: int, cart_id: str, lines: list[dict[str, Any]]
) -> None:
    """The order of the cart's `lines` placed at `at`, and what follows it."""
    rng = teller.rng
    subtotal = total(lines)
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
    delivered = _parcel(teller, person, Parcel.of(teller, person, order_id), at)
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
class Parcel:
    shipment_id: str
    order_id: str
    carrier: str
    tracking_number: str
    tracking_url: str
    country: str

    @classmethod
    def of(cls, teller: Teller, person: Person, order_id: str) -> Parcel:
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

    def fields(self) -> dict[str, str]:
        """What every report of the parcel names: it, its order, its carrier and tracking."""
        return {
            "shipment_id": self.shipment_id,
            "order_id": self.order_id,
            "carrier": self.carrier,
            "tracking_number": self.tracking_number,
            "tracking_url": self.tracking_url,
        }

    @property
    def to_pickup_point(self) -> bool:
        return self.carrier in {name for name, _ in _PICKUP.values()}


def _daytime(moment: int, rng: random.Random, first_hour: int, last_hour: int) -> int:
    """A moment between these hours (UTC, daytime in Paris and London) of `moment`'s day."""
    midnight = moment - moment % DAY
    return midnight + rng.randrange(first_hour * HOUR, last_hour * HOUR)


def _parcel(teller: Teller, person: Person, parcel: Parcel, ordered: int) -> int | None:
    """The parcel's life from its label to its delivery: the delivery's time, or None when
    it went back to the sender."""
    rng = teller.rng
    shipment = parcel.fields()
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
    teller.carrier(moving, shipment, "in_transit", **estimate)
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
            moving + rng.randrange(6 * HOUR, 20 * HOUR), shipment, "failed", location=_depot(parcel)
        )
        day += DAY
    if parcel.to_pickup_point:
        ready = _daytime(day, rng, 7, 11)
        teller.carrier(ready, shipment, "ready_for_pickup", location=_relay(parcel, rng))
        if rng.random() < 0.06:  # never collected
            teller.carrier(ready + 10 * DAY, shipment, "expired")
            teller.carrier(ready + 13 * DAY, shipment, "returned_to_sender")
            return None
        collected = ready + rng.randrange(3 * HOUR, 3 * DAY)
        teller.track(person, collected, "Shipment Delivered", {**shipment, "status": "picked_up"})
        return collected
    out = _daytime(day, rng, 6, 8)
    teller.carrier(out, shipment, "out_for_delivery")
    attempts = 0
    while rng.random() < (0.12 if attempts == 0 else 0.2):
        attempts += 1
        teller.carrier(out + rng.randrange(3 * HOUR, 9 * HOUR), shipment, "delivery_attempted")
        if attempts == 2:
            teller.carrier(out + 5 * DAY, shipment, "returned_to_sender")
            return None
        out = _daytime(out + DAY, rng, 6, 8)
        teller.carrier(out, shipment, "out_for_delivery")
    delivered = out + rng.randrange(2 * HOUR, 9 * HOUR)
    teller.track(person, delivered, "Shipment Delivered", {**shipment, "status": "delivered"})
    return delivered


def _depot(parcel: Parcel) -> str:
    return "Roissy" if parcel.country == "FR" else "Heathrow"


def _relay(parcel: Parcel, rng: random.Random) -> str:
    shops = ("Tabac du Marché", "Librairie des Halles", "Pressing Central", "Fleurs & Co")
    if parcel.country == "GB":
        shops = ("Corner Shop Locker", "High Street Newsagent", "Station Locker", "Post Office")
    return rng.choice(shops)


def _return(
    teller: Teller, person: Person, order_id: str, lines: list[dict[str, Any]], at: int
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
    teller: Teller, person: Person, order_id: str, lines: list[dict[str, Any]], at: int
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
