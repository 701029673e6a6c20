"""How the API shows values kept otherwise in the database: money as a decimal string with
its currency's minor unit (`"416.00"`, `"570"` in yen), and the times in Parcours' own
events (kept as milliseconds since the epoch) as ISO 8601 UTC, like every other time the
API shows (README, "The admin API")."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

import babel.numbers

from parcours.runtime.clock import iso

# The properties of the events Parcours records itself (sources below) that hold a time.
OWN_TIME_PROPERTIES = frozenset({"until"})
OWN_SOURCES = frozenset({"system", "channel"})


def money_text(amount: Any, currency: str | None) -> str | None:
    """An amount as a decimal string with the currency's number of decimals (two when the
    currency is unknown); None when it is not a number."""
    if amount is None or isinstance(amount, bool):
        return None
    try:
        value = Decimal(str(amount).strip())
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    try:
        digits = babel.numbers.get_currency_precision((currency or "").upper())
    except (KeyError, ValueError):
        digits = 2
    exponent = Decimal(1).scaleb(-digits)
    try:
        return str(value.quantize(exponent, rounding=ROUND_HALF_EVEN))
    except InvalidOperation:  # more digits than a decimal holds: shown as it is
        return str(value)


def own_event_properties(properties: dict[str, Any], source: str | None) -> dict[str, Any]:
    """An event's properties as the API shows them: the times of Parcours' own events in
    ISO 8601 (a customer's own properties are shown as they were sent)."""
    if source not in OWN_SOURCES or not OWN_TIME_PROPERTIES.intersection(properties):
        return properties
    shown = dict(properties)
    for name in OWN_TIME_PROPERTIES.intersection(properties):
        value = shown[name]
        if isinstance(value, int) and not isinstance(value, bool):
            shown[name] = iso(value)
    return shown


__all__ = ["money_text", "own_event_properties"]
