"""What a running Parcours process holds: settings, database, clock, the writer, key checks."""

from __future__ import annotations

from dataclasses import dataclass

from parcours.ingest.writer import Writer
from parcours.runtime.clock import Clock, SystemClock
from parcours.runtime.db import Database, migrate
from parcours.runtime.keys import KeyChecker, ensure_key
from parcours.runtime.settings import Settings


@dataclass
class Services:
    settings: Settings
    db: Database
    clock: Clock
    writer: Writer
    keys: KeyChecker

    @classmethod
    def open(
        cls, settings: Settings, *, clock: Clock | None = None, run_migrations: bool = True
    ) -> Services:
        """Connect, migrate, register the keys given in the settings, start the writer."""
        db = Database(settings.resolved_database_url)
        if run_migrations:
            migrate(db)
        if settings.write_key:
            ensure_key(db, "write", settings.write_key, "write key from settings")
        if settings.admin_key:
            ensure_key(db, "admin", settings.admin_key, "admin key from settings")
        clock = clock or SystemClock()
        writer = Writer(
            db,
            clock=clock,
            default_region=settings.default_region,
            batch_events=settings.ingest_batch_events,
        )
        writer.start()
        return cls(settings, db, clock, writer, KeyChecker(db))

    def close(self) -> None:
        """Commit what the writer holds, then release the database."""
        self.writer.close()
        self.db.dispose()
