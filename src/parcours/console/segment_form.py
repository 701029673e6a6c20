"""A segment built from a form: rows of condition (a trait, a computed trait, an event done
N times in the last D days, the time since an event last happened), operator and value,
all or any of them. The form and the YAML are two ways of writing the same definition:
`definition` turns the form into what the YAML holds, `from_source` the YAML into the
form when the form can say it (one test per row, no `where` or `sum` on events); what it
cannot say is edited as YAML only."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from parcours.runtime.definitions import parse_duration
from parcours.segments import SegmentError, load_segment

KINDS = ("trait", "computed", "event", "last_event")
OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "contains", "in", "not_in", "exists")
# What each kind of row may compare with.
NUMERIC = ("eq", "ne", "gt", "gte", "lt", "lte")
SINCE = ("gt", "gte", "lt", "lte")
MAX_ROWS = 50
_ROOTS = {"trait": "profile.traits.", "computed": "profile.computed."}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
_EVENT = re.compile(r"^\S(?:[^\x00-\x1f]{0,198}\S)?$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_WHOLE = re.compile(r"^\d{1,5}$")
_DAY = 86_400


@dataclass
class Row:
    """One condition as the form shows it; `error` is a message key and its values."""

    kind: str = "trait"
    name: str = ""  # the trait, computed trait or event name
    op: str = "eq"
    value: str = ""  # the compared value; for last_event, a number of days
    days: str = ""  # for event: within the last so many days (empty: ever)
    error: tuple[str, dict[str, str]] | None = None


@dataclass
class Builder:
    """The whole form: the segment's id, name, description, all/any, and its rows."""

    id: str = ""
    name: str = ""
    description: str = ""
    match: str = "all"
    rows: list[Row] = field(default_factory=list)
    # "id" or "name" -> (message key or text, values): a problem named on its field.
    errors: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    fits: bool = True  # False: the definition says more than the form can

    def problem_on(self, path: str, message: str) -> bool:
        """Put a problem the definition's check found (`conditions[2].events.count`) on the
        field it is about; False when it is about no field of the form."""
        path = path.removeprefix("$.")
        if path in ("id", "name"):
            self.errors.setdefault(path, ("", {"text": message}))
            return True
        found = re.match(r"^conditions\[(\d+)\](?:\.any\[(\d+)\])?", path)
        if found is None:
            return False
        index = int(found.group(2) if self.match == "any" and found.group(2) else found.group(1))
        if index >= len(self.rows):
            return False
        if self.rows[index].error is None:
            self.rows[index].error = ("", {"text": message})
        return True

    @property
    def has_errors(self) -> bool:
        return bool(self.errors) or any(row.error for row in self.rows)


def from_form(data: dict[str, str]) -> Builder:
    """The form as it was posted, with `action` applied (`add` a row, `remove-N`)."""
    try:
        count = min(int(data.get("rows", "0")), MAX_ROWS)
    except ValueError:
        count = 0
    rows = [
        Row(
            kind=_one_of(data.get(f"kind-{n}", ""), KINDS),
            name=data.get(f"name-{n}", "").strip(),
            op=_one_of(data.get(f"op-{n}", ""), OPERATORS),
            value=data.get(f"value-{n}", "").strip(),
            days=data.get(f"days-{n}", "").strip(),
        )
        for n in range(count)
    ]
    action = data.get("action", "")
    if action == "add" and len(rows) < MAX_ROWS:
        rows.append(Row())
    elif action.startswith("remove-") and action[7:].isdigit():
        index = int(action[7:])
        if 0 <= index < len(rows):
            del rows[index]
    return Builder(
        id=data.get("id", "").strip(),
        name=data.get("name", "").strip(),
        description=data.get("description", "").strip(),
        match="any" if data.get("match") == "any" else "all",
        rows=rows,
    )


def _one_of(value: str, allowed: tuple[str, ...]) -> str:
    return value if value in allowed else allowed[0]


def definition(builder: Builder) -> dict[str, Any] | None:
    """What the form says, as the YAML holds it; None when a row cannot be read (its
    `error` says why, in the viewer's words)."""
    conditions: list[dict[str, Any]] = []
    for row in builder.rows:
        condition = _condition(row)
        if condition is not None:
            conditions.append(condition)
    if not builder.rows:
        builder.errors.setdefault("rows", ("console_build.segments.no_rows", {}))
    if builder.has_errors:
        return None
    document: dict[str, Any] = {"id": builder.id, "name": builder.name}
    if builder.description:
        document["description"] = builder.description
    document["conditions"] = [{"any": conditions}] if builder.match == "any" else conditions
    return document


