"""PostgreSQL's pooled connections: checked before use only after they were idle a while
(`runtime/db.py`, `_ping_after_idle`), so that a restart of the database costs nothing
and back-to-back transactions pay no extra round trip."""

from __future__ import annotations

import time

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


def test_a_connection_dropped_while_idle_is_replaced_before_use(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 0.0)
    db = Database(postgres_url, pool_size=1)
    try:
        first = _backend(db)
        _terminate(postgres_url, first)
        second = _backend(db)  # no error: the pool found it gone and connected again
        assert second != first
    finally:
        db.dispose()


def test_a_connection_used_back_to_back_is_not_checked(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 3600.0)
    db = Database(postgres_url, pool_size=1)
    try:
        first = _backend(db)
        _terminate(postgres_url, first)
        # Returned a moment ago: used as it is, and found broken by the statement itself.
        with pytest.raises(OperationalError):
            _backend(db)
        assert _backend(db) != first  # the pool let the broken one go
    finally:
        db.dispose()
