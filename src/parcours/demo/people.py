"""The demo's customers: plausible French and English profiles with their consents, drawn
from the seed (the same seed gives the same people). Their addresses are in the domains
kept for examples (example.com, .org, .net); their mobile numbers are well formed and
one per customer (+33 6 00 ..., +44 7700 1...), and only the sandbox ever "sends" to
them."""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from typing import Any

_FRENCH_FIRST = (
    "Camille", "Léa", "Manon", "Chloé", "Inès", "Jade", "Louise", "Zoé", "Alice", "Juliette",
    "Emma", "Sarah", "Lucie", "Margaux", "Anaïs", "Clara", "Pauline", "Élodie", "Mathilde",
    "Charlotte", "Lucas", "Hugo", "Louis", "Gabriel", "Arthur", "Jules", "Adam", "Raphaël",
    "Nathan", "Théo", "Thomas", "Maxime", "Antoine", "Julien", "Nicolas", "Baptiste",
    "Clément", "Romain", "Mathis", "Paul",
)  # fmt: skip
_FRENCH_LAST = (
    "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand",
    "Leroy", "Moreau", "Simon", "Laurent", "Lefèvre", "Michel", "Garcia", "David",
    "Bertrand", "Roux", "Vincent", "Fournier", "Morel", "Girard", "André", "Mercier",
    "Dupont", "Lambert", "Bonnet", "François", "Martinez", "Legrand", "Garnier", "Faure",
    "Rousseau", "Blanc", "Guérin", "Muller", "Henry", "Roussel", "Nicolas", "Perrin",
)  # fmt: skip
_FRENCH_CITIES = (
    "Paris", "Lyon", "Marseille", "Toulouse", "Nantes", "Bordeaux", "Lille", "Rennes",
    "Strasbourg", "Montpellier", "Nice", "Grenoble", "Dijon", "Angers", "Tours",
)  # fmt: skip
_ENGLISH_FIRST = (
    "Olivia", "Amelia", "Isla", "Ava", "Mia", "Ivy", "Lily", "Freya", "Grace", "Sophie",
    "Emily", "Ella", "Poppy", "Evie", "Hannah", "Ruby", "Chloe", "Daisy", "Alice", "Matilda",
    "Oliver", "George", "Harry", "Noah", "Jack", "Leo", "Arthur", "Oscar", "Charlie",
    "Henry", "Thomas", "James", "William", "Samuel", "Joseph", "Daniel", "Ethan", "Jacob",
    "Alfie", "Theo",
)  # fmt: skip
_ENGLISH_LAST = (
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies",
    "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green",
    "Hall", "Wood", "Jackson", "Clarke", "Patel", "Khan", "Lewis", "Harris", "Martin",
    "Cooper", "King", "Baker", "Turner", "Hughes", "Edwards", "Hill", "Moore", "Clark",
    "Harrison", "Scott", "Young", "Morris", "Ward", "Watson",
)  # fmt: skip
_ENGLISH_CITIES = (
    "London", "Manchester", "Bristol", "Leeds", "Edinburgh", "Glasgow", "Liverpool",
    "Birmingham", "Brighton", "Cardiff", "Oxford", "Cambridge", "York", "Bath", "Belfast",
)  # fmt: skip
_DOMAINS = ("example.com", "example.org", "example.net")
WORDING_VERSION = "preference-centre-1"  # the shipped consent words (brand.SHIPPED_VERSION)


@dataclass(frozen=True)
class Person:
    number: int
    user_id: str
    first_name: str
    last_name: str
    email: str
    phone: str | None
    locale: str  # fr-FR, en-GB
    timezone: str
    country: str
    city: str
    vip: bool
    consent: dict[str, Any]  # traits.consent as an identify call gives it
    joined_days_ago: int

    @property
    def language(self) -> str:
        return self.locale.split("-")[0]

    def context(self) -> dict[str, Any]:
        return {"locale": self.locale, "timezone": self.timezone}

    def traits(self) -> dict[str, Any]:
        traits: dict[str, Any] = {
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "city": self.city,
            "country": self.country,
            "consent": self.consent,
        }
        if self.phone:
            traits["phone"] = self.phone
        if self.vip:
            traits["vip"] = True
        return traits


# The first customer is always Camille, whom the README shows (GET /api/customers/...).
_CAMILLE = ("Camille", "Martin", "camille@example.com")


def people(seed: int, count: int) -> tuple[Person, ...]:
    """`count` customers drawn from `seed`: about three in five French, the others
    British; each with an email address, most with a mobile number; consents as a shop's
    sign-up form would record them."""
    rng = random.Random(f"parcours-demo:{seed}:people")
    found: list[Person] = []
    for number in range(count):
        french = number == 0 or rng.random() < 0.6
        found.append(_person(rng, number, french))
    return tuple(found)


def new_person(seed: int, number: int, french: bool) -> Person:
    """A customer who signs up for the newsletter while the demo runs (numbered after
    the seeded ones): an email address, no phone number yet."""
    rng = random.Random(f"parcours-demo:{seed}:signup:{number}")
    return _person(rng, number, french, with_phone=False)


def _person(rng: random.Random, number: int, french: bool, *, with_phone: bool = True) -> Person:
    if french:
        first, last = rng.choice(_FRENCH_FIRST), rng.choice(_FRENCH_LAST)
        city, locale, zone, country = rng.choice(_FRENCH_CITIES), "fr-FR", "Europe/Paris", "FR"
        phone = (
            f"+33 6 00 {number // 10_000 % 100:02d} {number // 100 % 100:02d} {number % 100:02d}"
        )
    else:
        first, last = rng.choice(_ENGLISH_FIRST), rng.choice(_ENGLISH_LAST)
        city, locale, zone, country = rng.choice(_ENGLISH_CITIES), "en-GB", "Europe/London", "GB"
        phone = f"+44 7700 1{number % 100_000:05d}"
    email = f"{_plain(first)}.{_plain(last)}.{number}@{rng.choice(_DOMAINS)}"
    if number == 0:
        first, last, email = _CAMILLE
    has_phone = rng.random() < 0.75 and with_phone
    consent: dict[str, Any] = {
        "email": {"marketing": rng.random() < 0.78},
        "source": "signup form",
        "wording_version": WORDING_VERSION,
    }
    if has_phone:
        consent["sms"] = {"marketing": rng.random() < 0.4}
        consent["whatsapp"] = {"marketing": rng.random() < 0.25}
    return Person(
        number=number,
        user_id=f"demo-{number:05d}",
        first_name=first,
        last_name=last,
        email=email,
        phone=phone if has_phone else None,
        locale=locale,
        timezone=zone,
        country=country,
        city=city,
        vip=rng.random() < 0.05,
        consent=consent,
        joined_days_ago=rng.randrange(1, 720),
    )


def _plain(name: str) -> str:
    """A name as an address's local part: no accents, spaces or apostrophes."""
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if c.isascii() and c.isalnum()).lower()