def _condition(row: Row) -> dict[str, Any] | None:
    if not (_NAME if row.kind in _ROOTS else _EVENT).match(row.name):
        row.error = ("console_build.segments.bad_name", {})
        return None
    if row.kind in _ROOTS:
        return {_ROOTS[row.kind] + row.name: {row.op: _typed(row.op, row.value)}}
    if row.kind == "event":
        if row.op not in NUMERIC or not _WHOLE.match(row.value):
            row.error = ("console_build.segments.bad_count", {})
            return None
        events: dict[str, Any] = {"name": row.name}
        if row.days:
            if not _WHOLE.match(row.days) or int(row.days) == 0:
                row.error = ("console_build.segments.bad_days", {})
                return None
            events["within"] = f"{int(row.days)}d"
        events["count"] = {row.op: int(row.value)}
        return {"events": events}
    if row.op not in SINCE or not _WHOLE.match(row.value):
        row.error = ("console_build.segments.bad_since", {})
        return None
    return {"events": {"name": row.name, "since_last": {row.op: f"{int(row.value)}d"}}}


def _typed(op: str, text: str) -> Any:
    """A value typed in the form as YAML would read it: a number, true or false, a text
    (quoted to keep a number as text: "0100"), a list separated by commas for in/not_in."""
    if op == "exists":
        return text.lower() != "false"
    if op in ("in", "not_in"):
        return [_scalar(part.strip()) for part in text.split(",") if part.strip()]
    return _scalar(text)


def _scalar(text: str) -> Any:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    if _NUMBER.match(text):
        return float(text) if "." in text else int(text)
    return text


def _shown(value: Any) -> str:
    """A value as the form shows it (the inverse of `_typed`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(_shown(item) for item in value)
    if isinstance(value, str) and (value in ("true", "false") or _NUMBER.match(value)):
        return f'"{value}"'
    return str(value)


def as_yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(
        document, sort_keys=False, allow_unicode=True, width=100, default_flow_style=None
    )


def from_source(source: str) -> Builder:
    """The form for a definition written in YAML; `fits` False when it cannot be read or
    says more than the form can (then the form is not offered)."""
    try:
        segment = load_segment(source)
    except SegmentError:
        return Builder(fits=False)
    builder = Builder(id=segment.id, name=segment.name, description=segment.description)
    conditions = segment.conditions
    if len(conditions) == 1 and set(conditions[0]) == {"any"}:
        builder.match = "any"
        conditions = conditions[0]["any"]
    for condition in conditions:
        row = _row(condition)
        if row is None:
            return Builder(fits=False)
        builder.rows.append(row)
    return builder


def _row(condition: dict[str, Any]) -> Row | None:
    if len(condition) != 1:
        return None
    [(path, test)] = condition.items()
    if path == "events":
        return _event_row(test)
    for kind, root in _ROOTS.items():
        if path.startswith(root) and isinstance(test, dict) and len(test) == 1:
            [(op, value)] = test.items()
            if op in OPERATORS and _fits_value(op, value):
                return Row(kind, path[len(root) :], op, "" if op == "exists" else _shown(value))
    return None


def _fits_value(op: str, value: Any) -> bool:
    if op == "exists":
        return isinstance(value, bool)
    if op in ("in", "not_in"):
        return isinstance(value, list) and all(_plain(item) for item in value)
    return _plain(value)


def _plain(value: Any) -> bool:
    """A value the form writes back the same (no comma inside a text, nothing nested)."""
    if isinstance(value, str):
        return "," not in value and value == value.strip()
    return isinstance(value, bool | int | float)


def _event_row(spec: Any) -> Row | None:
    if not isinstance(spec, dict) or set(spec) - {"name", "within", "count", "since_last"}:
        return None
    name = spec.get("name")
    if not isinstance(name, str) or not _EVENT.match(name):
        return None
    if "count" in spec and "since_last" not in spec:
        test = spec["count"]
        if not isinstance(test, dict) or len(test) != 1:
            return None
        [(op, value)] = test.items()
        if op not in NUMERIC or not isinstance(value, int) or isinstance(value, bool):
            return None
        days = ""
        if spec.get("within") is not None:
            days = _days(spec["within"]) or ""
            if not days:
                return None
        return Row("event", name, op, str(value), days)
    if "since_last" in spec and "count" not in spec and "within" not in spec:
        test = spec["since_last"]
        if not isinstance(test, dict) or len(test) != 1:
            return None
        [(op, value)] = test.items()
        since = _days(value) if op in SINCE else None
        return None if since is None else Row("last_event", name, op, since)
    return None


def _days(duration: Any) -> str | None:
    """A duration of whole days as their number; None otherwise."""
    try:
        parsed = parse_duration(str(duration))
    except ValueError:
        return None
    if parsed.months or parsed.seconds <= 0 or parsed.seconds % _DAY:
        return None
    return str(parsed.seconds // _DAY)


__all__ = [
    "KINDS",
    "OPERATORS",
    "Builder",
    "Row",
    "as_yaml",
    "definition",
    "from_form",
    "from_source",
]
