"""The console's overview at scale: a queue's due jobs are counted up to a cap and shown as
"at least" (console/overview.py QUEUE_COUNT_UP_TO), so that the page costs the same with
a million jobs waiting (/metrics counts them all, tests/test_operations.py); the new
customers and the customers page's total are made at most once a minute
(console/counts.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from litestar.testing import TestClient

from parcours.console import counts, overview
from parcours.console.overview import DAY_MS
from parcours.customers import profiles
from parcours.runtime.queue import enqueue
from parcours.services import Services
from tests.conftest import make_event
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


def _new_customers(page: str) -> list[int]:
    """The overview's "New customers" figures: today's, then the 30 days'."""
    found = re.findall(
        r'<span class="value">([\d,\s\u202f\u00a0]+)</span><span class="label">New customers',
        page,
    )
    return [int(re.sub(r"\D", "", value)) for value in found]


def test_new_customers_and_the_customers_total_are_counted_a_minute_old_at_most(
    services: Services,
    team: dict[str, TestClient[Any]],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    owner = team["owner"]
    now = services.clock.now_ms()
    services.writer.append_sync(
        [
            make_event("identify", userId="u-old", at=now - 10 * DAY_MS),
            make_event("identify", userId="u-new", at=now),
        ]
    )
    assert _new_customers(owner.get("/console/").text) == [2, 2]  # first seen now, both
    assert "2 customers in all." in owner.get("/console/customers").text
    services.writer.append_sync([make_event("identify", userId="u-third", at=now)])
    # Within the minute: the figures made a moment ago.
    assert _new_customers(owner.get("/console/").text) == [2, 2]
    assert "2 customers in all." in owner.get("/console/customers").text
    monkeypatch.setattr(counts, "COUNTS_TTL_S", 0.0)  # the minute passed
    assert _new_customers(owner.get("/console/").text) == [3, 3]
    assert "3 customers in all." in owner.get("/console/customers").text
    with services.db.read() as conn:  # the customers' own count says the same
        assert profiles.count_customers(conn) == 3
