"""Alembic environment: runs migrations on the engine Parcours hands over."""

from __future__ import annotations

from alembic import context

from parcours.runtime.schema import load_all_tables

target_metadata = load_all_tables()
engine = context.config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
