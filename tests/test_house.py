"""The house's rules that import-linter's layers do not cover (docs/house.md): no import
circle anywhere, each domain reached only through its face (its package's `__all__`), and
no package reading or writing another package's tables, raw SQL only in each package's
named module, and domain faces answering with types of their own. No rule has an
exception left; a new one would be listed here, with its reason."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from collections import defaultdict
from pathlib import Path

import grimp

import parcours

SOURCE = Path(parcours.__file__).parent
# A statement naming a table: what follows FROM, JOIN, INTO, UPDATE or TRUNCATE (SQL is
# written in capitals here, prose is not).
_SQL_TABLE = re.compile(r"\b(?:FROM|JOIN|INTO|UPDATE|TRUNCATE)\s+([a-z_][a-z_0-9]*)")
_TABLE = re.compile(r'Table\(\s*"([a-z_0-9]+)"')

# The domains: each is reached from outside only through `parcours.<domain>` and the names
# of its `__all__` (which may list public modules, such as messaging's `templates`).
DOMAINS = (
    "log",
    "customers",
    "channels",
    "messaging",
    "segments",
    "loyalty",
    "journeys",
    "accounts",
    "analytics",
    "brand",
    "commerce",
)
# The schema module assembles every package's tables; the benchmarks measure internals.
FACE_EXEMPT = ("schema", "bench")


def _package(path: Path) -> str:
    return path.relative_to(SOURCE).parts[0].removesuffix(".py")


def _owners() -> dict[str, str]:
    owners: dict[str, str] = {}
    for path in SOURCE.rglob("*.py"):
        for name in _TABLE.findall(path.read_text(encoding="utf-8")):
            owners[name] = _package(path)
    return owners


def _crossings() -> dict[str, set[str]]:
    """For each module, the tables of other packages its SQL names or its imports take."""
    owners = _owners()
    found: dict[str, set[str]] = defaultdict(set)
    for path in SOURCE.rglob("*.py"):
        relative = path.relative_to(SOURCE)
        package = _package(path)
        # The migrations change every table; the schema module assembles them all.
        if relative.parts[:2] == ("runtime", "migrations") or package in ("schema", "bench"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = _SQL_TABLE.findall(node.value)
            elif isinstance(node, ast.ImportFrom) and (
                (node.module or "").endswith(".tables") or node.module == "parcours.log"
            ):
                names = [alias.name for alias in node.names]
            for name in names:
                owner = owners.get(name)
                if owner is not None and owner != package:
                    found[relative.as_posix()].add(name)
    return dict(found)


def test_the_table_owners_are_found() -> None:
    owners = _owners()
    assert owners["events"] == "log"
    assert owners["customers"] == "customers"
    assert owners["outbox"] == "messaging"
    assert owners["jobs"] == "runtime"


def test_no_package_touches_another_packages_tables() -> None:
    assert _crossings() == {}, "ask the owning package through its query or action functions"


def test_each_domain_is_reached_only_through_its_face() -> None:
    faces = {name: set(importlib.import_module(f"parcours.{name}").__all__) for name in DOMAINS}
    reaching: list[str] = []
    for path in SOURCE.rglob("*.py"):
        relative = path.relative_to(SOURCE)
        importer = _package(path)
        if importer in FACE_EXEMPT or relative.parts[:2] == ("runtime", "migrations"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith(
                "parcours."
            ):
                continue
            parts = (node.module or "").split(".")
            if parts[1] not in DOMAINS or parts[1] == importer:
                continue
            where = f"{relative.as_posix()}:{node.lineno}"
            if len(parts) > 2:
                reaching.append(f"{where} imports {node.module}")
            for alias in node.names:
                if len(parts) == 2 and alias.name not in faces[parts[1]]:
                    reaching.append(f"{where} takes {alias.name}, not in parcours.{parts[1]}")
    assert reaching == [], "import from the package; add what is public to its __all__"


def test_no_import_circle() -> None:
    graph = grimp.build_graph("parcours")
    circles = [
        (module, imported)
        for module in sorted(graph.modules)
        for imported in graph.find_modules_directly_imported_by(module)
        if graph.chain_exists(importer=imported, imported=module)
    ]
    assert circles == []


# Raw SQL (statements as text, `db.sql`, `text()`, the bulk helpers of runtime/db.py) is
# written in one named module per package: its measured hot path. Everything else is
# SQLAlchemy Core (docs/architecture.md, "One way to write SQL"). The runtime has two: the
# dialect's own statements (locks, pragmas) and the job queue's hot path.
RAW_SQL_HOMES: dict[str, set[str]] = {
    "analytics": {"analytics/counts.py"},
    "bench": {"bench/common.py"},
    "commerce": {"commerce/rows.py"},
    "customers": {"customers/projection.py"},
    "journeys": {"journeys/store.py"},
    "log": {"log/queries.py"},
    "loyalty": {"loyalty/referrals.py"},
    "messaging": {"messaging/outbox_rows.py"},
    "runtime": {"runtime/db.py", "runtime/queue.py"},
    "segments": {"segments/engine.py"},
}
_STATEMENT = re.compile(
    r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|DROP|ALTER|PRAGMA|TRUNCATE|LOCK|COPY)\b"
)
# (`text()` is caught by the statement it holds; a partial index's predicate is not one.)
# `insert_rows` and `update_rows` take a table and its columns' names, no SQL of the
# caller's: a domain writes its sets through them where it likes. `upsert_rows` takes the
# SQL of what a conflict sets, so it stays in the homes.
_RAW_CALLS = {"sql", "exec_driver_sql", "select_in", "upsert_rows"}


def _writes_raw_sql(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _STATEMENT.match(node.value):
                return True
        elif isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            if isinstance(first, ast.Constant) and _STATEMENT.match(str(first.value)):
                return True
        elif isinstance(node, ast.Call):
            called = node.func
            name = called.attr if isinstance(called, ast.Attribute) else getattr(called, "id", "")
            if name in _RAW_CALLS:
                return True
    return False


def _raw_sql_modules() -> set[str]:
    found: set[str] = set()
    for path in SOURCE.rglob("*.py"):
        relative = path.relative_to(SOURCE)
        if relative.parts[:2] == ("runtime", "migrations"):
            continue
        if _writes_raw_sql(ast.parse(path.read_text(encoding="utf-8"))):
            found.add(relative.as_posix())
    return found


def test_raw_sql_is_written_only_in_each_packages_named_module() -> None:
    homes = set().union(*RAW_SQL_HOMES.values())
    raw = _raw_sql_modules()
    assert raw - homes == set(), "write it with SQLAlchemy Core, or move it to the package's home"


def test_the_raw_sql_detector_sees_each_way_of_writing_it() -> None:
    for source in (
        'x = "SELECT 1"',
        'x = f"UPDATE {table} SET a = 1"',
        "sql(conn, query)",
        "conn.exec_driver_sql(query)",
        "select_in(conn, query, ids)",
    ):
        assert _writes_raw_sql(ast.parse(source)), source
    assert not _writes_raw_sql(ast.parse('x = "Select a journey"; select(table)'))


# A domain's public functions answer with types of their own, not dicts: a document whose
# shape belongs to someone else (a provider's body, a Wallet pass, a JSON Schema) is
# named `JsonObject` (runtime/documents.py).
_UNTYPED = re.compile(r"dict\[str, (Any|object)\]|\bAny\b|\bRow\b|\bRows\b")


def _public_functions(name: str, obj: object) -> list[tuple[str, object]]:
    if inspect.isfunction(obj):
        return [(name, obj)]
    if inspect.isclass(obj):
        return [
            (f"{name}.{member}", value)
            for member, value in vars(obj).items()
            if inspect.isfunction(value) and not member.startswith("_")
        ]
    return []


def _untyped_answers() -> set[str]:
    found: set[str] = set()
    seen: set[int] = set()
    for domain in DOMAINS:
        face = importlib.import_module(f"parcours.{domain}")
        functions: list[tuple[str, object]] = []
        modules = [name for name in face.__all__ if inspect.ismodule(getattr(face, name))]
        for name in face.__all__:
            if name not in modules:
                functions += _public_functions(name, getattr(face, name))
        for name in modules:
            module = getattr(face, name)
            for member, value in vars(module).items():
                if not member.startswith("_") and getattr(value, "__module__", "") == (
                    module.__name__
                ):
                    functions += _public_functions(f"{name}.{member}", value)
        for qualified, function in functions:
            if id(function) in seen:
                continue
            seen.add(id(function))
            answer = str(getattr(function, "__annotations__", {}).get("return"))
            if _UNTYPED.search(answer):
                found.add(f"{domain}.{qualified}")
    return found


def test_domain_faces_answer_with_types_not_dicts() -> None:
    assert _untyped_answers() == set(), "answer with a Struct or a dataclass"


def test_the_untyped_answer_detector_sees_a_dict() -> None:
    assert _UNTYPED.search("dict[str, Any]") and _UNTYPED.search("list[Row[Any]]")
    assert not _UNTYPED.search("JsonObject") and not _UNTYPED.search("list[SegmentView]")
