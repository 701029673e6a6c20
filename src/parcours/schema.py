"""Every package's tables on the one shared metadata, assembled at the top of the house:
each package declares its own tables (`tables.py`) on `runtime.db.metadata`, and only this
module, beside the composition root, knows them all (tests, schema checks, autogenerate)."""

from __future__ import annotations

from sqlalchemy import MetaData

from parcours.runtime.db import metadata


def load_all_tables() -> MetaData:
    """Import each module's tables so that they are registered on the metadata."""
    import parcours.accounts.tables
    import parcours.analytics.tables
    import parcours.brand.tables
    import parcours.channels.tables
    import parcours.commerce.tables
    import parcours.customers.tables
    import parcours.ingest.tables
    import parcours.journeys.tables
    import parcours.log.tables
    import parcours.loyalty.tables
    import parcours.messaging.tables
    import parcours.runtime.heartbeats
    import parcours.runtime.keys
    import parcours.runtime.queue
    import parcours.runtime.secrets
    import parcours.segments.tables  # noqa: F401

    return metadata
