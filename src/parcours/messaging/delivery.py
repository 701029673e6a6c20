"""Delivery: render an outbox row, hand it to its channel's provider outside any
transaction, record what happened, play back feedback, fall back to the next channel.

The steps and why they are safe against a crash at any instant are in docs/channels.md.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import Connection

from parcours.channels.base import (
    DeliveryFailure,
    OutgoingMessage,
    PermanentFailure,
    Provider,
    TransientFailure,
)
from parcours.channels.email_bounces import classify
from parcours.channels.email_inbound import Ignored, InboundMail, Report
from parcours.channels.email_tags import EmailTags
from parcours.channels.registry import Providers
from parcours.channels.sms import Pricing
from parcours.channels.whatsapp import WhatsAppPricing
from parcours.customers import api as customers
from parcours.customers.consent import CONSENT_EVENT
from parcours.customers.identity import normalise_email
from parcours.log import Event, Hook, append_events, internal_event
from parcours.messaging import choice, policies, suppressions
from parcours.messaging import metrics as messaging_metrics
from parcours.messaging import templates as message_templates
from parcours.messaging.links import Links
from parcours.messaging.outbox import (
    CANCELLED,
    DELIVER,
    QUEUE,
    Intent,
    add_intent,
    public_message_id,
)
from parcours.messaging.preparers import (
    Draft,
    Preparer,
    Unsendable,
    preparer_for,
    preparer_table,
    whatsapp_form,
)
from parcours.runtime.clock import Clock
from parcours.runtime.db import Database, chunks, is_transient, run
from parcours.runtime.definitions import parse_duration
from parcours.runtime.queue import Job, Worker, backoff_ms, cancel, enqueue, lock_customers

log = logging.getLogger(__name__)

FEEDBACK = "messaging.feedback"
FALLBACK = "messaging.fallback"
LEASE_MS = 5 * 60_000  # a send not recorded within this is tried again, with the same key
MAX_SEND_ATTEMPTS = 8
# How long after its send a message's unsigned tag or old Message-ID still counts (for
# the messages sent before tags were signed; mail servers give up after five days at
# most), and how far back the newest email to an address is named for an admin.
BOUNCE_MATCH_MS = 14 * 24 * 3600_000
# How far a message got; `success` in a send step names one of these.
RANK = {"queued": 0, "sent": 1, "delivered": 2, "opened": 3, "read": 3, "clicked": 4}
EVENT_NAMES = {
    "sent": "Message Sent",
    "delivered": "Message Delivered",
    "opened": "Message Opened",
    "read": "Message Read",
    "clicked": "Message Clicked",
    "failed": "Message Failed",
}
# RANK as SQL; a failed message keeps its status.
_STATUS_RANK_SQL = (
    "(CASE status WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 WHEN 'opened' THEN 3 "
    "WHEN 'read' THEN 3 WHEN 'clicked' THEN 4 WHEN 'failed' THEN 9 ELSE 0 END)"
)
CART_EVENTS = {"Checkout Started", "Cart Viewed", "Product Added", "Cart Updated"}

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


@dataclass(frozen=True)
class Brand:
    name: str
    url: str
    locale: str
    sector: str


# A check a message must pass when delivery claims it to send: given the batch's messages
# that belong to a journey run and are not yet handed over (outbox rows) and the moment of
# the check, the ids of those no longer wanted, each with its reason. The composition root
# (services.py) registers the journey engine's: messaging does not know about journeys.
SendCheck = Callable[[Connection, list[Any], int], dict[int, str]]


@dataclass
class _Checked:
    """What `prepare_deliveries` found for a batch of sends, valid on its connection only."""

    conn: Connection
    at: int  # the moment it looked: what was stored before then is in what it read
    ids: set[int]  # the messages it checked
    unwanted: dict[int, str]  # of those, the ones no longer wanted, and why


RECORD_TRIES = 3  # a batch's outcomes, recorded again after a deadlock (docs/architecture.md)


@dataclass
class _Sending:
    message: OutgoingMessage
    provider: Provider


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
        hooks: list[Hook],
        lease_ms: int = LEASE_MS,
        sms_pricing: Pricing | None = None,
        whatsapp_pricing: WhatsAppPricing | None = None,
        bounce_rule: suppressions.BounceRule | None = None,
    ) -> None:
        self.bounce_rule = bounce_rule or suppressions.BounceRule()
        self.whatsapp_pricing = whatsapp_pricing or WhatsAppPricing.from_config({})
        self.lease_ms = lease_ms
        self.sms_pricing = sms_pricing or Pricing({"*": Decimal("0.08")}, "EUR")
        self.db = db
        self.clock = clock
        self.providers = providers
        self.links = links
        self.brand = brand
        self.rules = rules
        self.region = region
        self.hooks = hooks
        self._local = threading.local()
        self._worker: Worker | None = None
        self._checks: list[SendCheck] = []
        self.preparers = preparer_table(links, self.sms_pricing, self.whatsapp_pricing)

    def add_send_check(self, check: SendCheck) -> None:
        """Have every message of a journey run checked when it is claimed to be sent, in
        the claim's transaction: one the check says is no longer wanted is cancelled."""
        self._checks.append(check)

    def install(self, worker: Worker) -> None:
        self._worker = worker
        worker.register(DELIVER, self.deliver, prepare=self.prepare_deliveries)
        worker.register(FEEDBACK, self.feedback)
        worker.register(FALLBACK, self.fallback_due)
        worker.finish_with(self.finish_sends)

    # ---- 1. claim and render, in the job's transaction ----------------------------------

    def prepare_deliveries(self, conn: Connection, jobs: list[Job]) -> None:
        """Before a batch of sends: whether each message is still wanted, checked for the
        whole batch at once (its rows, then each check in a query or two, whatever the
        batch's size), in the transaction that claimed them (on PostgreSQL, holding their
        customers' locks). Should this fail, each send checks its own message."""
        self._local.checked = None
        if not self._checks:
            return
        now = self.clock.now_ms()
        rows = _rows(
            conn,
            sorted({int(job.payload["id"]) for job in jobs}),
            "id, customer_id, journey_id, run_id, step_id, state",
        )
        pending = [row for row in rows if row.state == "pending"]
        self._local.checked = _Checked(
            conn, now, {int(row.id) for row in pending}, self._unwanted(conn, pending, now)
        )

    def _unwanted(self, conn: Connection, rows: list[Any], now: int) -> dict[int, str]:
        """Of these messages, those the checks say are no longer wanted, and why."""
        runs = [row for row in rows if row.run_id is not None]
        unwanted: dict[int, str] = {}
        for check in self._checks if runs else ():
            for outbox_id, reason in check(conn, runs, now).items():
                unwanted.setdefault(outbox_id, reason)
        return unwanted

    def _check(self, conn: Connection, row: Any, now: int) -> tuple[int, str | None]:
        """When this message was checked, and why it is no longer wanted (None: it is):
        from the batch's check when it covers it, else checked now on its own."""
        checked: _Checked | None = getattr(self._local, "checked", None)
        if checked is not None and checked.conn is conn and int(row.id) in checked.ids:
            return checked.at, checked.unwanted.get(int(row.id))
        return now, self._unwanted(conn, [row], now).get(int(row.id))

    def _cancel(self, conn: Connection, row: Any, reason: str, checked_at: int, now: int) -> None:
        """A message no longer wanted when its delivery came (its customer ordered
        meanwhile): never sent; the row and the customer's trace say why."""
        run(
            conn,
            "UPDATE outbox SET state = :s, status = :s, status_at = :now, error = :r, "
            "checked_at = :at WHERE id = :id",
            {"s": CANCELLED, "now": now, "r": reason, "at": checked_at, "id": row.id},
        )
        event = internal_event(
            row.customer_id,
            "Message Held",
            {**_about(row), "reason": reason, "outcome": CANCELLED},
            now,
            f"msg:{row.id}:{CANCELLED}",
            "system",
        )
        append_events(conn, [[event]], now, self.region, self.hooks)

    def deliver(self, conn: Connection, job: Job) -> None:
        outbox_id = int(job.payload["id"])
        now = self.clock.now_ms()
        row = _row(conn, outbox_id)
        if row is None or row.state not in ("pending", "sending"):
            return  # sent, failed, or cancelled
        checked_at: int | None = None  # a message being sent again keeps its last check
        if row.state == "pending" and self._checks:
            # Not handed over yet: still wanted? (A message being sent is not checked: it
            # may have gone already, and goes again with the same key.)
            checked_at, reason = self._check(conn, row, now)
            if reason is not None:
                self._cancel(conn, row, reason, checked_at, now)
                return
        preparer = preparer_for(self.preparers, row.channel)
        provider = self.providers.for_channel(row.channel)
        route = getattr(provider, "provider_for", None)
        if route is not None and row.address:  # browsers and app devices go different ways
            provider = route(row.address)
        links = self._links(row)
        if row.rendered is None:
            prepared = self._prepare(conn, row, preparer, links, now)
            if prepared is None:
                return  # it cannot go: failed, and the fallback took over
            content, locale = prepared
        else:  # sent before, by a process that died: the very same content again
            content, locale = _decode(row.rendered), row.locale
        attempt = int(row.attempt) + 1
        run(
            conn,
            "UPDATE outbox SET state = 'sending', attempt = :a, lease_until = :lease, "
            "rendered = :r, locale = :l, provider = :p, "
            "checked_at = COALESCE(:checked, checked_at) WHERE id = :id",
            {
                "a": attempt,
                "checked": checked_at,
                "lease": now + self.lease_ms,
                "r": _encode(content).decode(),
                "l": locale,
                "p": provider.name,
                "id": outbox_id,
            },
        )
        # If this process dies before the result is recorded, this job sends again, with
        # the same key, once the lease is over, or as soon as another worker sees that
        # this one is gone (its heartbeat: runtime/heartbeats.py).
        assert self._worker is not None
        enqueue(
            conn,
            DELIVER,
            {"id": outbox_id},
            run_at=now + self.lease_ms,
            now=now,
            queue=QUEUE,
            unique_key=f"deliver:{outbox_id}",
            customer_id=row.customer_id,
            lease_owner=self._worker.lease_owner,
        )
        message = OutgoingMessage(
            key=row.idempotency_key,
            outbox_id=outbox_id,
            customer_id=row.customer_id,
            channel=row.channel,
            purpose=row.purpose,
            address=row.address,
            content=content,
            locale=locale,
            links=links,
            target=preparer.target(conn, row.address),
        )
        self._batch().append(_Sending(message, provider))
        self._worker.after_commit(self._send_batch)

    def _prepare(
        self, conn: Connection, row: Any, preparer: Preparer, links: dict[str, str], now: int
    ) -> tuple[dict[str, Any], str] | None:
        """The message rendered and made ready by its channel's preparer, with its locale;
        None when it cannot go (a rendering error, a closed WhatsApp window): failed."""
        detail = _decode(row.detail)
        try:
            rendered = self._render(conn, row, detail, links)
        except message_templates.TemplateProblem as exc:
            self._failed(conn, row, detail, PermanentFailure(str(exc)), now)
            return None
        content = dict(rendered.fields)
        if detail.get("test") and "subject" in content:
            content["subject"] = f"[TEST] {content['subject']}"
        draft = Draft(row.id, row.customer_id, row.address, content, links, now)
        result = preparer.prepare(conn, draft)
        if isinstance(result, Unsendable):
            self._failed(conn, row, detail, PermanentFailure(result.reason), now)
            return None
        return result.content, rendered.locale

    def _batch(self) -> list[_Sending]:
        if not hasattr(self._local, "batch"):
            self._local.batch = []
        batch: list[_Sending] = self._local.batch
        return batch

    def _render(
        self, conn: Connection, row: Any, detail: dict[str, Any], links: dict[str, str]
    ) -> message_templates.Rendered:
        template = message_templates.get(conn, row.template)
        context = self.context(
            conn,
            row.customer_id,
            row.channel,
            row.purpose,
            detail.get("event") or {},
            links,
        )
        locale = context["customer"].get("locale")
        return message_templates.render(
            template,
            row.channel,
            context,
            locale if isinstance(locale, str) else None,
            self.brand.locale,
        )

    def context(
        self,
        conn: Connection,
        customer_id: int,
        channel: str,
        purpose: str,
        event: dict[str, Any],
        links: dict[str, str],
    ) -> dict[str, Any]:
        """What a template sees (docs/channels.md, "Templates")."""
        traits, computed = customers.traits_view(conn, customer_id)
        if "first_name" not in traits and isinstance(traits.get("firstName"), str):
            traits["first_name"] = traits["firstName"]
        if "last_name" not in traits and isinstance(traits.get("lastName"), str):
            traits["last_name"] = traits["lastName"]
        customer = {**computed, **traits, "id": f"cus_{customer_id}"}
        properties = event.get("properties") or {}
        name = event.get("event") or ""
        order = properties if name.startswith("Order") else None
        return {
            "customer": customer,
            "event": {**event, "event": name, "properties": properties},
            "cart": properties if name in CART_EVENTS else None,
            "order": order,
            "brand": {"name": self.brand.name, "url": self.brand.url},
            "links": {"shop": self.brand.url, **self.links.for_order(order), **links},
            "message": {"channel": channel, "purpose": purpose},
        }

    def preview_context(
        self, conn: Connection, customer_id: int, channel: str, event: dict[str, Any]
    ) -> dict[str, Any]:
        """The context of a preview: a real customer, a sample unsubscribe link."""
        links = {"unsubscribe": self.links.unsubscribe(0, customer_id, channel)}
        return self.context(conn, customer_id, channel, "marketing", event, links)

    def _links(self, row: Any) -> dict[str, str]:
        """Marketing messages carry an unsubscribe link (and email its one-click headers);
        transactional ones do not, since they cannot be unsubscribed from. A test send
        shows the link as the customer would see it."""
        if row.purpose not in ("marketing", "test"):
            return {}
        customer = 0 if row.purpose == "test" else row.customer_id  # 0: a link that does nothing
        return {"unsubscribe": self.links.unsubscribe(row.id, customer, row.channel)}

    # ---- 2. send, after the commit, outside any transaction -----------------------------

    def _send_batch(self) -> None:
        """After the claim has committed: this batch goes to the providers in threads of
        their own while the worker claims and renders the next one; the batch sent
        meanwhile is recorded (the worker waits for its sends first, so at most one batch
        is ever in flight)."""
        batch, self._local.batch = self._batch(), []
        previous = self._take_sends()
        results = previous.results() if previous is not None else []
        self._local.sends = _Sends(batch) if batch else None
        if results:
            self._record_all(results)

    def finish_sends(self) -> bool:
        """Wait for the batch in flight, if any, and record it (the worker calls this
        before it rests)."""
        sends = self._take_sends()
        if sends is None:
            return False
        self._record_all(sends.results())
        return True

    def _record_all(self, results: list[tuple[_Sending, str | DeliveryFailure]]) -> None:
        """Record a batch's outcomes in a transaction of their own. One that PostgreSQL
        fails as a deadlock's victim (a merge of one of its customers: docs/architecture.md,
        "Concurrency on PostgreSQL") or a serialization failure is tried again, whole:
        what the providers said is never lost to it, so no send is made again for it."""
        for attempt in range(RECORD_TRIES):
            try:
                with self.db.write() as conn:
                    self._record(conn, results)
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

    def _take_sends(self) -> _Sends | None:
        sends: _Sends | None = getattr(self._local, "sends", None)
        self._local.sends = None
        return sends

    # ---- 3. record, in a short transaction ---------------------------------------------

    def _record(
        self, conn: Connection, results: list[tuple[_Sending, str | DeliveryFailure]]
    ) -> None:
        """What the providers said about a batch, in one transaction; the `Message Sent`
        events appended together (one pass of the log's door for the batch). The batch's
        customers are locked first, at once and in order (a failure's fallback decides a
        send for its customer), before any row is touched."""
        lock_customers(conn, sorted({s.message.customer_id for s, _ in results}))
        now = self.clock.now_ms()
        rows = {row.id: row for row in _rows(conn, [s.message.outbox_id for s, _ in results])}
        sent: list[Event] = []
        for sending, outcome in results:
            row = rows.get(sending.message.outbox_id)
            if row is None or row.state != "sending":
                continue
            if isinstance(outcome, str):
                sent.append(self._sent(conn, sending, row, outcome, now))
            else:
                self._not_sent(conn, row, outcome, now)
        if sent:
            append_events(conn, [sent], now, self.region, self.hooks)

    def _sent(
        self, conn: Connection, sending: _Sending, row: Any, provider_id: str, now: int
    ) -> Event:
        """The provider took it: the row says so, its lease job goes, the feedback and the
        fallback (if any) are scheduled; the `Message Sent` event is returned."""
        detail = _decode(row.detail)
        run(
            conn,
            "UPDATE outbox SET state = 'sent', provider_message_id = :pid, sent_at = :now, "
            "status = 'sent', status_at = :now, lease_until = NULL, error = NULL "
            "WHERE id = :id",
            {"pid": provider_id, "now": now, "id": row.id},
        )
        cancel(conn, f"deliver:{row.id}")
        feedback = getattr(sending.provider, "feedback", None)
        if feedback is not None:
            for item in feedback(sending.message):
                enqueue(
                    conn,
                    FEEDBACK,
                    {
                        "id": row.id,
                        "status": item.status,
                        "permanent": item.permanent,
                        "reason": item.reason,
                    },
                    run_at=now + item.after_ms,
                    now=now,
                    queue=QUEUE,
                    unique_key=f"feedback:{row.id}:{item.status}",
                    customer_id=row.customer_id,
                )
        after = detail.get("fallback_after")
        if detail.get("rest") and after and RANK[detail.get("success", "sent")] > 1:
            enqueue(
                conn,
                FALLBACK,
                {"id": row.id},
                run_at=now + parse_duration(after).seconds * 1000,
                now=now,
                queue=QUEUE,
                unique_key=f"fallback:{row.id}",
                customer_id=row.customer_id,
            )
        return internal_event(
            row.customer_id,
            EVENT_NAMES["sent"],
            {**_about(row), "provider": sending.provider.name},
            now,
            f"msg:{row.id}:sent",
            "channel",
        )

    def _not_sent(self, conn: Connection, row: Any, outcome: DeliveryFailure, now: int) -> None:
        """A transient failure is tried again later (up to MAX_SEND_ATTEMPTS); anything
        else ends the attempt."""
        detail = _decode(row.detail)
        if isinstance(outcome, TransientFailure) and row.attempt < MAX_SEND_ATTEMPTS:
            run(
                conn,
                "UPDATE outbox SET state = 'pending', error = :e, lease_until = NULL "
                "WHERE id = :id",
                {"e": outcome.reason, "id": row.id},
            )
            enqueue(
                conn,
                DELIVER,
                {"id": row.id},
                run_at=now + backoff_ms(int(row.attempt)),
                now=now,
                queue=QUEUE,
                unique_key=f"deliver:{row.id}",
                customer_id=row.customer_id,
            )
            return
        if isinstance(outcome, TransientFailure):
            outcome = PermanentFailure(
                f"gave up after {row.attempt} attempts: {outcome.reason}",
                soft_bounce=outcome.soft_bounce,  # the receiver's 4xx to the last: one bounce
            )
        self._failed(conn, row, detail, outcome, now)

    def _failed(
        self,
        conn: Connection,
        row: Any,
        detail: dict[str, Any],
        failure: DeliveryFailure,
        now: int,
        source: str | None = None,
    ) -> None:
        run(
            conn,
            "UPDATE outbox SET state = 'failed', status = 'failed', status_at = :now, "
            "error = :e, lease_until = NULL WHERE id = :id",
            {"now": now, "e": failure.reason, "id": row.id},
        )
        cancel(conn, f"deliver:{row.id}")
        cancel(conn, f"fallback:{row.id}")
        # A bad address is barred; an email's soft bounce counted (messaging/suppressions.py).
        suppressions.after_failure(
            conn, self.bounce_rule, row, failure, source or row.provider or "delivery", now
        )
        self._event(
            conn, row, "failed", now, {"permanent": failure.permanent, "reason": failure.reason}
        )
        self.fall_back(conn, row, detail, failure.reason, now)

    # ---- 4. feedback ------------------------------------------------------------------

    def feedback(self, conn: Connection, job: Job) -> None:
        payload = job.payload
        self.status(
            conn,
            int(payload["id"]),
            payload["status"],
            self.clock.now_ms(),
            permanent=bool(payload.get("permanent")),
            reason=payload.get("reason"),
        )

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
        """A provider or a tracking link says how far a message got. A failure ends the
        attempt (and the fallback takes over) when `permanent`; `suppress` also bars the
        address, `soft_bounce` counts a soft bounce against it; `source` says who said
        so. False when the message is unknown."""
        row = _row(conn, outbox_id)
        if row is None:
            return False
        if status == "failed":
            if row.state == "failed":
                return True
            detail = _decode(row.detail)
            failure: DeliveryFailure = (
                PermanentFailure(reason or "failed", suppress=suppress, soft_bounce=soft_bounce)
                if permanent
                else TransientFailure(reason or "failed")
            )
            self._failed(conn, row, detail, failure, now, source)
            return True
        if status not in RANK:
            raise ValueError(f"unknown message status {status!r}")
        self._event(conn, row, status, now, dict(extra or {}))
        if RANK[status] > RANK.get(row.status or "queued", 0):
            # Only ever forward, decided by the row as it is when updated: a read receipt
            # and a delivery report racing each other leave "read", in either order.
            run(
                conn,
                "UPDATE outbox SET status = :s, status_at = :now WHERE id = :id AND "
                f"{_STATUS_RANK_SQL} < :rank",
                {"s": status, "now": now, "id": outbox_id, "rank": RANK[status]},
            )
            detail = _decode(row.detail)
            if RANK[status] >= RANK[detail.get("success", "delivered")]:
                cancel(conn, f"fallback:{outbox_id}")
        return True

    def test_send(
        self,
        conn: Connection,
        template_id: str,
        customer_id: int,
        channel: str,
        to: str,
        event: dict[str, Any],
        now: int,
    ) -> int:
        """Send the template, rendered for a real customer, to the brand's own address,
        outside journeys and policies; it is marked as a test and counts for nothing."""
        template = message_templates.get(conn, template_id)
        if channel not in template.channels():
            raise message_templates.TemplateProblem(
                f"template {template_id!r} has no {channel} content"
            )
        outbox_id = add_intent(
            conn,
            Intent(f"test:{uuid.uuid4().hex}:0", customer_id, channel, template_id, "test"),
            now,
            {"event": event, "test": True, "rest": []},
            to,
        )
        assert outbox_id is not None
        return outbox_id

    def email_report(self, report: Report, source: str) -> None:
        """A bounce or a complaint a provider's webhook reports (Postmark), recorded at
        once; one about no message of ours changes nothing. The webhook is authenticated
        and its message checked against the provider's own id (ingest/channel_callbacks.py):
        the report's message is taken as it names it."""
        now = self.clock.now_ms()
        with self.db.write() as conn:
            skipped = self._email_report(conn, report, now, source, None)
        if skipped is not None:
            log.info("an email %s from %s not acted on: %s", report.kind, source, skipped.reason)

    def email_mail(self, mail: InboundMail) -> None:
        """Mail received on the inbound endpoint: each bounce, complaint or reply in it
        matched to the message it is about, through evidence nobody else can write (a
        signed tag, one of our Message-IDs), and recorded; whatever changes nothing kept
        with its reason, for an admin (`GET /api/inbound-email`). One transaction."""
        now = self.clock.now_ms()
        tags = EmailTags.load(self.db, now)
        with self.db.write() as conn:
            kept: list[tuple[Ignored, Any]] = [
                (item, self._tagged(conn, item.outbox_id, item.tag_mac, tags, now)[0])
                for item in mail.ignored
            ]
            for report in mail.reports:
                skipped = self._email_report(conn, report, now, suppressions.BOUNCE_MESSAGE, tags)
                if skipped is not None:
                    about = skipped.outbox_id
                    kept.append((skipped, _row(conn, about) if about is not None else None))
            for item, row in kept:
                suppressions.record_ignored(
                    conn,
                    suppressions.IgnoredMail(
                        mail.rcpt_to,
                        mail.mail_from,
                        mail.from_address,
                        mail.subject,
                        mail.message_id,
                        item.code,
                        item.reason,
                        customer_id=None if row is None else row.customer_id,
                        outbox_id=None if row is None else row.id,
                    ),
                    now,
                )

    def _email_report(
        self, conn: Connection, report: Report, now: int, source: str, tags: EmailTags | None
    ) -> Ignored | None:
        """Act on one report; what was not acted on, and why, else None. `tags` checks
        what inbound mail claims; None for a provider's authenticated webhook."""
        row, skipped = self._email_message(conn, report, now, tags)
        if row is None:
            return skipped
        if report.kind == "bounce":
            verdict = report.verdict or classify(report.reason)
            if row.state == "failed":
                return Ignored(
                    "already_failed",
                    f"a {verdict.kind} bounce for {public_message_id(row.id)}, which had "
                    "already failed: counted once",
                    row.id,
                )
            if verdict.ours:
                # Our DKIM, SPF, DMARC, sending IP or sender address: the operator's to fix.
                log.warning(
                    "a receiving server refused our sending setup, not the address (%s): %s",
                    public_message_id(row.id),
                    report.reason,
                )
                messaging_metrics.sender_refused(row.provider or source)
                label = f"about our sending setup, not the address: {verdict.cause}"
            else:
                label = f"{verdict.kind} bounce: {verdict.cause}"
            self.status(
                conn,
                row.id,
                "failed",
                now,
                permanent=True,
                suppress=verdict.hard,
                soft_bounce=verdict.counted,
                reason=f"bounce: {report.reason} ({label})",
                source=source,
            )
        elif report.kind == "complaint":
            consent = {
                "channel": "email",
                "purpose": "marketing",
                "status": "withdrawn",
                "source": "spam complaint (feedback loop)",
            }
            self._append(
                conn,
                row.customer_id,
                CONSENT_EVENT,
                consent,
                now,
                f"msg:{row.id}:complaint-consent",
            )
            self._append(
                conn,
                row.customer_id,
                "Message Complained",
                {**_about(row), "feedback": report.diagnostic},
                now,
                f"msg:{row.id}:complained",
            )
        elif report.kind == "reply":
            sender = (report.sender or "").lower()
            known = {value for kind, value in customers.contact_points(conn, row.customer_id)}
            if sender != (row.address or "").lower() and sender not in known:
                return Ignored(
                    "not_the_customer",
                    f"a reply to {public_message_id(row.id)} from {sender or 'no address'}, "
                    "which is not the customer's address: not recorded as theirs",
                    row.id,
                )
            self._append(
                conn,
                row.customer_id,
                "Message Received",
                {
                    "channel": "email",
                    "text": report.text,
                    "from": report.sender,
                    "in_reply_to": public_message_id(row.id),
                },
                now,
                f"msg:{row.id}:reply:{_digest(report.text or '')}",
            )
        return None

    def _email_message(
        self, conn: Connection, report: Report, now: int, tags: EmailTags | None
    ) -> tuple[Any, Ignored | None]:
        """The email a report is about, found only through what nobody but its recipient
        and us can write: its tagged address with a valid MAC (bounces+ID-MAC@,
        reply+ID-MAC@), else one of our Message-IDs it quotes (an HMAC: unguessable). An
        unsigned tag or old Message-ID counts only for a message sent before tags were
        signed and within BOUNCE_MATCH_MS. A tag vouches for its own message only: a
        bounce naming another address is not taken as that message's. The address a
        bounce names is never enough on its own (anyone can write one): the newest email
        to it is named in the record of what was not acted on. (None, why) when no
        message is found."""
        recipient = (report.recipient or "").lower()

        def fits(row: Any) -> bool:
            if row is None or row.channel != "email":
                return False
            return report.kind != "bounce" or not recipient or row.address == recipient

        row, refused = self._tagged(conn, report.outbox_id, report.tag_mac, tags, now)
        if fits(row):
            return row, None
        tagged_elsewhere = row
        if report.original_message_id:
            found = self.find(conn, "smtp", report.original_message_id)
            row = _row(conn, found) if found is not None else None
            if fits(row) and (tags is None or self._trusted_id(row, tags, now)):
                return row, None
        about = f" about {report.recipient}" if report.recipient else ""
        if refused is not None:
            return None, Ignored("bad_tag", f"a {report.kind}{about} not acted on: {refused}", None)
        if report.kind == "bounce" and recipient:
            last = self._last_email_to(conn, recipient, now)
            if last is not None:
                return None, Ignored(
                    "address_only",
                    f"a bounce{about} with neither a valid tag of that message nor one of "
                    f"our Message-IDs: the newest email to that address is "
                    f"{public_message_id(last.id)}, but an address alone can be written by "
                    "anyone, so nothing was counted or barred",
                    last.id,
                )
        if tagged_elsewhere is not None:
            return None, Ignored(
                "other_address",
                f"a bounce{about} sent to the tag of {public_message_id(tagged_elsewhere.id)}"
                ", which went to another address: a tag vouches for its own message only",
                tagged_elsewhere.id,
            )
        return None, Ignored(
            "unknown_message",
            f"a {report.kind}{about} that matches no email of ours (by its tagged "
            "address or the Message-ID it quotes)",
            None,
        )

    def _tagged(
        self,
        conn: Connection,
        outbox_id: int | None,
        mac: str | None,
        tags: EmailTags | None,
        now: int,
    ) -> tuple[Any, str | None]:
        """The email a tag names, when the tag vouches for it (`tags` None: a provider's
        authenticated webhook named it); else None and why not (None: no tag, or no such
        message)."""
        if outbox_id is None:
            return None, None
        if tags is not None and not tags.valid(outbox_id, mac):
            written = f"+{outbox_id}-{mac}@" if mac else f"+{outbox_id}@"
            if mac is not None:
                return None, (
                    f"its tag ({written}) carries a wrong signature: written by someone who "
                    "was not sent that message"
                )
            if not tags.before_signing(outbox_id):
                return None, (
                    f"its tag ({written}) is unsigned, and {public_message_id(outbox_id)} "
                    "went out with a signed one: written by someone who was not sent it"
                )
            row = _row(conn, outbox_id)
            if row is not None and row.channel == "email" and not self._recent(row, now):
                return None, (
                    f"its tag ({written}) is unsigned: such tags, of the messages sent before "
                    "tags were signed, count only within 14 days of the send"
                )
        else:
            row = _row(conn, outbox_id)
        return (row, None) if row is not None and row.channel == "email" else (None, None)

    def _trusted_id(self, row: Any, tags: EmailTags, now: int) -> bool:
        """The Message-ID of this message is evidence: an HMAC, or an old guessable one
        within 14 days of the send."""
        return not tags.before_signing(int(row.id)) or self._recent(row, now)

    @staticmethod
    def _recent(row: Any, now: int) -> bool:
        return row.sent_at is not None and now - int(row.sent_at) <= BOUNCE_MATCH_MS

    def _last_email_to(self, conn: Connection, address: str, now: int) -> Any:
        """The newest email sent to this address within BOUNCE_MATCH_MS, through the
        customers who hold it as their email (indexed reads only): never a profile that
        merely took the address as its userId."""
        email = normalise_email(address)
        holders = customers.customers_with_identity(conn, "email", email) if email else []
        family = [c for holder in holders for c in customers.with_merged(conn, holder)]
        if not family:
            return None
        marks = ", ".join(f":c{n}" for n in range(len(family)))
        found = run(
            conn,
            f"SELECT id FROM outbox WHERE customer_id IN ({marks}) AND channel = 'email' "
            "AND address = :a AND created_at >= :since ORDER BY id DESC LIMIT 1",
            {
                **{f"c{n}": value for n, value in enumerate(family)},
                "a": address,
                "since": now - BOUNCE_MATCH_MS,
            },
        ).scalar()
        return None if found is None else _row(conn, int(found))

    def lift_suppression(
        self, channel: str, address: str, by: str, note: str
    ) -> dict[str, Any] | None:
        """An admin lifts a suppression: the address may be written to again, its soft
        bounces start counting afresh, and a `Suppression Lifted` event on the
        customer's timeline says who did it and why, in the same transaction. What was
        lifted, or None when the address was not suppressed."""
        now = self.clock.now_ms()
        with self.db.write() as conn:
            lifted = suppressions.lift(conn, channel, address, now)
            if lifted is None:
                return None
            customer = lifted["customer"]
            customer_id = int(customer[4:]) if customer else None
            if customer_id is None and channel == "email":
                try:
                    customer_id = customers.resolve(conn, address, self.region)
                except customers.CustomerNotFound:
                    customer_id = None
            if customer_id is not None:
                self._append(
                    conn,
                    customer_id,
                    "Suppression Lifted",
                    {
                        "channel": channel,
                        "address": address,
                        "reason": lifted["reason"],
                        "source": lifted["source"],
                        "suppressed_at": lifted["created_at"],
                        "lifted_by": by,
                        "note": note,
                    },
                    now,
                    f"suppression-lifted:{channel}:{_digest(address)}:{now}",
                )
        log.info(
            "suppression lifted",
            extra={"fields": {"channel": channel, "customer": lifted["customer"], "lifted_by": by}},
        )
        return lifted

    def find(self, conn: Connection, provider: str, provider_message_id: str) -> int | None:
        """The message a provider knows by this id."""
        value = run(
            conn,
            "SELECT id FROM outbox WHERE provider = :p AND provider_message_id = :pid",
            {"p": provider, "pid": provider_message_id},
        ).scalar()
        return None if value is None else int(value)

    def in_flight(self, conn: Connection, channel: str) -> bool:
        """Some message on this channel is being sent, its result not recorded yet."""
        return (
            run(
                conn,
                "SELECT 1 FROM outbox WHERE state = 'sending' AND channel = :ch LIMIT 1",
                {"ch": channel},
            ).first()
            is not None
        )

    def message_of(self, conn: Connection, outbox_id: int) -> dict[str, Any] | None:
        """The provider and its id for a message, to check a callback against."""
        row = _row(conn, outbox_id)
        if row is None:
            return None
        return {
            "provider": row.provider,
            "provider_message_id": row.provider_message_id,
            "channel": row.channel,
            "customer_id": row.customer_id,
        }

    # ---- 5. fallback ------------------------------------------------------------------

    def fallback_due(self, conn: Connection, job: Job) -> None:
        """No success in time (or a fallback held by the policies until now)."""
        row = _row(conn, int(job.payload["id"]))
        if row is None:
            return
        detail = _decode(row.detail)
        now = self.clock.now_ms()
        reason = job.payload.get("reason")
        if reason is None:
            success = detail.get("success", "delivered")
            if row.state == "failed" or RANK.get(row.status or "queued", 0) >= RANK[success]:
                return
            reason = f"not {success} within {detail.get('fallback_after')}"
        self.fall_back(conn, row, detail, reason, now)

    def fall_back(
        self, conn: Connection, row: Any, detail: dict[str, Any], reason: str, now: int
    ) -> None:
        rest = list(detail.get("rest") or [])
        if not rest:
            return
        base, _, number = row.idempotency_key.rpartition(":")
        profile = customers.conditions_view(conn, row.customer_id)
        template = message_templates.get(conn, row.template)
        request = choice.Request(
            row.customer_id,
            row.template,
            row.purpose,
            rest[0],
            tuple(rest[1:]),
            attempts_of=base + ":",
        )
        plan = choice.plan(
            conn,
            self.rules,
            request,
            profile,
            now,
            self.region,
            template=template,
            sector=self.brand.sector,
        )
        properties: dict[str, Any] = {
            "message_id": public_message_id(row.id),
            "from": row.channel,
            "to": plan.channel,
            "reason": reason,
            "passed_over": plan.passed,
        }
        if plan.channel is None:
            messaging_metrics.held(rest[0], plan.passed)
        if plan.channel is None and plan.retry_at is not None:
            properties["until"] = plan.retry_at
            enqueue(
                conn,
                FALLBACK,
                {"id": row.id, "reason": reason},
                run_at=plan.retry_at,
                now=now,
                queue=QUEUE,
                unique_key=f"fallback:{row.id}",
                customer_id=row.customer_id,
            )
        self._append(
            conn,
            row.customer_id,
            "Message Fell Back",
            {**_about(row), **properties},
            now,
            f"msg:{row.id}:fallback:{plan.channel or 'none'}:{now}",
        )
        if plan.channel is None:
            return
        add_intent(
            conn,
            Intent(
                f"{base}:{int(number) + 1}",
                row.customer_id,
                plan.channel,
                row.template,
                row.purpose,
                row.journey_id,
                row.run_id,
                row.step_id,
            ),
            now,
            {**detail, "rest": plan.rest, "fallback_from": public_message_id(row.id)},
            plan.address,
        )

    # ---- events ------------------------------------------------------------------------

    def _event(
        self, conn: Connection, row: Any, status: str, now: int, extra: dict[str, Any]
    ) -> None:
        self._append(
            conn,
            row.customer_id,
            EVENT_NAMES[status],
            {**_about(row), **extra},
            now,
            f"msg:{row.id}:{status}",
        )

    def _append(
        self,
        conn: Connection,
        customer_id: int,
        name: str,
        properties: dict[str, Any],
        now: int,
        message_id: str,
    ) -> None:
        event = internal_event(customer_id, name, properties, now, message_id, "channel")
        append_events(conn, [[event]], now, self.region, self.hooks)


