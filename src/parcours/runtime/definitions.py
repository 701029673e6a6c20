"""Definitions people write (journeys, segments, templates): YAML or JSON read into msgspec
structs, every problem named with its line and path; and the durations they are written with
(`90s`, `3d`).

A definition comes from an admin key's holder, but is still bounded (docs/security.md,
"Input limits"): no anchors or aliases (a few hundred bytes of nested aliases expand to
gigabytes), at most `MAX_DEPTH` levels of nesting, at most `MAX_DEFINITION_BYTES`, no key
given twice in one mapping (YAML would silently keep the last), no NUL character.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import msgspec
import yaml

T = TypeVar("T")


MAX_DEFINITION_BYTES = 256 * 1024
MAX_DEPTH = 64  # nested mappings and lists


class _Refused(Exception):
    """A document over one of the limits, found while composing it."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true and false. YAML 1.1 also reads on, off, yes and no as
    booleans, which would turn a journey's `on: leave` into `True: leave`.

    Anchors and aliases are refused as they are met, and nesting is counted, so that
    nothing is expanded or recursed into past the limits."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
            raise _Refused(
                line,
                "anchors and aliases (&name, *name) are not accepted in a definition: "
                "write each value out",
            )
        if not isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(line, f"nested more than {MAX_DEPTH} levels deep (the limit)")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


@dataclass(frozen=True)
class Problem:
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"


class DefinitionError(ValueError):
    """A definition that cannot be used; `problems` lists every mistake with its line."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class LineMap:
    """The line of every mapping key and list item, by JSONPath-like path ($.steps[0].send)."""

    def __init__(self) -> None:
        self.lines: dict[str, int] = {}

    def walk(self, node: Any, path: str) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                child = f"{path}.{key_node.value}"
                self.lines[child] = key_node.start_mark.line + 1
                self.walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.walk(item, f"{path}[{index}]")

    def line_of(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = re.sub(r"(\.[^.\[]+|\[\d+\])$", "", path) if path != "$" else ""
        return None

    def problems(self, found: list[tuple[str, str]]) -> list[Problem]:
        """(path, message) pairs as problems with their lines."""
        return [Problem(self.line_of(path), show(path), message) for path, message in found]


def load_yaml(
    source: str,
    error: type[DefinitionError] = DefinitionError,
    *,
    max_bytes: int = MAX_DEFINITION_BYTES,
) -> tuple[Any, Any]:
    """The document in `source` (YAML; JSON is YAML too) and its composed node (None for
    an empty document), within the limits above; raise `error` listing every problem."""
    size = len(source.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise error([Problem(None, "", f"is {size} bytes, more than the limit of {max_bytes}")])
    loader = None
    try:
        loader = _Loader(source)  # reads the first characters: may raise already
        node = loader.get_single_node()
        problems = [] if node is None else _node_problems(node, "$")
        if not problems and node is not None:
            return loader.construct_document(node), node  # a SafeLoader: no Python objects
    except _Refused as exc:
        raise error([Problem(exc.line, "", exc.message)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise error([Problem(line, "", f"not valid YAML: {_yaml_reason(exc)}")]) from None
    except ValueError as exc:  # an integer of more digits than Python reads from text
        raise error([Problem(None, "", f"not a usable value: {exc}")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if problems:
        raise error(problems)
    return None, None


def _node_problems(node: Any, path: str) -> list[Problem]:
    """Keys given twice in one mapping (both lines named) and NUL characters, everywhere
    in a composed document (a tree: aliases are refused)."""
    found: list[Problem] = []
    pending = [(node, path)]
    while pending:
        current, where = pending.pop()
        if isinstance(current, yaml.ScalarNode):
            wrong = _scalar_problem(current.value)
            if wrong is not None:
                found.append(Problem(current.start_mark.line + 1, show(where), wrong))
        elif isinstance(current, yaml.MappingNode):
            first_lines: dict[str, int] = {}
            for key_node, value_node in current.value:
                line = key_node.start_mark.line + 1
                if isinstance(key_node, yaml.ScalarNode):
                    key = printable(key_node.value)
                    wrong = _scalar_problem(key_node.value)
                    if wrong is not None:
                        found.append(Problem(line, show(f"{where}.{key}"), f"its key {wrong}"))
                    if key in first_lines:
                        lines = (
                            f"on line {line}"
                            if first_lines[key] == line
                            else f"(lines {first_lines[key]} and {line})"
                        )
                        message = f"is given twice {lines}; keep one"
                        found.append(Problem(line, show(f"{where}.{key}"), message))
                    else:
                        first_lines[key] = line
                    child = f"{where}.{key}"
                else:
                    pending.append((key_node, where))
                    child = where
                pending.append((value_node, child))
        elif isinstance(current, yaml.SequenceNode):
            pending.extend((item, f"{where}[{i}]") for i, item in enumerate(current.value))
    return sorted(found, key=lambda p: (p.line or 0, p.path))


_SURROGATE = re.compile("[\ud800-\udfff]")


def _scalar_problem(value: str) -> str | None:
    if "\x00" in value:
        return "contains a NUL character"
    if _SURROGATE.search(value):
        return "contains an escaped lone surrogate, which is not a character"
    return None


def printable(text: str) -> str:
    """Text that can be written out whatever it holds (a lone surrogate as \\udXXX)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def load_document(
    source: str, kind: type[T], what: str, error: type[DefinitionError]
) -> tuple[T, LineMap]:
    """Parse YAML (JSON is YAML too) into `kind`; raise `error` naming the line of the first
    mistake msgspec finds. `what` says what the document should be, for a non-mapping."""
    lines = LineMap()
    document, node = load_yaml(source, error)
    if not isinstance(document, dict):
        raise error([Problem(1, "", what)])
    lines.walk(node, "$")
    try:
        return msgspec.convert(document, kind), lines
    except msgspec.ValidationError as exc:
        found = structure_problems(document, kind) or [split_msgspec(str(exc))]
        problems = lines.problems(found)
        raise error(sorted(problems, key=lambda p: (p.line or 0, p.path))) from None


