"""The migrations build exactly the schema the code declares."""

from __future__ import annotations

import time
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from parcours.runtime.db import Database, alembic_config, migrate
from parcours.schema import load_all_tables


def test_migrations_match_the_declared_tables(database_url: str) -> None:
    db = Database(database_url)
    try:
        migrate(db)
        with db.engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), load_all_tables())
    finally:
        db.dispose()
    assert differences == []


def test_live_admin_keys_sharing_a_name_are_told_apart_by_the_migration(tmp_path: Path) -> None:
    """Before 0013 two live admin keys could carry one name; the name is now the person."""
    from alembic import command

    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        command.upgrade(alembic_config(db), "0012")
        with db.write() as conn:
            for name, revoked in (("admin key", None), ("admin key", None), ("admin key", 5)):
                conn.execute(
                    text(
                        "INSERT INTO api_keys (kind, name, key_hash, created_at, revoked_at) "
                        "VALUES ('admin', :name, :hash, 1, :revoked)"
                    ),
                    {
                        "name": name,
                        "hash": f"h{revoked}{name}{id(conn)}{time.time_ns()}",
                        "revoked": revoked,
                    },
                )
        migrate(db)
        with db.read() as conn:
            names = conn.execute(text("SELECT name FROM api_keys ORDER BY id")).scalars().all()
    finally:
        db.dispose()
    assert names == ["admin key", "admin key (key 2)", "admin key"]