def _send_one(sending: _Sending) -> str | DeliveryFailure:
    try:
        return sending.provider.send(sending.message)
    except DeliveryFailure as failure:
        return failure
    except Exception as exc:  # a provider's bug must not lose the message
        log.exception(
            "provider %s failed on %s",
            sending.provider.name,
            public_message_id(sending.message.outbox_id),
        )
        return TransientFailure(f"provider error: {exc!r}")


class _Sends:
    """A batch being handed to its providers: each provider gets as many threads as it
    has connections, each thread taking the next message as soon as it is done with one
    (no future and hand-off per message, as a thread pool would have)."""

    def __init__(self, batch: list[_Sending]) -> None:
        self.batch = batch
        self.outcomes: list[str | DeliveryFailure | None] = [None] * len(batch)
        by_provider: dict[int, list[int]] = {}
        for index, sending in enumerate(batch):
            by_provider.setdefault(id(sending.provider), []).append(index)
        self.threads = []
        for indexes in by_provider.values():
            turns = iter(indexes)  # next() on a list iterator is atomic: no lock needed
            width = max(1, min(batch[indexes[0]].provider.connections, len(indexes)))
            self.threads += [
                threading.Thread(target=self._send_in_turn, args=(turns,), name="parcours-send")
                for _ in range(width)
            ]
        for thread in self.threads:
            thread.start()

    def _send_in_turn(self, turns: Iterator[int]) -> None:
        for index in turns:
            self.outcomes[index] = _send_one(self.batch[index])

    def results(self) -> list[tuple[_Sending, str | DeliveryFailure]]:
        """Every message with its outcome, once all are sent."""
        for thread in self.threads:
            thread.join()
        results = []
        for sending, outcome in zip(self.batch, self.outcomes, strict=True):
            assert outcome is not None  # _send_one catches everything a provider raises
            results.append((sending, outcome))
        return results


