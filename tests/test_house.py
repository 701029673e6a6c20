"""The house's rules that import-linter's layers do not cover (docs/house.md): no import
circle anywhere, each domain reached only through its face (its package's `__all__`), and
no package reading or writing another package's tables. Each rule lists what still breaks
it, with the reason; the lists may only shrink."""

from __future__ import annotations

import ast
import importlib
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

# Who still touches tables of another package, and why; each entry goes with a slice.
KNOWN_CROSSINGS: dict[str, set[str]] = {
    # The chat endpoint reads the messages of a conversation.
    "web/chat_public.py": {"outbox"},
}


# The domains: each is reached from outside only through `parcours.<domain>` and the names
# of its `__all__` (which may list public modules, such as messaging's `templates`).
DOMAINS = ("log", "customers", "channels", "messaging", "segments", "loyalty", "journeys")
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


def test_no_package_touches_another_packages_tables_beyond_the_known_list() -> None:
    crossings = _crossings()
    unexpected = {
        module: tables - KNOWN_CROSSINGS.get(module, set())
        for module, tables in crossings.items()
        if tables - KNOWN_CROSSINGS.get(module, set())
    }
    assert unexpected == {}, "ask the owning package through its query or action functions"
    # The list only shrinks: an entry that no longer crosses is taken off it.
    gone = {
        module: tables - crossings.get(module, set())
        for module, tables in KNOWN_CROSSINGS.items()
        if tables - crossings.get(module, set())
    }
    assert gone == {}, "take these off KNOWN_CROSSINGS"


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
