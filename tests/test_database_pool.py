"""PostgreSQL's pooled connections: checked before use only after they were idle a while
(`runtime/db.py`, `_ping_after_idle`), so that a restart of the database costs nothing
and back-to-back transactions pay no extra round trip."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from parcours.runtime import db as db_module
from parcours.runtime.db import Database


def _backend(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(url: str, pid: int) -> None:
    """End that backend and wait until it is gone (the signal takes effect a moment later)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 10
        while conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline, "the backend did not end"
            time.sleep(0.01)


@contextmanager
def _its_backend_ended(
    url: str, monkeypatch: pytest.MonkeyPatch, ping_after_idle: float
) -> Iterator[tuple[Database, int]]:
    """A pool of one connection, checked after `ping_after_idle` seconds idle, whose
    connection was used once and then its backend ended (given with its pid)."""
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", ping_after_idle)
    db = Database(url, pool_size=1)
    try:
        first = _backend(db)
        _terminate(url, first)
        yield db, first
    finally:
        db.dispose()


def test_a_connection_dropped_while_idle_is_replaced_before_use(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _its_backend_ended(postgres_url, monkeypatch, 0.0) as (db, first):
        second = _backend(db)  # no error: the pool found it gone and connected again
        assert second != first


def test_a_connection_used_back_to_back_is_not_checked(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _its_backend_ended(postgres_url, monkeypatch, 3600.0) as (db, first):
        # Returned a moment ago: used as it is, and found broken by the statement itself.
        with pytest.raises(OperationalError):
            _backend(db)
        assert _backend(db) != first  # the pool let the broken one go
