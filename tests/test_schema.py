"""The migrations build exactly the schema the code declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from parcours.runtime.db import Database, migrate
from parcours.runtime.schema import load_all_tables


def test_migrations_match_the_declared_tables(database_url: str) -> None:
    db = Database(database_url)
    try:
        migrate(db)
        with db.engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), load_all_tables())
    finally:
        db.dispose()
    assert differences == []
