"""`parcours bench console` at a small scale: every page it measures answers 200 with the
data loaded (the benchmark stops on any other answer), and each has its figures."""

from __future__ import annotations

from pathlib import Path

from parcours.bench.console import run


def test_the_console_benchmark_measures_every_page(database_url: str, tmp_path: Path) -> None:
    results = run(database_url, tmp_path, customers=40, events=400, repeat=2, long_timeline=120)
    assert results["customers"] == 40 and results["events"] == 400
    assert len(results["pages"]) == 10
    assert "a customer with 120 events" in results["pages"]
    for figures in results["pages"].values():
        assert 0 < figures["p50_ms"] <= figures["p95_ms"]
