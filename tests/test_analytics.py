"""The log counted by hour (parcours.analytics): what the console's overview reads. Counts
follow the log from behind, each event once, whoever catches up and however often."""

from __future__ import annotations

import threading
from decimal import Decimal

from parcours import analytics
from parcours.services import Services
from tests.conftest import START, make_event

HOUR = 3_600_000


def _totals(services: Services) -> dict[tuple[str, str, str, str], tuple[int, Decimal]]:
    with services.db.read() as conn:
        counts = analytics.hourly(conn, START - 48 * HOUR, START + 48 * HOUR)
    found: dict[tuple[str, str, str, str], tuple[int, Decimal]] = {}
    for c in counts:
        key = (c.name, c.channel, c.detail, c.currency)
        count, amount = found.get(key, (0, Decimal(0)))
        found[key] = (count + c.count, amount + c.amount)
    return found


def test_events_are_counted_by_name_channel_reason_and_currency(services: Services) -> None:
    events = [
        make_event(userId="a", event="Product Viewed", at=START),
        make_event(userId="a", event="Product Viewed", at=START + 10),
        make_event(userId="b", type="identify", traits={"email": "b@example.com"}, at=START),
        make_event(
            userId="a",
            event="Order Completed",
            at=START,
            properties={"order_id": "o1", "total": "19.99", "currency": "eur"},
        ),
        make_event(
            userId="b",
            event="Order Completed",
            at=START,
            properties={"order_id": "o2", "revenue": 5.01, "currency": "EUR"},
        ),
        make_event(
            userId="a",
            event="Message Held",
            at=START,
            properties={"channel": "sms", "reason": "quiet hours"},
        ),
        make_event(
            userId="a",
            event="Consent Updated",
            at=START,
            properties={"channel": "email", "purpose": "marketing", "status": "withdrawn"},
        ),
    ]
    services.writer.append_sync(events)
    assert analytics.catch_up(services.db) == 7
    assert analytics.catch_up(services.db) == 0  # each event once
    assert _totals(services) == {
        ("Product Viewed", "", "", ""): (2, Decimal(0)),
        ("identify", "", "", ""): (1, Decimal(0)),
        ("Order Completed", "", "", "EUR"): (2, Decimal("25.00")),
        ("Message Held", "sms", "quiet hours", ""): (1, Decimal(0)),
        ("Consent Updated", "email", "marketing:withdrawn", ""): (1, Decimal(0)),
    }


def test_catching_up_in_chunks_and_from_two_threads_counts_each_event_once(
    services: Services,
) -> None:
    services.writer.append_sync(
        [make_event(userId=f"u{i}", event="Page Viewed", at=START + i) for i in range(120)]
    )
    assert analytics.catch_up(services.db, limit=50) == 50
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(analytics.catch_up(services.db)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [0, 70]
    assert _totals(services)[("Page Viewed", "", "", "")] == (120, Decimal(0))


def test_hours_fall_on_the_brand_s_local_day() -> None:
    # 23:30 UTC on 31 March 2026 is already 1 April in Paris (UTC+2 in summer time).
    hour = 1_775_000_000_000 // HOUR
    assert analytics.local_day(hour, "UTC").isoformat() == "2026-03-31"
    assert analytics.local_day(hour, "Europe/Paris").isoformat() == "2026-04-01"


def test_the_worker_keeps_the_counts_up_and_a_page_counts_a_bounded_share(
    services: Services,
) -> None:
    """The worker counts the log when it rests (`KeepUp`, at most every two seconds), so
    a page finds the counts current; a page itself counts at most `PAGE_LIMIT` events,
    never a whole backlog."""
    services.writer.append_sync(
        [make_event(userId=f"u{n}", event="Product Viewed", at=START) for n in range(30)]
    )
    services.worker.run_due()  # resting, it counts
    assert _totals(services)[("Product Viewed", "", "", "")][0] == 30
    services.writer.append_sync(
        [make_event(userId=f"u{n}", event="Product Viewed", at=START) for n in range(5)]
    )
    services.worker.run_due()  # two seconds have not passed: not counted yet
    assert _totals(services)[("Product Viewed", "", "", "")][0] == 30
    assert analytics.catch_up(services.db, limit=3) == 3  # a page's bounded share
    services.clock.advance_ms(2_000)  # type: ignore[attr-defined]
    services.worker.run_due()
    assert _totals(services)[("Product Viewed", "", "", "")][0] == 35


def test_two_first_catch_ups_of_a_database_at_once_both_succeed(services: Services) -> None:
    """Two workers starting on a new database: the first catch-up makes the position's
    row; the other, which found none either, waits for it and counts from it (it failed on
    the row's key when both made it)."""
    from parcours.analytics import counts

    services.writer.append_sync([make_event(userId="a", event="Page Viewed", at=START)])
    errors: list[BaseException] = []
    results: list[int] = []

    def second() -> None:
        try:
            results.append(analytics.catch_up(services.db))
        except BaseException as exc:
            errors.append(exc)

    with services.db.write() as conn:
        assert counts._position(conn) == 0  # the row made, not committed yet
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(0.5)  # the second waits: on the row (PostgreSQL), the write lock (SQLite)
    thread.join(30)
    assert errors == []
    assert results == [1]


def test_a_catch_up_with_nothing_new_waits_for_no_append_in_flight(services: Services) -> None:
    """An idle worker catches up every few seconds: with nothing new committed it finds so
    by a read, and neither waits for an append in flight nor makes it wait (it took the log's
    lock, or SQLite's write lock, every time); the append is counted once committed."""
    from parcours.runtime.db import sql

    services.writer.append_sync([make_event(userId="a", event="Page Viewed", at=START)])
    assert analytics.catch_up(services.db) == 1
    results: list[int] = []
    with services.db.write() as conn:  # an append in flight
        sql(
            conn,
            "INSERT INTO events (message_id, type, name, user_id, occurred_at, received_at, "
            "source, payload) VALUES ('in-flight', 'track', 'Page Viewed', 'b', :at, :at, "
            "'api', '{}')",
            {"at": START},
        )
        thread = threading.Thread(target=lambda: results.append(analytics.catch_up(services.db)))
        thread.start()
        thread.join(10)
        assert not thread.is_alive() and results == [0]  # nothing to count, nothing waited
    assert analytics.catch_up(services.db) == 1
    assert _totals(services)[("Page Viewed", "", "", "")] == (2, Decimal(0))