def structure_problems(value: Any, kind: Any, path: str = "$") -> list[tuple[str, str]]:
    """Every place where `value` does not fit the type `kind`, as (path, message) pairs:
    msgspec stops at the first mistake, and a person fixing a definition wants them all.
    Structs are gone through field by field (unknown fields, missing ones, each value),
    lists item by item, `X | None` as X; anything else is msgspec's own message."""
    try:
        msgspec.convert(value, kind)
        return []
    except msgspec.ValidationError as exc:
        first = [split_msgspec(str(exc), path)]
    if get_origin(kind) is Literal and isinstance(value, str):
        return [(path, f"{value!r} is not one of {', '.join(map(str, get_args(kind)))}")]
    if get_origin(kind) in (Union, UnionType):
        options = [option for option in get_args(kind) if option is not type(None)]
        if value is not None and len(options) == 1:
            return structure_problems(value, options[0], path) or first
        return first
    if get_origin(kind) is list and isinstance(value, list):
        [item_kind] = get_args(kind)
        found = [
            problem
            for index, item in enumerate(value)
            for problem in structure_problems(item, item_kind, f"{path}[{index}]")
        ]
        return found or first
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct) and isinstance(value, dict):
        fields = {field.encode_name: field for field in msgspec.structs.fields(kind)}
        found = []
        if kind.__struct_config__.forbid_unknown_fields:
            found += [
                (f"{path}.{key}", "is not a known field here") for key in value if key not in fields
            ]
        for name, field in fields.items():
            if name in value:
                found += structure_problems(value[name], field.type, f"{path}.{name}")
            elif field.required:
                found.append((f"{path}.{name}", "is required"))
        return found or first
    return first


_MSGSPEC_AT = re.compile(r"^(.*?)(?: - at `(\$[^`]*)`)?$", re.S)


def split_msgspec(text: str, base: str = "$") -> tuple[str, str]:
    """A msgspec validation message as (path, message); `base` prefixes its path when the
    struct was converted from a part of the document."""
    match = _MSGSPEC_AT.match(text)
    assert match is not None
    message, path = match.group(1), base + (match.group(2) or "$")[1:]
    missing = re.match(r"Object missing required field `([^`]+)`", message)
    if missing:
        return f"{path}.{missing.group(1)}", "is required"
    unknown = re.match(r"Object contains unknown field `([^`]+)`", message)
    if unknown:
        return f"{path}.{unknown.group(1)}", "is not a known field here"
    return path, message[:1].lower() + message[1:]


def show(path: str) -> str:
    return path.removeprefix("$").removeprefix(".")


def _yaml_reason(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    return str(problem) if problem else str(exc).splitlines()[0]


# ---- durations ---------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_ISO_DURATION = re.compile(
    r"^P(?:(?P<y>\d+)Y)?(?:(?P<mo>\d+)M)?(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<mi>\d+)M)?(?:(?P<s>\d+)S)?)?$"
)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Duration:
    """A plain duration (elapsed time), or calendar months/years for P1M, P1Y."""

    seconds: int
    months: int = 0


def parse_duration(text: str, *, signed: bool = False) -> Duration:
    """`90s`, `45m`, `2h`, `3d`, `2w`, or ISO 8601 (`PT2H`, `P1M`); raise ValueError."""
    value = text.strip()
    negative = signed and value.startswith("-")
    if negative:
        value = value[1:]
    match = _DURATION.match(value)
    if match:
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
        return Duration(-seconds if negative else seconds)
    iso = _ISO_DURATION.match(value)
    if iso and value not in ("P", "PT") and not value.endswith("T"):
        parts = {k: int(v) for k, v in iso.groupdict().items() if v}
        seconds = int(
            timedelta(
                weeks=parts.get("w", 0),
                days=parts.get("d", 0),
                hours=parts.get("h", 0),
                minutes=parts.get("mi", 0),
                seconds=parts.get("s", 0),
            ).total_seconds()
        )
        months = parts.get("y", 0) * 12 + parts.get("mo", 0)
        return Duration(-seconds, -months) if negative else Duration(seconds, months)
    raise ValueError(
        f"{text!r} is not a duration: write 90s, 45m, 2h, 3d, 2w or ISO 8601 such as PT2H or P1M"
    )


def check_duration(
    text: Any, path: str, problems: list[tuple[str, str]], *, signed: bool = False
) -> None:
    if not isinstance(text, str):
        problems.append((path, f"{text!r} is not a duration: write 90s, 45m, 2h, 3d or 2w"))
        return
    try:
        parse_duration(text, signed=signed)
    except ValueError as exc:
        problems.append((path, str(exc)))
