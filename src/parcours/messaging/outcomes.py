"""What happened to a message, recorded: what the providers said about a batch of sends,
then their feedback (delivered, opened, failed ...), each as the row's state and an event
on the customer's timeline; a failure for good hands the message to the fallback."""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import Connection

from parcours.channels import DeliveryFailure, PermanentFailure, TransientFailure
from parcours.log import Event, internal_event
from parcours.messaging import outbox_rows, suppressions
from parcours.messaging.fallback import FALLBACK, Fallback
from parcours.messaging.outbox import DELIVER, QUEUE
from parcours.messaging.sending import Outcome, Sending
from parcours.messaging.timeline import EVENT_NAMES, RANK, Timeline, about, in_history
from parcours.runtime.clock import Clock
from parcours.runtime.definitions import parse_duration
from parcours.runtime.queue import Job, backoff_ms, cancel, enqueue, lock_customers

FEEDBACK = "messaging.feedback"
MAX_SEND_ATTEMPTS = 8

_decode = msgspec.json.Decoder().decode


class Outcomes:
    def __init__(
        self,
        clock: Clock,
        timeline: Timeline,
        fallback: Fallback,
        bounce_rule: suppressions.BounceRule,
    ) -> None:
        self.clock = clock
        self.timeline = timeline
        self.fallback = fallback
        self.bounce_rule = bounce_rule

    # ---- what the providers said about a batch ------------------------------------------

    def record(self, conn: Connection, results: list[tuple[Sending, Outcome]]) -> None:
        """What the providers said about a batch, in one transaction; the `Message Sent`
        events appended together (one pass of the log's door for the batch). The batch's
        customers are locked first, at once and in order (a failure's fallback decides a
        send for its customer), before any row is touched."""
        lock_customers(conn, sorted({s.message.customer_id for s, _ in results}))
        now = self.clock.now_ms()
        ids = [s.message.outbox_id for s, _ in results]
        rows = {r.id: r for r in outbox_rows.rows(conn, ids)}
        sent: list[Event] = []
        for sending, outcome in results:
            row = rows.get(sending.message.outbox_id)
            if row is None or row.state != "sending":
                continue
            if isinstance(outcome, str):
                event = self._sent(conn, sending, row, outcome, now)
                if in_history(row):
                    sent.append(event)
            else:
                self._not_sent(conn, row, outcome, now)
        if sent:
            self.timeline.append_all(conn, sent, now)

    def _sent(
        self, conn: Connection, sending: Sending, row: Any, provider_id: str, now: int
    ) -> Event:
        """The provider took it: the row says so, its lease job goes, the feedback and the
        fallback (if any) are scheduled; the `Message Sent` event is returned."""
        detail = _decode(row.detail)
        outbox_rows.mark_sent(conn, row.id, provider_id, now)
        cancel(conn, f"deliver:{row.id}")
        self._schedule_feedback(conn, sending, row, now)
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
            {**about(row), "provider": sending.provider.name},
            now,
            f"msg:{row.id}:sent",
            "channel",
        )

    def _schedule_feedback(self, conn: Connection, sending: Sending, row: Any, now: int) -> None:
        """A provider that simulates feedback (the sandbox) says what comes back, and when."""
        feedback = getattr(sending.provider, "feedback", None)
        if feedback is None:
            return
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

    def _not_sent(self, conn: Connection, row: Any, outcome: DeliveryFailure, now: int) -> None:
        """A transient failure is tried again later (up to MAX_SEND_ATTEMPTS); anything
        else ends the attempt."""
        detail = _decode(row.detail)
        if isinstance(outcome, TransientFailure) and row.attempt < MAX_SEND_ATTEMPTS:
            outbox_rows.mark_pending_again(conn, row.id, outcome.reason)
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
        self.failed(conn, row, detail, outcome, now)

    def failed(
        self,
        conn: Connection,
        row: Any,
        detail: dict[str, Any],
        failure: DeliveryFailure,
        now: int,
        source: str | None = None,
    ) -> None:
        """The attempt ends: the row and the timeline say why, a bad address is barred,
        and the next channel of the chain (if any) takes over."""
        outbox_rows.mark_failed(conn, row.id, failure.reason, now)
        cancel(conn, f"deliver:{row.id}")
        cancel(conn, f"fallback:{row.id}")
        # A bad address is barred; an email's soft bounce counted (messaging/suppressions.py).
        suppressions.after_failure(
            conn, self.bounce_rule, row, failure, source or row.provider or "delivery", now
        )
        self.timeline.status(
            conn, row, "failed", now, {"permanent": failure.permanent, "reason": failure.reason}
        )
        self.fallback.fall_back(conn, row, detail, failure.reason, now)

    # ---- feedback ------------------------------------------------------------------------

    def feedback(self, conn: Connection, job: Job) -> None:
        """The feedback a provider simulates, played back when it is due."""
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
        row = outbox_rows.row(conn, outbox_id)
        if row is None:
            return False
        if status == "failed":
            if row.state == "failed":
                return True
            failure: DeliveryFailure = (
                PermanentFailure(reason or "failed", suppress=suppress, soft_bounce=soft_bounce)
                if permanent
                else TransientFailure(reason or "failed")
            )
            self.failed(conn, row, _decode(row.detail), failure, now, source)
            return True
        if status not in RANK:
            raise ValueError(f"unknown message status {status!r}")
        self.timeline.status(conn, row, status, now, dict(extra or {}))
        if RANK[status] > RANK.get(row.status or "queued", 0):
            self._move_forward(conn, row, status, now)
        return True

    def _move_forward(self, conn: Connection, row: Any, status: str, now: int) -> None:
        """Only ever forward, decided by the row as it is when updated: a read receipt and
        a delivery report racing each other leave "read", in either order. Success
        reached: no fallback."""
        outbox_rows.move_status_forward(conn, row.id, status, RANK[status], now)
        detail = _decode(row.detail)
        if RANK[status] >= RANK[detail.get("success", "delivered")]:
            cancel(conn, f"fallback:{row.id}")


__all__ = ["FEEDBACK", "MAX_SEND_ATTEMPTS", "Outcomes"]
