"""Delivery: render an outbox row, hand it to its channel's provider outside any
transaction, record what happened, play back feedback, fall back to the next channel.

`Delivery` is the door: it wires the parts below and is what the queue, the providers'
callbacks and the API call. The steps and why they are safe against a crash at any
instant are in docs/channels.md; the modules in docs/delivery-layout.md.
"""

from __future__ import annotations

import logging
import threading
import uuid
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import Connection

from parcours.channels import (
    DeliveryFailure,
    InboundMail,
    OutgoingMessage,
    PermanentFailure,
    Pricing,
    Provider,
    Providers,
    Report,
    WhatsAppPricing,
)
from parcours.customers import profiles as customers
from parcours.log import Reactions
from parcours.messaging import choice, outbox_rows, policies, suppressions
from parcours.messaging import metrics as messaging_metrics
from parcours.messaging import templates as message_templates
from parcours.messaging.email_reports import EmailReports
from parcours.messaging.fallback import FALLBACK, Fallback
from parcours.messaging.links import Links
from parcours.messaging.outbox import (
    DELIVER,
    QUEUE,
    Intent,
    add_intent,
    outbox_page,
    public_message_id,
)
from parcours.messaging.outbox_rows import KnownMessage
from parcours.messaging.outcomes import FEEDBACK, Outcomes
from parcours.messaging.preparers import (
    Draft,
    Preparer,
    Unsendable,
    preparer_for,
    preparer_table,
    whatsapp_form,
)
from parcours.messaging.rendering import Brand, PreviewContext, Renderer
from parcours.messaging.send_checks import SendCheck, SendChecks
from parcours.messaging.sending import LeaseKeeper, Outcome, Sending, Sends
from parcours.messaging.timeline import Timeline, digest
from parcours.runtime.clock import Clock
from parcours.runtime.db import Database, holding_writes, is_transient, stop_holding
from parcours.runtime.queue import Job, Worker, enqueue, extend_leases
from parcours.runtime.settings import RECOMMENDATION_WEEKS

log = logging.getLogger(__name__)

