"""`parcours bench commerce` at a tiny size: every order's parcels end with the status
their scans call for, every order gets the messages its stages call for (the ready-made
post-purchase journey live), and the tracking page answers with its figures."""

from __future__ import annotations

from pathlib import Path

from parcours.bench.commerce import SCENARIOS, main, run


def test_the_commerce_benchmark_replays_orders_and_checks_them(
    database_url: str, tmp_path: Path
) -> None:
    orders = 2 * len(SCENARIOS)
    results = run(database_url, tmp_path, orders=orders, shipments=60, repeat=5, gap_s=600)
    checks = results["checks"]
    assert results["orders"] == orders and results["orders_per_s"] > 0
    assert checks["parcels"] == orders + 2  # one scenario has two parcels
    assert checks["parcels_wrong"] == 0, checks["parcels_wrong_examples"]
    assert results["journey_live"]
    assert checks["orders_with_wrong_messages"] == 0, checks["messages_wrong_examples"]
    # 3 + 4 + 4 + 2 + 2 + 0 + 3 + 1 messages for the eight scenarios, twice
    assert results["messages"] == 2 * 19
    assert results["shipments"] == 60
    assert 0 < results["tracking"]["p50_ms"] <= results["tracking"]["p95_ms"]


def test_the_command_prints_its_figures(capsys: object) -> None:
    assert main(["--orders", "8", "--shipments", "12", "--repeat", "2", "--gap-s", "600"]) == 0
    printed = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "orders/s" in printed and "tracking page with 12 parcels" in printed
