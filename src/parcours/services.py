"""What a running Parcours process holds: settings, database, clock, the writer, key checks."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parcours.channels.base import ConfigError
from parcours.channels.push import make_vapid_key
from parcours.channels.registry import Providers
from parcours.channels.sms import Pricing
from parcours.channels.wallet import WalletIssuer
from parcours.channels.whatsapp import WhatsAppPricing
from parcours.ingest.writer import Writer
from parcours.ingest.writer_process import RemoteWriter
from parcours.journeys.engine import QUEUE as JOURNEYS_QUEUE
from parcours.journeys.engine import JourneyEngine
from parcours.loyalty.referrals import Referrals
from parcours.messaging.choice import SECTOR_PRESETS
from parcours.messaging.delivery import Brand, Delivery
from parcours.messaging.links import Links, Signer
from parcours.messaging.outbox import QUEUE as MESSAGING_QUEUE
from parcours.messaging.policies import Policies
from parcours.messaging.wallet_updates import WalletUpdates
from parcours.runtime.clock import Clock, SystemClock
from parcours.runtime.db import Database, migrate
from parcours.runtime.keys import KeyChecker, ensure_key
from parcours.runtime.queue import Worker
from parcours.runtime.secrets import instance_secret
from parcours.runtime.settings import Settings, SettingsError
from parcours.segments.api import QUEUE as SEGMENTS_QUEUE
from parcours.segments.engine import SegmentEngine


@dataclass
class Services:
    settings: Settings
    db: Database
    clock: Clock
    writer: Writer | RemoteWriter
    keys: KeyChecker
    worker: Worker
    engine: JourneyEngine
    delivery: Delivery
    referrals: Referrals
    segments: SegmentEngine
    _worker_thread: threading.Thread | None = field(default=None, repr=False)
    _inbound: Any = field(default=None, repr=False)

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        run_migrations: bool = True,
        writer_process: bool = False,
    ) -> Services:
        """Connect, migrate, register the keys given in the settings, start the writer (in
        a child process of its own with `writer_process`: `parcours serve`)."""
        if settings.sector and settings.sector not in SECTOR_PRESETS:
            raise SettingsError(
                f"sector must be one of {', '.join(SECTOR_PRESETS)}, got {settings.sector!r}"
            )
        db = Database(settings.resolved_database_url)
        if run_migrations:
            migrate(db)
        if settings.write_key:
            ensure_key(db, "write", settings.write_key, "write key from settings")
        if settings.admin_key:
            ensure_key(db, "admin", settings.admin_key, "admin key from settings")
        clock = clock or SystemClock()
        try:  # the channels, checked before any thread starts (the VAPID key is the db's)
            sms_pricing = Pricing.from_config(settings.channels.get("sms", {}))
            whatsapp_pricing = WhatsAppPricing.from_config(settings.channels.get("whatsapp", {}))
            vapid = instance_secret(db, "vapid-private-key", clock.now_ms(), make_vapid_key)
            providers = Providers.from_settings(
                settings.channels, settings.resolved_public_url, vapid
            )
        except ConfigError as exc:
            db.dispose()
            raise SettingsError(str(exc)) from None
        writer: Writer | RemoteWriter
        if writer_process:
            writer = RemoteWriter(settings)
        else:
            writer = Writer(
                db,
                clock=clock,
                default_region=settings.default_region,
                batch_events=settings.ingest_batch_events,
                threads=settings.ingest_writers or (1 if db.is_sqlite else 4),
            )
        worker = Worker(
            db, clock, queues=("default", JOURNEYS_QUEUE, MESSAGING_QUEUE, SEGMENTS_QUEUE)
        )
        policies = Policies.load(Path(settings.policies_file) if settings.policies_file else None)
        brand = Brand(
            settings.brand_name, settings.brand_url, settings.brand_locale, settings.sector
        )
        engine = JourneyEngine(clock, settings.default_region, policies, sector=settings.sector)
        engine.install(worker, writer.hooks)
        referrals = Referrals(clock, settings.default_region, writer.hooks)
        referrals.install(worker, writer.hooks)
        segments = SegmentEngine(clock, settings.default_region)
        segments.install(worker, writer.hooks)
        secret = settings.secret_key or instance_secret(db, "link-signing", clock.now_ms())
        wallet = providers.for_channel("wallet")
        issuer = wallet if isinstance(wallet, WalletIssuer) else None
        delivery = Delivery(
            db,
            clock,
            providers,
            Links(
                Signer(secret.encode()),
                settings.resolved_public_url,
                wallet_orders=issuer is not None and issuer.orders is not None,
            ),
            brand,
            policies,
            settings.default_region,
            writer.hooks,
            lease_ms=settings.delivery_lease_seconds * 1000,
            sms_pricing=sms_pricing,
            whatsapp_pricing=whatsapp_pricing,
        )
        delivery.install(worker)
        WalletUpdates(clock, issuer, settings.brand_locale).install(worker, writer.hooks)
        writer.on_commit(worker.wake.set)
        try:
            writer.start()
        except Exception:
            db.dispose()
            raise
        return cls(
            settings,
            db,
            clock,
            writer,
            KeyChecker(db),
            worker,
            engine,
            delivery,
            referrals,
            segments,
        )

    def start_worker(self) -> None:
        """Run due jobs in a background thread of this process (parcours serve)."""
        if self._worker_thread is None:
            self._worker_thread = threading.Thread(
                target=self.worker.run_forever, name="parcours-worker", daemon=True
            )
            self._worker_thread.start()

    def start_inbound_email(self) -> int | None:
        """Receive bounces, complaint reports and replies over SMTP when
        `channels.email.inbound_port` is set (docs/channels.md); the port, or None."""
        section = self.settings.channels.get("email", {})
        port = section.get("inbound_port")
        if not port or self._inbound is not None:
            return None
        from aiosmtpd.controller import Controller

        from parcours.channels.email_inbound import InboundHandler

        address = str(section.get("return_path") or section.get("from_address") or "")
        domain = address.rpartition("@")[2] or "localhost"
        handler = InboundHandler(domain, self.delivery.email_report)
        host = str(section.get("inbound_host", "0.0.0.0"))
        self._inbound = Controller(handler, hostname=host, port=int(port))
        self._inbound.start()
        return int(port)

    def close(self) -> None:
        """Commit what the writer holds, stop the worker, then release the database."""
        if self._inbound is not None:
            self._inbound.stop()
        self.writer.close()
        self.worker.stop()
        if self._worker_thread is not None:
            self._worker_thread.join(30)
        self.delivery.providers.close()
        self.db.dispose()
