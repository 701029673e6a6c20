"""Conditions over the entry event, the current event and the profile; key normalisation."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

_MISSING = object()
_EVENT_ROOTS = ("properties", "traits", "context", "event", "name", "type")


def resolve_path(path: str, scope: dict[str, Any]) -> Any:
    """The value at a dotted path; `properties.x` means the event being tested."""
    parts = path.split(".")
    if parts[0] in _EVENT_ROOTS and parts[0] not in scope:
        parts = ["event", *parts]
    value: Any = scope
    for part in parts:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def matches(conditions: list[dict[str, Any]], scope: dict[str, Any]) -> bool:
    """True when every condition holds (`any:` holds when one of its conditions does)."""
    for condition in conditions:
        if "any" in condition and len(condition) == 1:
            if not any(matches([c], scope) for c in condition["any"]):
                return False
            continue
        for path, test in condition.items():
            value = resolve_path(path, scope)
            for operator, expected in test.items():
                if not _holds(operator, value, expected):
                    return False
    return True


def normalise_key(value: Any) -> str | None:
    """One text per identifier: "100", 100 and 100.0 are one cart; None stays None."""
    if value is None or value is _MISSING or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value).strip()
    digits = text[1:] if text.startswith("-") else text
    return str(int(text)) if digits.isdigit() else text


def _holds(operator: str, value: Any, expected: Any) -> bool:
    if operator == "exists":
        return (value is not _MISSING and value is not None) == bool(expected)
    if value is _MISSING:
        return operator in ("ne", "not_in")
    if operator == "eq":
        return _equal(value, expected)
    if operator == "ne":
        return not _equal(value, expected)
    if operator == "in":
        return isinstance(expected, list) and any(_equal(value, item) for item in expected)
    if operator == "not_in":
        return isinstance(expected, list) and not any(_equal(value, item) for item in expected)
    if operator == "contains":
        if isinstance(value, str):
            return isinstance(expected, str) and expected in value
        if isinstance(value, list):
            return any(_equal(item, expected) for item in value)
        return False
    left, right = _number(value), _number(expected)
    if left is None or right is None:
        return False
    return {
        "gt": left > right,
        "gte": left >= right,
        "lt": left < right,
        "lte": left <= right,
    }[operator]


def _equal(left: Any, right: Any) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    a, b = _number(left), _number(right)
    if a is not None and b is not None:
        return a == b
    return bool(left == right)


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | str):
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None
