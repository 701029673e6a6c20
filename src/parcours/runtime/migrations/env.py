"""Alembic environment: runs migrations on the engine Parcours hands over."""

from __future__ import annotations

from alembic import context

# Upgrades need no metadata; a caller comparing or autogenerating hands it over
# (`parcours.schema.load_all_tables()`), so that the runtime never imports the packages.
target_metadata = context.config.attributes.get("metadata")
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
