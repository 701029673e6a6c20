"""The benchmarks' instruments: the statements and round trips they count
(bench/counting.py), and the proxy that adds a network's latency to PostgreSQL
(bench/latency.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select, text

from parcours.bench.counting import Counts, StatementCounter, figures
from parcours.bench.latency import latency_added, server_address, through_proxy
from parcours.runtime import db as db_module
from parcours.runtime.db import Database, insert_rows, select_in, sql, update_rows


def _probe_table() -> Table:
    return Table(
        "bench_probe",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("label", String),
        prefixes=["TEMPORARY"],
    )


def _known_sequence(db: Database) -> None:
    """One write transaction: 4 statements through SQLAlchemy and 7 straight to the driver
    (an executemany of 2; 3 rows updated at once: an executemany on SQLite, one statement
    of arrays on PostgreSQL; 25 rows inserted at once: an executemany on SQLite, a COPY on
    PostgreSQL)."""
    probe = _probe_table()
    with db.write() as conn:
        probe.create(conn)  # SQLAlchemy 1
        conn.execute(select(probe.c.id))  # 2
        conn.execute(text("SELECT count(*) FROM bench_probe"))  # 3
        conn.exec_driver_sql("SELECT 2")  # 4
        for number in range(3):
            sql(conn, "SELECT :x AS y", {"x": number})  # driver 1-3
        select_in(conn, "SELECT id FROM bench_probe WHERE id IN ({marks})", [1, 2, 3])  # 4
        insert_rows(conn, probe, ["id", "label"], [(1, "a"), (2, "b")])  # 5: executemany
        update_rows(conn, probe, ["label"], "id", [("x", 1), ("y", 2), ("z", 3)])  # 6
        insert_rows(conn, probe, ["id", "label"], [(n, "c") for n in range(10, 35)])  # 7


@contextmanager
def _counted(url: str) -> Iterator[tuple[Database, StatementCounter]]:
    db = Database(url)
    counter = StatementCounter()
    counter.attach(db.engine)
    try:
        yield db, counter
    finally:
        counter.detach()
        db.dispose()


def test_a_known_sequence_of_statements_gives_its_counts(database_url: str) -> None:
    with _counted(database_url) as (db, counter):
        before = counter.totals()
        _known_sequence(db)
        counts = counter.totals() - before
    postgres = not database_url.startswith("sqlite")
    assert (counts.through_sqlalchemy, counts.straight_to_driver, counts.statements) == (4, 7, 11)
    assert (counts.begins, counts.commits, counts.rollbacks, counts.pings) == (1, 1, 0, 0)
    assert counts.connections == 1  # opened in the block: its setup is counted apart
    if postgres:
        assert (counts.executemany, counts.parameter_sets, counts.copies) == (1, 2, 1)
        assert counts.texts["SELECT %(x)s AS y"] == 3
        # BEGIN, 10 statements one each (an executemany is one), the COPY's 2, COMMIT.
        assert counts.round_trips_counted and counts.round_trips == 14
    else:
        assert (counts.executemany, counts.parameter_sets, counts.copies) == (3, 30, 0)
        assert counts.texts["SELECT :x AS y"] == 3
        assert not counts.round_trips_counted and counts.round_trips == 0
    assert counts.texts["SELECT 2"] == 1


def test_a_phase_is_the_difference_of_two_totals_and_leaves_out_what_is_excluded(
    database_url: str,
) -> None:
    with _counted(database_url) as (db, counter):
        with db.read() as conn:
            conn.execute(text("SELECT 1"))  # the connection opened before the phase
        before = counter.totals()
        own: list[Counts] = []
        with db.read() as conn:
            sql(conn, "SELECT 1 AS a")
            with counter.excluded(own):
                sql(conn, "SELECT 2 AS b")
                sql(conn, "SELECT 2 AS b")
        phase = counter.totals() - before
        for read in own:
            phase = phase - read
    assert (phase.statements, phase.commits, phase.connections) == (1, 1, 0)
    assert dict(phase.texts) == {"SELECT 1 AS a": 1}
    shown = figures(phase, "step", 4)
    assert shown["per_unit"]["statements"] == 0.25
    assert shown["per_commit"]["statements"] == 1.0
    assert shown["by_kind"] == {"SELECT": 1}
    if database_url.startswith("sqlite"):
        assert shown["round_trips"] is None
    else:
        assert shown["round_trips"] == phase.round_trips > 0


@pytest.mark.processes  # the proxy
def test_the_round_trips_counted_are_those_that_cross_the_wire(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the proxy, with no latency: the client's count and the wire's agree, a
    prepared statement (psycopg prepares the sixth run of a statement), a pool ping (each
    use of a pooled connection checks it here), an executemany, a COPY and a rollback
    included."""
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 0.0)
    with latency_added(postgres_url, 0) as (url, proxy), _counted(url) as (db, counter):
        counter.wire = proxy
        with db.read() as conn:
            conn.execute(text("SELECT 1"))  # the connection's setup, before the phase
        before = counter.totals()
        _known_sequence(db)
        with db.read() as conn:
            for number in range(7):
                sql(conn, "SELECT :x AS y", {"x": number})
        with pytest.raises(ZeroDivisionError), db.write() as conn:
            sql(conn, "SELECT 1 AS a")
            raise ZeroDivisionError
        phase = counter.totals() - before
    assert phase.wire is not None
    assert (phase.pings, phase.rollbacks, phase.connections) == (3, 1, 0)
    assert phase.round_trips == phase.wire.round_trips
    assert phase.round_trips > phase.statements  # BEGIN, COMMIT, pings, the prepare


