"""What a running Parcours process holds: settings, database, clock, the writer, key checks,
the worker and its heartbeat; whether it is ready; and its orderly stop."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import msgspec

from parcours import analytics
from parcours.channels import (
    ConfigError,
    EmailTags,
    Pricing,
    WalletIssuer,
    WhatsAppPricing,
    hand_to,
    make_vapid_key,
    stored,
)
from parcours.commerce import Commerce
from parcours.commerce import people as commerce_people
from parcours.customers import CUSTOMER_TABLES, People, erase_customer_rows, identity_resolver
from parcours.ingest.writer import Writer
from parcours.journeys import QUEUE as JOURNEYS_QUEUE
from parcours.journeys import JourneyEngine, webhooks
from parcours.journeys import people as journeys_people
from parcours.log import Reactions
from parcours.log import people as log_people
from parcours.loyalty import Referrals
from parcours.loyalty import people as loyalty_people
from parcours.messaging import QUEUE as MESSAGING_QUEUE
from parcours.messaging import (
    SECTOR_PRESETS,
    BounceRule,
    Brand,
    Delivery,
    Links,
    Policies,
    Signer,
    WalletUpdates,
)
from parcours.messaging import people as messaging_people
from parcours.runtime.clock import Clock, SystemClock
from parcours.runtime.db import Database, current_revision, head_revision, migrate
from parcours.runtime.heartbeats import Heartbeat, beat_clock, worker_counts
from parcours.runtime.keys import KeyChecker, ensure_key
from parcours.runtime.metrics import DatabaseFigures, Exposition
from parcours.runtime.queue import Worker, erase_jobs, reassign_jobs
from parcours.runtime.secrets import instance_secret
from parcours.runtime.settings import Settings, SettingsError
from parcours.segments import QUEUE as SEGMENTS_QUEUE
from parcours.segments import SegmentEngine
from parcours.segments import people as segments_people
from parcours.web.operations import Readiness, WorkerFigures

log = logging.getLogger(__name__)


def commerce_of(settings: Settings, clock: Clock) -> Commerce:
    """Commerce with the brand's settings: the reaction that keeps carts, orders,
    shipments and returns, and the keeper of the orders for the customers package."""
    return Commerce(
        return_window_days=settings.return_window_days,
        review_after_days=settings.review_after_days,
        replenishment_lead_days=settings.replenishment_lead_days,
        vip_spend=settings.vip_spend,
        sector=settings.sector,
        clock=clock,
        cart_abandon_after_minutes=settings.cart_abandon_after_minutes,
        cart_order_window_hours=settings.cart_order_window_hours,
        back_in_stock_limit_to_stock=settings.back_in_stock_limit_to_stock,
        shipment_stalled_after_hours=settings.shipment_stalled_after_hours,
        recommendation_weeks=settings.recommendation_weeks,
    )


def people_hooks(journeys: JourneyEngine, commerce: Commerce) -> People:
    """What each package does with a person's rows when two profiles merge or the person
    is erased (customers/people.py), in the order the hooks run: the journeys first (a
    run both profiles had is ended, and the line saying so logged, before the runs move),
    then the events (that line with them, so that the survivor's trace shows it), the
    queue, messaging, segments, loyalty and commerce. The customers' own rows move as the
    projection resolves a merge, and the segment engine moves memberships in its
    evaluation job. Commerce keeps the orders the customers package asks about."""
    people = People()
    people.keep_orders(commerce)
    # What a worker made for a customer while their merge was being stored (not yet
    # committed, so the merge did not move it), followed when a step meets it.
    journeys.late_merge = partial(people.merged, only=("journeys", "log", "queue", "messaging"))
    people.on_merge("journeys", journeys.follow_merge)
    people.on_merge("log", log_people.move_events)
    people.on_merge("queue", reassign_jobs)
    people.on_merge("messaging", messaging_people.follow_merge)
    people.on_merge("loyalty", loyalty_people.follow_merge)
    people.on_merge("commerce", commerce.follow_merge)
    people.on_erase("log", log_people.TABLES, log_people.erase_events)
    people.on_erase("customers", CUSTOMER_TABLES, erase_customer_rows)
    people.on_erase("journeys", journeys_people.TABLES, journeys_people.erase)
    people.on_erase("queue", ("jobs",), erase_jobs)
    people.on_erase("messaging", messaging_people.TABLES, messaging_people.erase)
    people.on_erase("segments", segments_people.TABLES, segments_people.erase)
    people.on_erase("loyalty", loyalty_people.TABLES, loyalty_people.erase)
    people.on_erase("commerce", commerce_people.TABLES, commerce_people.erase)
    return people


@dataclass
class Services:
    settings: Settings
    db: Database
    clock: Clock
    writer: Writer
    keys: KeyChecker
    worker: Worker
    engine: JourneyEngine
    delivery: Delivery
    referrals: Referrals
    segments: SegmentEngine
    people: People
    reactions: Reactions
    heartbeat: Heartbeat
    _worker_thread: threading.Thread | None = field(default=None, repr=False)
    _inbound: Any = field(default=None, repr=False)

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        run_migrations: bool = True,
    ) -> Services:
        """Connect, migrate, register the keys given in the settings, start the writer."""
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
            bounce_rule = BounceRule.from_config(settings.channels.get("email", {}))
            whatsapp_pricing = WhatsAppPricing.from_config(settings.channels.get("whatsapp", {}))
            vapid = instance_secret(db, "vapid-private-key", clock.now_ms(), make_vapid_key)
            # Bounce and reply addresses, and Message-IDs, signed (channels/email_tags.py),
            # by the configuration's providers and by those set up in the console.
            tags = EmailTags.load(db, clock.now_ms())
            sealer = stored.Sealer.for_database(
                db,
                settings.provider_secrets_key,
                clock.now_ms(),
                settings.provider_secrets_previous_keys,
            )
            resealed = stored.seal_again(db, sealer)
            if resealed:
                log.info(
                    "provider secrets sealed again with the current key: %s", ", ".join(resealed)
                )
            providers = stored.LiveProviders(
                db,
                settings.channels,
                settings.resolved_public_url,
                sealer,
                vapid_pem=vapid,
                prepare=lambda provider: hand_to(provider, tags),
            )
        except ConfigError as exc:
            db.dispose()
            raise SettingsError(str(exc)) from None
        worker = Worker(
            db,
            clock,
            queues=("default", JOURNEYS_QUEUE, MESSAGING_QUEUE, SEGMENTS_QUEUE),
            poll_seconds=settings.worker_poll_seconds,
        )
        policies = Policies.load(
            Path(settings.policies_file) if settings.policies_file else None,
            timezone=settings.brand_timezone,
        )
        policies = replace(policies, verified_push_only=bool(settings.identity_verification_secret))
        brand = Brand(
            settings.brand_name, settings.brand_url, settings.brand_locale, settings.sector
        )
        engine = JourneyEngine(
            clock,
            settings.default_region,
            policies,
            sector=settings.sector,
            timezone=settings.brand_timezone,
        )
        commerce = commerce_of(settings, clock)
        people = people_hooks(engine, commerce)
        # What reacts to an append, registered once here (log/reactions.py): the
        # customers' identities (an event naming only an order is its customer's, as
        # commerce knows them), with the merges they make followed by every package
        # first; then each package's reaction, in the order below.
        reactions = Reactions(
            identity_resolver(settings.default_region, commerce.order_owners),
            merges=people.follow_merges,
        )
        writer = Writer(
            db,
            clock=clock,
            reactions=reactions,
            batch_events=settings.ingest_batch_events,
            threads=settings.ingest_writers or 1,
        )
        # Commerce first: its tables are current when the others' jobs read them.
        commerce.install(reactions, worker)  # with its job: abandoned carts announced
        engine.install(worker, reactions)
        webhooks.WebhookSender(worker, webhooks.WebhookSettings.from_table(settings.webhooks))
        referrals = Referrals(clock, settings.default_region, reactions)
        referrals.install(worker, reactions)
        segments = SegmentEngine(clock, settings.default_region)
        segments.install(worker, reactions)
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
            reactions,
            lease_ms=settings.delivery_lease_seconds * 1000,
            sms_pricing=sms_pricing,
            whatsapp_pricing=whatsapp_pricing,
            bounce_rule=bounce_rule,
            recommendation_weeks=settings.recommendation_weeks,
        )
        delivery.install(worker)
        worker.finish_with(analytics.KeepUp(db, clock))  # the overview's counts, kept up
        delivery.add_send_check(engine.messages_no_longer_wanted)  # an order stops its sends

        # The Wallet in force at each use: one set up in the console may change meanwhile.
        def wallet_in_force() -> WalletIssuer | None:
            found = providers.for_channel("wallet")
            return found if isinstance(found, WalletIssuer) else None

        WalletUpdates(clock, wallet_in_force, settings.brand_locale).install(worker, reactions)
        if db.is_sqlite:  # PostgreSQL's workers LISTEN (runtime/queue.py)
            db.after_jobs_scheduled(worker.wake_for)  # a commit that scheduled a job
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
            people,
            reactions,
            Heartbeat(db, clock, stale_ms=settings.worker_stale_seconds * 1000),
        )

    def start_worker(self) -> None:
        """Run due jobs in a background thread of this process (parcours serve)."""
        if self._worker_thread is None:
            self._worker_thread = threading.Thread(
                target=self.run_worker, name="parcours-worker", daemon=True
            )
            self._worker_thread.start()

    def run_worker(self) -> None:
        """Run due jobs in this thread, with a heartbeat, until `close()` (or the worker's
        `stop()`) is called (parcours worker)."""
        self.worker.heartbeat = self.heartbeat
        self.worker.run_forever()

    @classmethod
    def open_scratch(cls, settings: Settings, clock: Clock) -> Services:
        """A Parcours on a scratch database, for the journey simulator (journeys/simulator.py
        asks for it by this shape, so that it never imports this module)."""
        return cls.open(settings, clock=clock)

    @property
    def runs_worker(self) -> bool:
        return self.worker.heartbeat is not None and not self.worker.stopping.is_set()

    def metrics(self, *, with_database: bool = True) -> Exposition:
        """What GET /metrics shows: this process's (or this server's processes') counters,
        and the queue and worker figures read from the database."""
        figures = None
        if with_database:
            figures = DatabaseFigures(
                self.db, self.clock, self.worker.queues, self.settings.worker_stale_seconds * 1000
            )
        return Exposition(figures)

    def readiness(self) -> Readiness:
        """The database reachable, its migrations current, this process's worker beating
        (when it runs one), and at least `ready_min_workers` fresh workers anywhere."""
        try:
            current = current_revision(self.db)
        except Exception as exc:
            return Readiness(
                status="not ready", failed=["database"], database=f"unreachable: {exc}"
            )
        failed: list[str] = []
        head = head_revision()
        migrations: str | msgspec.UnsetType = msgspec.UNSET
        if current != head:
            failed.append("migrations")
            migrations = f"at {current}, expected {head}"
        stale_ms = self.settings.worker_stale_seconds * 1000
        now = beat_clock(self.clock).now_ms()
        if self.runs_worker:
            beat = self.heartbeat.last_beat_at
            alive = self._worker_thread is None or self._worker_thread.is_alive()
            if beat is None or not alive or now - beat > stale_ms:
                failed.append("worker")
                worker = (
                    "this process's worker has not beaten yet"
                    if beat is None
                    else f"this process's worker last beat {(now - beat) / 1000:.0f} s ago "
                    f"(fresh: within {self.settings.worker_stale_seconds} s)"
                )
            else:
                worker = f"beating, last {(now - beat) / 1000:.0f} s ago"
        else:
            worker = "none in this process"
        workers: WorkerFigures | str
        try:
            with self.db.read() as conn:
                counts = worker_counts(conn, now, stale_ms)
        except Exception as exc:  # the table is missing until the migrations ran
            failed.append("workers")
            workers = str(exc)
        else:
            required = self.settings.ready_min_workers
            workers = WorkerFigures(counts.fresh, counts.stale, required)
            if counts.fresh < required:
                failed.append("workers")
        return Readiness(
            status="not ready" if failed else "ready",
            failed=failed or msgspec.UNSET,
            database=self.db.dialect,
            migration=current,
            migrations=migrations,
            worker=worker,
            workers=workers,
        )

    def start_inbound_email(self) -> int | None:
        """Receive bounces, complaint reports and replies over SMTP when
        `channels.email.inbound_port` is set (docs/channels.md); the port, or None."""
        section = self.settings.channels.get("email", {})
        port = section.get("inbound_port")
        if not port or self._inbound is not None:
            return None
        from aiosmtpd.controller import Controller

        from parcours.channels import InboundHandler

        address = str(section.get("return_path") or section.get("from_address") or "")
        domain = address.rpartition("@")[2] or "localhost"
        handler = InboundHandler(domain, self.delivery.email_mail)
        host = str(section.get("inbound_host", "0.0.0.0"))
        self._inbound = Controller(handler, hostname=host, port=int(port), enable_SMTPUTF8=True)
        self._inbound.start()
        return int(port)

    def close(self) -> None:
        """The orderly stop: the worker takes no new batch, the writer commits what it
        holds, the worker's running batch ends (committed, or rolled back so that its jobs
        are due again), then the database is released. Bounded: the worker's batch gets
        `shutdown_timeout_seconds`, after which it is left to roll back with the process."""
        self.worker.stop()
        if self._inbound is not None:
            self._inbound.stop()
        self.writer.close()
        if self._worker_thread is not None:
            self._worker_thread.join(self.settings.shutdown_timeout_seconds)
            if self._worker_thread.is_alive():
                log.warning(
                    "the worker's batch did not end within %s s; it rolls back as the process "
                    "exits, and its jobs run again",
                    self.settings.shutdown_timeout_seconds,
                )
        self.heartbeat.remove()
        self.delivery.providers.close()
        self.db.dispose()