suppress = suppressions.suppress  # messaging/suppressions.py


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_ROW_COLUMNS = (
    "id, idempotency_key, customer_id, journey_id, run_id, step_id, channel, template, "
    "purpose, state, created_at, detail, attempt, provider, provider_message_id, address, "
    "locale, rendered, status, error, sent_at"
)


def _row(conn: Connection, outbox_id: int) -> Any:
    return run(conn, f"SELECT {_ROW_COLUMNS} FROM outbox WHERE id = :id", {"id": outbox_id}).first()


def _rows(conn: Connection, outbox_ids: list[int], columns: str = _ROW_COLUMNS) -> list[Any]:
    """The rows of these messages, as `_row` gives one (or only these columns)."""
    found: list[Any] = []
    for part in chunks(outbox_ids):
        marks = ", ".join(f":id{n}" for n in range(len(part)))
        params = {f"id{n}": outbox_id for n, outbox_id in enumerate(part)}
        found += run(conn, f"SELECT {columns} FROM outbox WHERE id IN ({marks})", params).all()
    return found


def _about(row: Any) -> dict[str, Any]:
    about = {
        "message_id": public_message_id(row.id),
        "channel": row.channel,
        "template": row.template,
        "purpose": row.purpose,
    }
    if row.journey_id:
        about |= {"journey_id": row.journey_id, "run_id": row.run_id, "step": row.step_id}
    return about


