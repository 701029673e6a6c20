"""Per-customer reads use an index on the customer, whatever the number of customers.

SQLite plans without statistics: it once chose the identities primary key (kind, value)
for `kind = 'user_id' AND customer_id IN (...)`, reading every identity of that kind on
each batch, so ingest and the journey engine slowed down as customers were added. This
test traces every statement of the hot path (ingest, identity merge, a journey with its
waits, sends and delivery) and asks SQLite how it runs each one.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, event

from parcours.journeys import versions as journeys
from parcours.runtime.clock import SimulatedClock, from_ms
from parcours.runtime.queue import next_run_at
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.conftest import START, make_event

CART = (
    Path(__file__).resolve().parents[1] / "src/parcours/journeys/templates/abandoned-cart.yaml"
).read_text(encoding="utf-8")

# Tables of configuration, a handful of rows each, which may be read whole.
SMALL_TABLES = {
    "journey_versions",
    "journeys",
    "segments",
    "templates",
    "instance_secrets",
    "alembic_version",
    "sqlite_master",
    "sqlite_temp_master",
}


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[list[str]]:
    statements: list[str] = []

    def trace(dbapi_conn: object, _record: object) -> None:
        if isinstance(dbapi_conn, sqlite3.Connection):
            dbapi_conn.set_trace_callback(statements.append)

    event.listen(Engine, "connect", trace)
    try:
        yield statements
    finally:
        event.remove(Engine, "connect", trace)


def test_the_hot_path_reads_no_per_customer_table_whole(traced: list[str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'parcours.db'}"
    clock = SimulatedClock(START)
    services = Services.open(
        Settings(data_dir=tmp_path, database_url=url, default_region="FR"), clock=clock
    )
    traced.clear()  # the migrations' statements: not the hot path
    try:
        journeys.publish(services.db, CART, "editor", "reviewer", START)
        consent = {ch: {"marketing": True} for ch in ("push", "email", "sms")}
        for n in range(30):
            services.writer.append_sync(
                [
                    make_event(
                        "identify",
                        at=START - 1000,
                        anonymousId=f"anon-{n}",
                        traits={"consent": consent, "push_token": f"token-{n}"},
                    ),
                    make_event(
                        "identify",
                        at=START - 500,
                        userId=f"c-{n}",
                        anonymousId=f"anon-{n}",
                        traits={"email": f"c-{n}@example.com", "phone": f"+3361234{n:04d}"},
                        context={"timezone": "Europe/Paris"},
                    ),
                    make_event(
                        "track",
                        at=START,
                        userId=f"c-{n}",
                        event="Cart Abandoned",  # as commerce announces a cart
                        properties={"cart_id": f"k-{n}", "total": 150 + n},
                    ),
                ]
            )
        services.writer.append_sync(
            [
                make_event(
                    "track",
                    at=START + 1000,
                    userId=f"c-{n}",
                    event="Order Completed",
                    properties={"order_id": f"o-{n}", "checkout_id": f"k-{n}", "total": 150},
                )
                for n in range(0, 30, 3)
            ]
        )
        services.worker.run_due()
        while True:
            with services.db.read() as conn:
                upcoming = next_run_at(conn, services.worker.queues)
            if upcoming is None:
                break
            clock.set(from_ms(max(int(upcoming), clock.now_ms())))
            services.worker.run_due()
        with services.db.read() as conn:
            sent = conn.exec_driver_sql("SELECT count(*) FROM outbox").scalar_one()
    finally:
        services.close()
    assert sent > 30  # the journey really ran: push, email and SMS went out

    plans = sqlite3.connect(tmp_path / "parcours.db")
    whole: dict[str, str] = {}
    kind_only: dict[str, str] = {}
    for statement in set(traced):
        if not re.match(r"\s*(SELECT|UPDATE|DELETE|WITH)\b", statement, re.IGNORECASE):
            continue
        try:
            plan = [row[3] for row in plans.execute("EXPLAIN QUERY PLAN " + statement)]
        except sqlite3.OperationalError:  # a migration's temporary table, gone since
            continue
        for line in plan:
            scanned = re.match(r"SCAN (?!CONSTANT ROW)(\w+)", line)  # a row of no table
            if scanned and scanned.group(1) not in SMALL_TABLES and "count(" not in statement:
                whole[statement[:200]] = line
            if re.search(r"USING (COVERING )?INDEX \w+ \(kind=\?\)$", line):
                kind_only[statement[:200]] = line
    assert whole == {}
    assert kind_only == {}


def _plans(
    traced: list[str], tmp_path: Path, table: str, reads: Callable[[Connection, int], None]
) -> list[tuple[str, str]]:
    """SQLite's plan of each SELECT naming `table` that `reads` runs (given a connection
    and the time), on a fresh database: (statement, a step of its plan)."""
    url = f"sqlite:///{tmp_path / 'parcours.db'}"
    services = Services.open(
        Settings(data_dir=tmp_path, database_url=url), clock=SimulatedClock(START)
    )
    try:
        traced.clear()
        with services.db.read() as conn:
            reads(conn, services.clock.now_ms())
    finally:
        services.close()
    plans = sqlite3.connect(tmp_path / "parcours.db")
    listed = [s for s in set(traced) if table in s and s.lstrip().startswith("SELECT")]
    return [
        (statement, row[3])
        for statement in listed
        for row in plans.execute("EXPLAIN QUERY PLAN " + statement, [None] * statement.count("?"))
    ]


def test_the_console_lists_of_parcels_read_no_table_whole(
    traced: list[str], tmp_path: Path
) -> None:
    """The Shipments page with a million parcels: its counts per status, its stalled,
    delayed and latest lists (of all, and of a status) each walk an index (0.7-35 ms at
    300,000 parcels on PostgreSQL and SQLite; 30-94 ms each, 1.2 s for the delayed, when
    they read every parcel)."""
    from parcours import commerce
    from parcours.commerce import queries

    def reads(conn: Connection, now: int) -> None:
        commerce.shipment_counts(conn)
        commerce.shipments_stalled(conn, now - 86_400_000)
        commerce.shipments_stalled(conn, now - 86_400_000, status="in_transit")
        commerce.shipments_delayed(conn, now)
        commerce.shipments_latest(conn)
        commerce.shipments_latest(conn, status="in_transit")
        assert queries.shipments_delayed(conn, now, status="exception") == []

    planned = _plans(traced, tmp_path, "commerce_shipments", reads)
    assert len({statement for statement, _ in planned}) >= 6
    whole = {
        statement[:200]: step
        for statement, step in planned
        if re.match(r"SCAN commerce_shipments\b(?! USING)", step)
        or re.match(r"SCAN commerce_shipment_scans\b(?! USING)", step)
    }
    assert whole == {}


def test_the_console_page_of_carts_reads_no_table_whole(traced: list[str], tmp_path: Path) -> None:
    """The Carts page with a million carts: a page of all or of a status, within a period
    or not, from a cursor or not, walks an index in its order (no sort of every cart),
    and the 30 days' figures walk the index of status and abandonment time (migration
    0039): about 1 ms a page, 17-20 ms the figures, at a million carts."""
    from parcours import commerce

    def reads(conn: Connection, now: int) -> None:
        for status in (None, "abandoned"):
            for since in (None, now - 86_400_000):
                for before in (None, (now, "cart:c-1")):
                    commerce.carts_list(conn, status=status, active_since=since, before=before)
        commerce.cart_summary(conn, now - 30 * 86_400_000)

    planned = _plans(traced, tmp_path, "commerce_carts", reads)
    assert len({statement for statement, _ in planned}) >= 10
    whole = {
        statement[:300]: step
        for statement, step in planned
        # a scan only in the index's order, stopped by the page's limit
        if (step.startswith("SCAN commerce_carts") and " LIMIT " not in statement)
        or "TEMP B-TREE" in step
    }
    assert whole == {}


def test_the_recovery_messages_of_a_page_of_carts_are_read_in_a_few_statements(
    traced: list[str], tmp_path: Path
) -> None:
    """What the Carts page's 50 abandoned carts led to (journeys.follow_ups: the runs
    their `Cart Abandoned` entered, the runs' messages, the held ones and refused entries)
    is read in a few statements for the whole page, each through an index: the runs by
    journey and entry message, the messages and the log by the page's customers."""
    from parcours import journeys as face
    from parcours import messaging

    url = f"sqlite:///{tmp_path / 'parcours.db'}"
    services = Services.open(
        Settings(data_dir=tmp_path, database_url=url), clock=SimulatedClock(START)
    )
    triggers = [(n, f"commerce:cart-abandoned:cart:c-{n}", START) for n in range(1, 51)]
    try:
        journeys.publish(services.db, CART, "editor", "reviewer", START)
        traced.clear()
        with services.db.read() as conn:
            found = face.follow_ups(conn, "Cart Abandoned", triggers)
        statements = [s for s in traced if s.lstrip().startswith("SELECT")]
        with services.db.read() as conn:  # what the page reads once runs have messages
            messaging.messages_of_runs(conn, list(range(1, 51)), list(range(1, 51)), START)
    finally:
        services.close()
    assert found.live == ("abandoned-cart",) and found.by_trigger == {}
    assert len(statements) <= 4
    for table in ("journey_versions", "journey_runs", "events"):
        assert any(f"FROM {table}" in s for s in statements), table
    plans = sqlite3.connect(tmp_path / "parcours.db")
    whole = {
        statement[:300]: row[3]
        for statement in {s for s in traced if s.lstrip().startswith("SELECT")}
        for row in plans.execute("EXPLAIN QUERY PLAN " + statement, [None] * statement.count("?"))
        if re.match(r"SCAN (journey_runs|outbox|events)\b", row[3])
    }
    assert whole == {}
