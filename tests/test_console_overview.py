"""The console's overview under a backlog: a queue's due jobs are counted up to a cap and
shown as "at least" (console/overview.py QUEUE_COUNT_UP_TO), so that the page costs the
same with a million jobs waiting; /metrics counts them all (tests/test_operations.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from litestar.testing import TestClient

from parcours.console import overview
from parcours.runtime.queue import enqueue
from parcours.services import Services
from tests.test_brand_settings import team  # noqa: F401 (a fixture)


def test_the_overview_counts_a_backlog_up_to_a_cap_and_says_at_least(
    services: Services,
    team: dict[str, TestClient[Any]],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    page = team["owner"].get("/console/").text
    assert not re.search(r">\s*\d+\+\s*<", page)
    monkeypatch.setattr(overview, "QUEUE_COUNT_UP_TO", 2)
    now = services.clock.now_ms()
    with services.db.write() as conn:
        for n in range(3):
            enqueue(conn, "test.nothing", {"n": n}, run_at=now - 1_000, now=now, queue="default")
    page = team["owner"].get("/console/").text
    assert re.search(r">\s*2\+\s*<", page), "three due jobs counted up to two: 2+"