def outbox_page(
    conn: Connection, limit: int, before: int | None, customer_ids: list[int] | None = None
) -> list[dict[str, Any]]:
    """The outbox, newest first: what each customer got, as they got it; only what went
    to `customer_ids` when given."""
    conditions = [] if before is None else ["id < :before"]
    params: dict[str, Any] = {"limit": limit, "before": before}
    if customer_ids is not None:
        marks = ", ".join(f":c{n}" for n in range(len(customer_ids)))
        conditions.append(f"customer_id IN ({marks})")
        params |= {f"c{n}": customer_id for n, customer_id in enumerate(customer_ids)}
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = run(
        conn,
        "SELECT id, customer_id, journey_id, step_id, channel, template, purpose, state, "
        "status, status_at, created_at, checked_at, sent_at, provider, address, locale, "
        "rendered, error, attempt, idempotency_key "
        f"FROM outbox{where} ORDER BY id DESC LIMIT :limit",
        params,
    ).all()
    from parcours.runtime.clock import iso

    return [
        {
            "id": public_message_id(r.id),
            "customer": f"cus_{r.customer_id}",
            "journey": r.journey_id,
            "step": r.step_id,
            "channel": r.channel,
            "template": r.template,
            "purpose": r.purpose,
            "state": r.state,
            "status": r.status,
            "status_at": iso(r.status_at),
            "created_at": iso(r.created_at),
            "checked_at": iso(r.checked_at),
            "sent_at": iso(r.sent_at),
            "provider": r.provider,
            "to": r.address,
            "locale": r.locale,
            "content": _decode(r.rendered) if r.rendered else None,
            "error": r.error,
            "attempts": r.attempt,
            "idempotency_key": r.idempotency_key,
        }
        for r in rows
    ]


__all__ = [
    "Brand",
    "Delivery",
    "outbox_page",
    "public_message_id",
    "suppress",
    "whatsapp_form",
]