def _timed(conn: psycopg.Connection, query: str) -> float:
    started = time.perf_counter()
    conn.execute(query).fetchall()
    return time.perf_counter() - started


@pytest.mark.processes  # the proxy
def test_the_proxy_adds_its_latency_to_each_round_trip_and_changes_no_answer(
    postgres_url: str,
) -> None:
    latency_ms = 40
    many = "SELECT n, md5(n::text) FROM generate_series(1, 3000) AS n"  # many chunks back
    with (
        latency_added(postgres_url, latency_ms) as (url, proxy),
        psycopg.connect(postgres_url, autocommit=True) as direct,
        psycopg.connect(url, autocommit=True) as proxied,
    ):
        assert proxied.execute(many).fetchall() == direct.execute(many).fetchall()
        before = proxy.counts()
        through, straight = [], []
        for _ in range(4):  # alternated, so that both see the machine alike
            through.append(_timed(proxied, "SELECT 1"))
            straight += [_timed(direct, "SELECT 1") for _ in range(3)]
        counted = proxy.counts() - before
    added = min(through) - min(straight)
    assert added >= latency_ms / 1000, (through, straight)
    assert counted.round_trips == 4 and counted.connections == 0
    assert counted.mean_hold_ms is not None and counted.mean_hold_ms >= latency_ms / 2


def test_the_proxy_stands_in_front_of_a_postgresql_server_over_tcp() -> None:
    url = "postgresql://parcours:secret@db.example:6543/parcours?sslmode=disable"
    assert server_address(url) == ("db.example", 6543)
    assert server_address("postgresql://localhost/parcours") == ("localhost", 5432)
    assert (
        through_proxy(url, 40001)
        == "postgresql://parcours:secret@127.0.0.1:40001/parcours?sslmode=disable"
    )
    with pytest.raises(ValueError, match="PostgreSQL only"):
        server_address("sqlite:///parcours.db")
    with pytest.raises(ValueError, match="TCP host"):
        server_address("postgresql:///parcours?host=/var/run/postgresql")


def test_bench_journeys_prints_the_statements_per_step_beside_the_target(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from parcours.bench import journeys

    assert journeys.main(["--mode", "steps", "--customers", "20", "--without-delivery"]) == 0
    printed = capsys.readouterr().out
    assert "statements per journey step: " in printed
    assert "(target <= 4; the engine alone: " in printed
    assert "no round trips (SQLite runs in this process)" in printed


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_journey_step_costs_a_fraction_of_a_statement_in_sets(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Steps run in sets (issue 19): their writes held and sent together, what their sends
    check read for all their customers at once. Counted exactly, the abandoned cart's
    steps cost well under the target of 4 statements each (4.4 to 4.8 when each step
    wrote and read on its own); SQLite's figure moves with the number of batches, which
    follows the machine's speed, hence the margin."""
    import json

    from parcours.bench import journeys
    from tests.conftest import _postgres_admin_url

    where: list[str] = []
    if database == "postgresql":
        admin = _postgres_admin_url()
        if admin is None:
            pytest.skip("PostgreSQL tests need PARCOURS_TEST_POSTGRES_URL (CI sets it)")
        where = ["--postgres", admin]
    arguments = ["--mode", "steps", "--customers", "60", "--without-delivery", "--json"]
    assert journeys.main([*arguments, *where]) == 0
    report = json.loads(capsys.readouterr().out)
    steps = report["steps"]
    assert steps["steps"] >= 5 * 60 and steps["still_active"] == 0  # every cart to its end
    assert steps["cost"]["steps"]["per_unit"]["statements"] < 3
    if database == "postgresql":
        # Exact there (no batches of varying size): entries go a set at a time too, their
        # runs held with ids taken from the sequence a block at a time, and what their
        # first sends check read at once (0.31; 1.58 when each entry inserted its run and
        # its first send read its customer alone; 0.34 while a send's policies read its
        # customer's consents a second time, one statement each).
        assert steps["cost"]["steps"]["per_unit"]["statements"] < 0.32


def test_bench_ingest_spreads_its_load_over_several_serve_processes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--servers 2`: two `parcours serve` sharing one database, the client's connections
    spread over them, each storing its part (every answer checked: all its events
    stored), as behind a load balancer (docs/operations.md, "Capacity")."""
    import json

    from parcours.bench import ingest
    from tests.conftest import _postgres_admin_url

    arguments = ["--events", "1600", "--rounds", "1", "--no-count", "--servers", "2", "--json"]
    admin = _postgres_admin_url()
    if admin is None:
        pytest.skip("PostgreSQL tests need PARCOURS_TEST_POSTGRES_URL (CI sets it)")
    assert ingest.main([*arguments, "--postgres", admin]) == 0
    throughput = json.loads(capsys.readouterr().out)["throughput"]
    assert throughput["servers"] == 2
    # 16 batches of 100 over 8 connections, four to each: whichever is free sends the next
    assert sum(throughput["stored_by_server"]) == 1600
    assert min(throughput["stored_by_server"]) >= 100
