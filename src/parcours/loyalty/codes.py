"""Referral and reward codes: unguessable, yet easy to read aloud and type.

A referral code is the customer's first name, folded to plain capitals, and six random
characters (`CAMILLE-7K3QM9`); without a first name, eight random characters in two
groups (`7K3Q-M9XD`). Reward codes are twelve random characters (`K7QM-3XDP-9RTA`). The
random characters leave out those that are easily confused (0 and O, 1, I and L).
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from typing import Any

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
NAME_LENGTH = 12
_NOT_LETTER = re.compile(r"[^A-Z]")


def new_referral_code(first_name: str | None) -> str:
    """A fresh random code; its uniqueness is the database's to enforce."""
    name = name_part(first_name)
    if name:
        return f"{name}-{_random(6)}"
    return f"{_random(4)}-{_random(4)}"


def new_reward_code() -> str:
    return f"{_random(4)}-{_random(4)}-{_random(4)}"


def name_part(first_name: str | None) -> str:
    """`Éloïse` -> `ELOISE`: accents dropped, letters only, at most 12 of them."""
    if not first_name:
        return ""
    folded = unicodedata.normalize("NFKD", first_name).encode("ascii", "ignore").decode()
    return _NOT_LETTER.sub("", folded.upper())[:NAME_LENGTH]


def normalise(typed: str) -> str:
    """A code as a customer may type it: any case, with stray spaces."""
    return "".join(typed.split()).upper()


def codes_in_order(properties: dict[str, Any]) -> list[str]:
    """The codes an `Order Completed` carries: `referral_code`, then `coupon` (Segment's
    spec; Shopify's several discount codes arrive there joined by commas)."""
    found: list[str] = []
    for name in ("referral_code", "coupon"):
        value = properties.get(name)
        if not isinstance(value, str):
            continue
        for part in value.split(","):
            code = normalise(part)
            if code and code not in found:
                found.append(code)
    return found


def _random(length: int) -> str:
    """`length` characters of ALPHABET, uniformly, from one draw of the system's source."""
    number = secrets.randbelow(len(ALPHABET) ** length)
    characters = []
    for _ in range(length):
        number, index = divmod(number, len(ALPHABET))
        characters.append(ALPHABET[index])
    return "".join(characters)