LEASE_MS = 5 * 60_000  # a send not recorded within this is tried again, with the same key
RECORD_TRIES = 3  # a batch's outcomes, recorded again after a deadlock (docs/architecture.md)

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class Delivery:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        providers: Providers,
        links: Links,
        brand: Brand,
        rules: policies.Policies,
        region: str,
        reactions: Reactions,
        lease_ms: int = LEASE_MS,
        sms_pricing: Pricing | None = None,
        whatsapp_pricing: WhatsAppPricing | None = None,
        bounce_rule: suppressions.BounceRule | None = None,
        recommendation_weeks: int = RECOMMENDATION_WEEKS,
    ) -> None:
        self.db = db
        self.clock = clock
        self.providers = providers
        self.links = links
        self.brand = brand
        self.rules = rules
        self.region = region
        self.reactions = reactions
        self.lease_ms = lease_ms
        self.bounce_rule = bounce_rule or suppressions.BounceRule()
        self.sms_pricing = sms_pricing or Pricing({"*": Decimal("0.08")}, "EUR")
        self.whatsapp_pricing = whatsapp_pricing or WhatsAppPricing.from_config({})
        self.preparers = preparer_table(links, self.sms_pricing, self.whatsapp_pricing)
        self.renderer = Renderer(brand, links, clock, recommendation_weeks)
        self.timeline = Timeline(region, reactions)
        self.checks = SendChecks(clock, self.timeline)
        self.fallback = Fallback(clock, rules, brand.sector, self.timeline)
        self.outcomes = Outcomes(clock, self.timeline, self.fallback, self.bounce_rule)
        self.email_reports = EmailReports(db, clock, self.outcomes, self.timeline)
        self._local = threading.local()
        self._worker: Worker | None = None

    def add_send_check(self, check: SendCheck) -> None:
        """Have every message of a journey run checked when it is claimed to be sent, in
        the claim's transaction: one the check says is no longer wanted is cancelled."""
        self.checks.add(check)

    def install(self, worker: Worker) -> None:
        self._worker = worker
        worker.register(DELIVER, self.deliver, prepare=self.before_sends, in_sets=True)
        worker.register(
            FEEDBACK, self.outcomes.feedback, prepare=self._before_feedback, in_sets=True
        )
        worker.register(FALLBACK, self.fallback.due)
        worker.finish_with(self.finish_sends)

    # ---- 1. claim and prepare, in the job's transaction ---------------------------------

    def before_sends(self, conn: Connection, jobs: list[Job]) -> None:
        """Before a set of sends: their rows and their customers' profiles read at once
        (two queries), and whether each is still wanted, checked at once."""
        rows = outbox_rows.read_ahead_rows(conn, sorted({int(job.payload["id"]) for job in jobs}))
        customers.read_ahead_profiles(conn, sorted({int(row.customer_id) for row in rows}))
        self.checks.before_batch(conn, jobs, rows)

    def _before_feedback(self, conn: Connection, jobs: list[Job]) -> None:
        """Before a set of feedback: the messages' rows, read at once."""
        outbox_rows.read_ahead_rows(conn, sorted({int(job.payload["id"]) for job in jobs}))

    def deliver(self, conn: Connection, job: Job) -> None:
        """Claim a message: still wanted, rendered and made ready by its channel's
        preparer, marked `sending` under a lease; its provider is called after the commit."""
        now = self.clock.now_ms()
        row = outbox_rows.row(conn, int(job.payload["id"]))
        if row is None or row.state not in ("pending", "sending"):
            return  # sent, failed, or cancelled
        checked_at: int | None = None  # a message being sent again keeps its last check
        if row.state == "pending":
            # Not handed over yet: still wanted? (A message being sent is not checked: it
            # may have gone already, and goes again with the same key.)
            checked_at, reason = self.checks.when_claimed(conn, row, now)
            if reason is not None:
                self.checks.cancel(conn, row, reason, checked_at, now)
                return
        preparer = preparer_for(self.preparers, row.channel)
        provider = self._provider(row)
        links = self.renderer.links_of(row)
        if row.rendered is None:
            prepared = self._prepare(conn, row, preparer, links, now)
            if prepared is None:
                return  # it cannot go: failed, and the fallback took over
            content, locale = prepared
        else:  # sent before, by a process that died: the very same content again
            content, locale = _decode(row.rendered), row.locale
        self._claim(conn, row, content, locale, provider, checked_at, now)
        message = OutgoingMessage(
            key=row.idempotency_key,
            outbox_id=row.id,
            customer_id=row.customer_id,
            channel=row.channel,
            purpose=row.purpose,
            address=row.address,
            content=content,
            locale=locale,
            links=links,
            target=preparer.target(conn, row.address),
        )
        # Kept until the commit, by message: a set undone and run again one job at a
        # time claims its messages again (and replaces these); what goes is only what the
        # commit kept claimed (`_claimed`).
        self._batch()[row.id] = (int(row.attempt) + 1, Sending(message, provider))
        assert self._worker is not None
        self._worker.after_commit(self._send_batch)

    def _provider(self, row: Any) -> Provider:
        """The channel's provider; browsers and app devices go different ways."""
        provider = self.providers.for_channel(row.channel)
        route = getattr(provider, "provider_for", None)
        if route is not None and row.address:
            routed: Provider = route(row.address)
            return routed
        return provider

    def _prepare(
        self, conn: Connection, row: Any, preparer: Preparer, links: dict[str, str], now: int
    ) -> tuple[dict[str, Any], str] | None:
        """The message rendered and made ready by its channel's preparer, with its locale;
        None when it cannot go (a rendering error, a closed WhatsApp window): failed."""
        detail = _decode(row.detail)
        try:
            rendered = self.renderer.render(conn, row, detail, links)
        except message_templates.TemplateProblem as exc:
            self.outcomes.failed(conn, row, detail, PermanentFailure(str(exc)), now)
            return None
        content = dict(rendered.fields)
        for marked in ("subject", "title", "header"):  # an email's, a push's, a pass's
            if detail.get("test") and isinstance(content.get(marked), str):
                content[marked] = f"[TEST] {content[marked]}"
        draft = Draft(row.id, row.customer_id, row.address, content, links, now)
        result = preparer.prepare(conn, draft)
        if isinstance(result, Unsendable):
            self.outcomes.failed(conn, row, detail, PermanentFailure(result.reason), now)
            return None
        return result.content, rendered.locale

    def _claim(
        self,
        conn: Connection,
        row: Any,
        content: dict[str, Any],
        locale: str,
        provider: Provider,
        checked_at: int | None,
        now: int,
    ) -> None:
        """The row says `sending`, with its content, until the lease's end. If this
        process dies before the result is recorded, the lease job sends again, with the
        same key, once the lease is over, or as soon as another worker sees that this one
        is gone (its heartbeat: runtime/heartbeats.py)."""
        outbox_rows.mark_sending(
            conn,
            row.id,
            int(row.attempt) + 1,
            now + self.lease_ms,
            _encode(content).decode(),
            locale,
            provider.name,
            checked_at,
        )
        assert self._worker is not None
        enqueue(
            conn,
            DELIVER,
            {"id": row.id},
            run_at=now + self.lease_ms,
            now=now,
            queue=QUEUE,
            unique_key=f"deliver:{row.id}",
            customer_id=row.customer_id,
            lease_owner=self._worker.lease_owner,
        )

    def _batch(self) -> dict[int, tuple[int, Sending]]:
        """The messages claimed by the batch of jobs running, by outbox id: the attempt
        claimed and what to send."""
        if not hasattr(self._local, "batch"):
            self._local.batch = {}
        batch: dict[int, tuple[int, Sending]] = self._local.batch
        return batch

    def _claimed(self, batch: dict[int, tuple[int, Sending]]) -> list[Sending]:
        """Of the messages a batch of jobs claimed, those its commit kept claimed, with
        the attempt claimed: a claim made by a set of jobs that was then undone (and not
        made again when its jobs ran one at a time) is not in the database, and is not
        sent. One read for the batch."""
        if not batch:
            return []
        with self.db.read() as conn:
            found = outbox_rows.rows(conn, sorted(batch), "id, state, attempt")
        kept = {
            int(row.id)
            for row in found
            if row.state == "sending" and int(row.attempt) == batch[int(row.id)][0]
        }
        dropped = len(batch) - len(kept)
        if dropped:
            log.info("%d messages claimed by a set that was undone are not sent now", dropped)
        return [sending for ident, (_, sending) in batch.items() if ident in kept]

    def preview_context(
        self, conn: Connection, customer_id: int, channel: str, event: dict[str, Any]
    ) -> PreviewContext:
        """The context of a preview: a real customer, a sample unsubscribe link."""
        return self.renderer.preview_context(conn, customer_id, channel, event)

    # ---- 2. send, after the commit, outside any transaction -----------------------------

    def _send_batch(self) -> None:
        """After the claim has committed: this batch goes to the providers in threads of
        their own while the worker claims and renders the next one; the batch sent
        meanwhile is recorded (the worker waits for its sends first, so at most one batch
        is ever in flight)."""
        batch = self._claimed(self._batch())
        self._local.batch = {}
        previous = self._take_sends()
        results = previous.results() if previous is not None else []
        self._local.sends = Sends(batch, self._keeper(batch)) if batch else None
        if results:
            self._record_all(results)

    def _keeper(self, batch: list[Sending]) -> LeaseKeeper:
        """Keeps the batch's leases (the messages' and their lease jobs') while it is being
        sent, renewed every third of a lease."""
        ids = [sending.message.outbox_id for sending in batch]
        keys = [f"deliver:{ident}" for ident in ids]

        def renew() -> None:
            until = self.clock.now_ms() + self.lease_ms
            with self.db.write() as conn:
                extend_leases(conn, keys, until)
                outbox_rows.extend_lease(conn, ids, until)

        return LeaseKeeper(renew, max(0.2, self.lease_ms / 3000))

    def finish_sends(self) -> bool:
        """Wait for the batch in flight, if any, and record it (the worker calls this
        before it rests)."""
        sends = self._take_sends()
        if sends is None:
            return False
        self._record_all(sends.results())
        return True

    def _take_sends(self) -> Sends | None:
        sends: Sends | None = getattr(self._local, "sends", None)
        self._local.sends = None
        return sends

    # ---- 3. record, in a short transaction ---------------------------------------------

    def _record_all(self, results: list[tuple[Sending, Outcome]]) -> None:
        """Record a batch's outcomes in a transaction of their own. One that PostgreSQL
        fails as a deadlock's victim (a merge of one of its customers: docs/architecture.md,
        "Concurrency on PostgreSQL") or a serialization failure is tried again, whole:
        what the providers said is never lost to it, so no send is made again for it."""
        for attempt in range(RECORD_TRIES):
            try:
                with self.db.write() as conn:
                    # Its writes held and sent together: a statement per kind for the
                    # batch (the rows marked sent, the jobs, the events), not per message.
                    holder = holding_writes(conn)
                    try:
                        self.outcomes.record(conn, results)
                        holder.release(conn)
                    finally:
                        stop_holding(conn)
            except Exception as exc:
                if attempt == RECORD_TRIES - 1 or not is_transient(exc):
                    raise
                log.warning("recording %d sends failed, trying again: %s", len(results), exc)
                continue
            break
        for sending, outcome in results:
            failure = outcome if isinstance(outcome, DeliveryFailure) else None
            messaging_metrics.sent_or_failed(
                sending.message.channel, sending.provider.name, failure
            )

    # ---- 4. feedback, from providers, tracking links, inbound mail and admins -----------

    def status(
        self,
        conn: Connection,
        outbox_id: int,
        status: str,
        now: int,
        *,
        permanent: bool = False,
        suppress: bool = False,
        soft_bounce: bool = False,
        reason: str | None = None,
        extra: dict[str, Any] | None = None,
        source: str | None = None,
    ) -> bool:
        """How far a message got, as a provider or a tracking link says (outcomes.py)."""
        return self.outcomes.status(
            conn,
            outbox_id,
            status,
            now,
            permanent=permanent,
            suppress=suppress,
            soft_bounce=soft_bounce,
            reason=reason,
            extra=extra,
            source=source,
        )

    def email_report(self, report: Report, source: str) -> None:
        """A bounce or a complaint a provider's webhook reports (email_reports.py)."""
        self.email_reports.report(report, source)

    def email_mail(self, mail: InboundMail) -> None:
        """Mail received on the inbound endpoint (email_reports.py)."""
        self.email_reports.mail(mail)

    def _last_email_to(self, conn: Connection, address: str, now: int) -> Any:
        return self.email_reports.last_email_to(conn, address, now)

    def lift_suppression(
        self, channel: str, address: str, by: str, note: str
    ) -> suppressions.Suppression | None:
        """An admin lifts a suppression: the address may be written to again, its soft
        bounces start counting afresh, and a `Suppression Lifted` event on the
        customer's timeline says who did it and why, in the same transaction. What was
        lifted, or None when the address was not suppressed."""
        now = self.clock.now_ms()
        with self.db.write() as conn:
            lifted = suppressions.lift(conn, channel, address, now)
            if lifted is None:
                return None
            customer = lifted.customer
            customer_id = int(customer[4:]) if customer else None
            if customer_id is None and channel == "email":
                try:
                    customer_id = customers.resolve(conn, address, self.region)
                except customers.CustomerNotFound:
                    customer_id = None
            if customer_id is not None:
                self.timeline.append(
                    conn,
                    customer_id,
                    "Suppression Lifted",
                    {
                        "channel": channel,
                        "address": address,
                        "reason": lifted.reason,
                        "source": lifted.source,
                        "suppressed_at": lifted.created_at,
                        "lifted_by": by,
                        "note": note,
                    },
                    now,
                    f"suppression-lifted:{channel}:{digest(address)}:{now}",
                )
        log.info(
            "suppression lifted",
            extra={"fields": {"channel": channel, "customer": lifted.customer, "lifted_by": by}},
        )
        return lifted

    def test_send(
        self,
        conn: Connection,
        template_id: str,
        customer_id: int,
        channel: str,
        to: str,
        event: dict[str, Any],
        now: int,
        *,
        history: bool = True,
    ) -> int:
        """Send the template, rendered for a real customer, to the brand's own address,
        outside journeys and policies; it is marked as a test and counts for nothing.
        `history=False`: its events stay off the customer's timeline (the console's test
        sends, which only borrow the customer's data)."""
        template = message_templates.get(conn, template_id)
        if channel not in template.channels():
            raise message_templates.TemplateProblem(
                f"template {template_id!r} has no {channel} content"
            )
        outbox_id = add_intent(
            conn,
            Intent(f"test:{uuid.uuid4().hex}:0", customer_id, channel, template_id, "test"),
            now,
            {"event": event, "test": True, "rest": [], **({} if history else {"history": False})},
            to,
        )
        assert outbox_id is not None
        return outbox_id

    def test_device(self, conn: Connection, channel: str, customer_id: int, now: int) -> str | None:
        """Where a test of a push or a Wallet message goes for this customer: the device
        one of their messages would reach now (their newest browser subscription, else
        their app's push token; the pass they added to Wallet), or None."""
        traits = customers.traits_of(conn, [customer_id]).get(customer_id, {})
        return choice.addresses(conn, customer_id, dict(traits), now, {channel}).get(channel)

    # ---- reads for the providers' callbacks ----------------------------------------------

    def find(self, conn: Connection, provider: str, provider_message_id: str) -> int | None:
        """The message a provider knows by this id."""
        return outbox_rows.find(conn, provider, provider_message_id)

    def in_flight(self, conn: Connection, channel: str) -> bool:
        """Some message on this channel is being sent, its result not recorded yet."""
        return outbox_rows.in_flight(conn, channel)

    def message_of(self, conn: Connection, outbox_id: int) -> KnownMessage | None:
        """The provider and its id for a message, to check a callback against."""
        return outbox_rows.message_of(conn, outbox_id)


suppress = suppressions.suppress  # messaging/suppressions.py

__all__ = [
    "Brand",
    "Delivery",
    "SendCheck",
    "outbox_page",
    "public_message_id",
    "suppress",
    "whatsapp_form",
]
