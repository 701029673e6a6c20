"""The condition language journeys and segments share: `{path: {operator: value}}`, all of
a list holding, `any:` for either; its checks, its evaluation, and key normalisation.

Paths are dotted into a scope the caller builds (`profile.traits.vip`, `entry.properties.total`,
`segment.vip`); each user of the language says which roots it offers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

Operator = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "exists", "contains"]
OPERATORS: frozenset[str] = frozenset(Operator.__args__)  # type: ignore[attr-defined]

# (path, message) pairs, turned into problems with their lines by the definition's loader.
Problems = list[tuple[str, str]]
# A condition key with a meaning of its own (segments' `events:`), checked by its user.
SpecialCheck = Callable[[Any, str, Problems], None]

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
        elif isinstance(value, list) and _position(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _position(part: str) -> int:
    """A list index written in a path (`products.0`); past any list when it is not one
    (`str.isdigit` also takes `²`, which `int` refuses)."""
    if part.isascii() and part.isdigit() and len(part) < 10:
        return int(part)
    return 2**31


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
    """One text per identifier. A text is kept exactly as written: cart "0100" is not cart
    "100" (an id is not a number). A JSON number is written the way JSON writes it, so 100
    and 100.0 are the cart "100". None stays None."""
    if value is None or value is _MISSING or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


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
    left, right = as_number(value), as_number(expected)
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
    if isinstance(left, str) and isinstance(right, str):
        return left == right  # text is compared as written: "0100" is not "100"
    a, b = as_number(left), as_number(right)
    if a is not None and b is not None:
        return a == b
    return bool(left == right)


def as_number(value: Any) -> Decimal | None:
    """A finite number from an int, a float or a numeric text; None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | str):
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def check_conditions(
    conditions: Any,
    path: str,
    problems: Problems,
    roots: tuple[str, ...],
    special: dict[str, SpecialCheck] | None = None,
) -> None:
    """Add a (path, message) for every mistake in a list of conditions: a path outside
    `roots`, a test that is not `{operator: value}`, an unknown operator."""
    if not isinstance(conditions, list):
        problems.append((path, "write a list of conditions"))
        return
    for index, condition in enumerate(conditions):
        here = f"{path}[{index}]"
        if not isinstance(condition, dict) or not condition:
            problems.append((here, "a condition is a mapping such as {path: {eq: 3}}"))
            continue
        if "any" in condition and len(condition) == 1:
            check_conditions(condition["any"], f"{here}.any", problems, roots, special)
            continue
        for target, test in condition.items():
            where = f"{here}.{target}"
            if special is not None and target in special:
                special[target](test, where, problems)
                continue
            if not isinstance(target, str) or not target.startswith(roots):
                named = [r.rstrip(".") for r in roots] + list(special or ())
                problems.append((where, f"{target!r} must start with one of {', '.join(named)}"))
            check_test(test, where, problems)


def check_test(
    test: Any, where: str, problems: Problems, allowed: frozenset[str] = OPERATORS
) -> None:
    """A test is a non-empty mapping of known operators to values."""
    if not isinstance(test, dict) or not test:
        problems.append((where, "write a test such as {eq: 3} or {gte: 100}"))
        return
    for operator in test:
        if operator not in allowed:
            problems.append(
                (
                    f"{where}.{operator}",
                    f"unknown operator; use one of {', '.join(sorted(allowed))}",
                )
            )


def condition_paths(conditions: list[dict[str, Any]]) -> Iterator[str]:
    """Every path the conditions test, `any:` included (what a condition depends on)."""
    for condition in conditions:
        if "any" in condition and len(condition) == 1:
            yield from condition_paths(condition["any"])
            continue
        yield from (str(path) for path in condition)


def uses_root(conditions: list[dict[str, Any]], root: str) -> bool:
    """Whether some condition reads a path under `root` (only then does it need loading)."""
    prefix = f"{root}."
    return any(path == root or path.startswith(prefix) for path in condition_paths(conditions))
