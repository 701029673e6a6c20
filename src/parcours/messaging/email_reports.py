"""Bounces, complaints and replies, each matched to the email it is about through
evidence nobody else can write (a signed tag, one of our Message-IDs), then recorded;
what changes nothing is kept with its reason for an admin (docs/channels.md)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Connection, select

from parcours.channels import EmailTags, Ignored, InboundMail, Report, classify
from parcours.customers import CONSENT_EVENT, normalise_email
from parcours.customers import profiles as customers
from parcours.messaging import metrics as messaging_metrics
from parcours.messaging import suppressions
from parcours.messaging.outbox import public_message_id
from parcours.messaging.outbox_rows import find
from parcours.messaging.outbox_rows import row as outbox_row
from parcours.messaging.outcomes import Outcomes
from parcours.messaging.tables import outbox
from parcours.messaging.timeline import Timeline, about, digest
from parcours.runtime.clock import Clock
from parcours.runtime.db import Database

log = logging.getLogger(__name__)

# How long after its send a message's unsigned tag or old Message-ID still counts (for
# the messages sent before tags were signed; mail servers give up after five days at
# most), and how far back the newest email to an address is named for an admin.
BOUNCE_MATCH_MS = 14 * 24 * 3600_000


class EmailReports:
    def __init__(self, db: Database, clock: Clock, outcomes: Outcomes, timeline: Timeline) -> None:
        self.db = db
        self.clock = clock
        self.outcomes = outcomes
        self.timeline = timeline

    def report(self, report: Report, source: str) -> None:
        """A bounce or a complaint a provider's webhook reports (Postmark), recorded at
        once; one about no message of ours changes nothing. The webhook is authenticated
        and its message checked against the provider's own id (ingest/channel_callbacks.py):
        the report's message is taken as it names it."""
        now = self.clock.now_ms()
        with self.db.write() as conn:
            skipped = self._act(conn, report, now, source, None)
        if skipped is not None:
            log.info("an email %s from %s not acted on: %s", report.kind, source, skipped.reason)

    def mail(self, mail: InboundMail) -> None:
        """Mail received on the inbound endpoint: each bounce, complaint or reply in it
        matched to the message it is about, and recorded; whatever changes nothing kept
        with its reason, for an admin (`GET /api/inbound-email`). One transaction."""
        now = self.clock.now_ms()
        tags = EmailTags.load(self.db, now)
        with self.db.write() as conn:
            kept: list[tuple[Ignored, Any]] = [
                (item, self._tagged(conn, item.outbox_id, item.tag_mac, tags, now)[0])
                for item in mail.ignored
            ]
            for report in mail.reports:
                skipped = self._act(conn, report, now, suppressions.BOUNCE_MESSAGE, tags)
                if skipped is not None:
                    about = skipped.outbox_id
                    kept.append((skipped, outbox_row(conn, about) if about is not None else None))
            for item, row in kept:
                suppressions.record_ignored(conn, _ignored_mail(mail, item, row), now)

    def _act(
        self, conn: Connection, report: Report, now: int, source: str, tags: EmailTags | None
    ) -> Ignored | None:
        """Act on one report; what was not acted on, and why, else None. `tags` checks
        what inbound mail claims; None for a provider's authenticated webhook."""
        row, skipped = self._message(conn, report, now, tags)
        if row is None:
            return skipped
        if report.kind == "bounce":
            return self._bounce(conn, report, row, now, source)
        if report.kind == "complaint":
            self._complaint(conn, report, row, now)
        elif report.kind == "reply":
            return self._reply(conn, report, row, now)
        return None

    def _bounce(
        self, conn: Connection, report: Report, row: Any, now: int, source: str
    ) -> Ignored | None:
        """The message failed for good: a hard bounce bars the address, a soft one counts
        against it; one about our own sending setup is the operator's to fix."""
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
        self.outcomes.status(
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
        return None

    def _complaint(self, conn: Connection, report: Report, row: Any, now: int) -> None:
        """A spam complaint withdraws the customer's marketing consent for email."""
        consent = {
            "channel": "email",
            "purpose": "marketing",
            "status": "withdrawn",
            "source": "spam complaint (feedback loop)",
        }
        self.timeline.append(
            conn, row.customer_id, CONSENT_EVENT, consent, now, f"msg:{row.id}:complaint-consent"
        )
        self.timeline.append(
            conn,
            row.customer_id,
            "Message Complained",
            {**about(row), "feedback": report.diagnostic},
            now,
            f"msg:{row.id}:complained",
        )

    def _reply(self, conn: Connection, report: Report, row: Any, now: int) -> Ignored | None:
        """A reply from the customer's own address goes on their timeline."""
        sender = (report.sender or "").lower()
        known = {value for kind, value in customers.contact_points(conn, row.customer_id)}
        if sender != (row.address or "").lower() and sender not in known:
            return Ignored(
                "not_the_customer",
                f"a reply to {public_message_id(row.id)} from {sender or 'no address'}, "
                "which is not the customer's address: not recorded as theirs",
                row.id,
            )
        self.timeline.append(
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
            f"msg:{row.id}:reply:{digest(report.text or '')}",
        )
        return None

    def _message(
        self, conn: Connection, report: Report, now: int, tags: EmailTags | None
    ) -> tuple[Any, Ignored | None]:
        """The email a report is about, found only through what nobody but its recipient
        and us can write: its tagged address with a valid MAC (bounces+ID-MAC@,
        reply+ID-MAC@), else one of our Message-IDs it quotes (an HMAC: unguessable). An
        unsigned tag or old Message-ID counts only for a message sent before tags were
        signed and within BOUNCE_MATCH_MS. A tag vouches for its own message only: a
        bounce naming another address is not taken as that message's. (None, why) when
        no message is found."""
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
            found = find(conn, "smtp", report.original_message_id)
            row = outbox_row(conn, found) if found is not None else None
            if fits(row) and (tags is None or self._trusted_id(row, tags, now)):
                return row, None
        return None, self._not_found(conn, report, refused, tagged_elsewhere, now)

    def _not_found(
        self, conn: Connection, report: Report, refused: str | None, tagged_elsewhere: Any, now: int
    ) -> Ignored:
        """Why a report names no message of ours. The address a bounce names is never
        enough on its own (anyone can write one): the newest email to it is named in the
        record of what was not acted on."""
        recipient = (report.recipient or "").lower()
        about = f" about {report.recipient}" if report.recipient else ""
        if refused is not None:
            return Ignored("bad_tag", f"a {report.kind}{about} not acted on: {refused}", None)
        if report.kind == "bounce" and recipient:
            last = self.last_email_to(conn, recipient, now)
            if last is not None:
                return Ignored(
                    "address_only",
                    f"a bounce{about} with neither a valid tag of that message nor one of "
                    f"our Message-IDs: the newest email to that address is "
                    f"{public_message_id(last.id)}, but an address alone can be written by "
                    "anyone, so nothing was counted or barred",
                    last.id,
                )
        if tagged_elsewhere is not None:
            return Ignored(
                "other_address",
                f"a bounce{about} sent to the tag of {public_message_id(tagged_elsewhere.id)}"
                ", which went to another address: a tag vouches for its own message only",
                tagged_elsewhere.id,
            )
        return Ignored(
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
            row = outbox_row(conn, outbox_id)
            if row is not None and row.channel == "email" and not _recent(row, now):
                return None, (
                    f"its tag ({written}) is unsigned: such tags, of the messages sent before "
                    "tags were signed, count only within 14 days of the send"
                )
        else:
            row = outbox_row(conn, outbox_id)
        return (row, None) if row is not None and row.channel == "email" else (None, None)

    def _trusted_id(self, row: Any, tags: EmailTags, now: int) -> bool:
        """The Message-ID of this message is evidence: an HMAC, or an old guessable one
        within 14 days of the send."""
        return not tags.before_signing(int(row.id)) or _recent(row, now)

    def last_email_to(self, conn: Connection, address: str, now: int) -> Any:
        """The newest email sent to this address within BOUNCE_MATCH_MS, through the
        customers who hold it as their email (indexed reads only): never a profile that
        merely took the address as its userId."""
        email = normalise_email(address)
        holders = customers.customers_with_identity(conn, "email", email) if email else []
        family = [c for holder in holders for c in customers.with_merged(conn, holder)]
        if not family:
            return None
        newest = (
            select(outbox.c.id)
            .where(
                outbox.c.customer_id.in_(family),
                outbox.c.channel == "email",
                outbox.c.address == address,
                outbox.c.created_at >= now - BOUNCE_MATCH_MS,
            )
            .order_by(outbox.c.id.desc())
            .limit(1)
        )
        found = conn.execute(newest).scalar()
        return None if found is None else outbox_row(conn, int(found))


def _recent(row: Any, now: int) -> bool:
    return row.sent_at is not None and now - int(row.sent_at) <= BOUNCE_MATCH_MS


def _ignored_mail(mail: InboundMail, item: Ignored, row: Any) -> suppressions.NotActedOn:
    """What an admin sees of inbound mail that changed nothing."""
    return suppressions.NotActedOn(
        mail.rcpt_to,
        mail.mail_from,
        mail.from_address,
        mail.subject,
        mail.message_id,
        item.code,
        item.reason,
        customer_id=None if row is None else row.customer_id,
        outbox_id=None if row is None else row.id,
    )


__all__ = ["BOUNCE_MATCH_MS", "EmailReports"]
