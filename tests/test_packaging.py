"""What a plain `pip install parcours` brings: every module the code imports is declared,
psutil only for the tests and benchmarks, and `parcours bench` works without the source
checkout."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import parcours

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(parcours.__file__).resolve().parent


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement (`uvicorn[standard]>=0.30`)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group()).lower()


def _project() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        project: dict[str, object] = tomllib.load(file)["project"]
    return project


def _imports() -> dict[str, set[str]]:
    """Top-level module imported -> the package's modules importing it (outside the
    standard library and Parcours itself)."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "parcours" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(module)
    return found


def test_every_module_the_code_imports_is_a_declared_dependency() -> None:
    project = _project()
    runtime = {_name(r) for r in project["dependencies"]}  # type: ignore[attr-defined]
    extras = project["optional-dependencies"]
    bench = {_name(r) for r in extras["bench"]}  # type: ignore[index]
    test = {_name(r) for r in extras["test"]}  # type: ignore[index]
    distributions = packages_distributions()
    undeclared = {}
    for top, importers in sorted(_imports().items()):
        names = {_name(d) for d in distributions.get(top, [top])}
        only_bench = all(m.startswith("parcours.bench") for m in importers)
        if not names & (runtime | (bench if only_bench else set())):
            undeclared[top] = sorted(importers)
    assert undeclared == {}
    # psutil: the tests and benchmarks measure processes with it; the server never does.
    assert "psutil" not in runtime
    assert {"psutil"} <= bench & test
    assert sorted(_imports()["psutil"]) == ["parcours.bench.common"]
    # The inbound SMTP endpoint runs in the server: aiosmtpd is the server's.
    assert "aiosmtpd" in runtime


def test_bench_runs_from_an_installed_package(tmp_path: Path) -> None:
    """The package as pip installs it, away from the source checkout: `parcours bench`
    finds its code (it used to look for bench/ beside src/)."""
    site = tmp_path / "site"
    shutil.copytree(PACKAGE, site / "parcours", ignore=shutil.ignore_patterns("__pycache__"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        "import sys, parcours; from parcours.cli import main; "
        "print('from', parcours.__file__); "
        "sys.argv = ['parcours', 'bench', 'ingest', '--help']; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=elsewhere,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"from {site / 'parcours' / '__init__.py'}" in done.stdout
    assert "usage: parcours bench ingest" in done.stdout
    assert "--mode {throughput,latency,memory,segment,all}" in done.stdout


def test_bench_without_psutil_says_which_extra_to_install(monkeypatch: object) -> None:
    import pytest
    from typer.testing import CliRunner

    from parcours.cli import app

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil: ModuleNotFoundError
    result = CliRunner().invoke(app, ["bench", "ingest", "--events", "10"])
    assert result.exit_code == 2, result.output
    assert result.output == (
        "the benchmarks measure CPU and memory with psutil, which is not installed: "
        "pip install 'parcours[bench]' (or pip install psutil)\n"
    )
