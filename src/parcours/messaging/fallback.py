"""Fallback: the next channel of a message's chain, planned like the first, when the
attempt failed for good or did not reach its success in time (docs/channels.md)."""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import Connection

from parcours.customers import profiles as customers
from parcours.messaging import choice, policies
from parcours.messaging import metrics as messaging_metrics
from parcours.messaging import templates as message_templates
from parcours.messaging.outbox import QUEUE, Intent, add_intent, public_message_id
from parcours.messaging.outbox_rows import row as outbox_row
from parcours.messaging.timeline import RANK, Timeline, about
from parcours.runtime.clock import Clock
from parcours.runtime.queue import Job, enqueue

FALLBACK = "messaging.fallback"

_decode = msgspec.json.Decoder().decode


class Fallback:
    def __init__(
        self, clock: Clock, rules: policies.Policies, sector: str, timeline: Timeline
    ) -> None:
        self.clock = clock
        self.rules = rules
        self.sector = sector  # the brand's, which ranks the channels of `best`
        self.timeline = timeline

    def due(self, conn: Connection, job: Job) -> None:
        """No success in time (or a fallback held by the policies until now)."""
        row = outbox_row(conn, int(job.payload["id"]))
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
        """The next channel of the chain gets the message, or waits for the policies to
        allow it; `Message Fell Back` says why, and where it went."""
        rest = list(detail.get("rest") or [])
        if not rest:
            return
        base, _, number = row.idempotency_key.rpartition(":")
        plan = self._plan(conn, row, rest, base, now)
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
            self._try_again_at(conn, row, reason, plan.retry_at, now)
        self.timeline.append(
            conn,
            row.customer_id,
            "Message Fell Back",
            {**about(row), **properties},
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

    def _plan(
        self, conn: Connection, row: Any, rest: list[str], base: str, now: int
    ) -> choice.Plan:
        """The rest of the chain, planned as a send step's channels are."""
        request = choice.Request(
            row.customer_id,
            row.template,
            row.purpose,
            rest[0],
            tuple(rest[1:]),
            attempts_of=base + ":",
        )
        return choice.plan(
            conn,
            self.rules,
            request,
            customers.conditions_view(conn, row.customer_id),
            now,
            self.timeline.region,
            template=message_templates.get(conn, row.template),
            sector=self.sector,
        )

    def _try_again_at(self, conn: Connection, row: Any, reason: str, at: int, now: int) -> None:
        """Every channel left is held by the policies until `at`: the fallback waits."""
        enqueue(
            conn,
            FALLBACK,
            {"id": row.id, "reason": reason},
            run_at=at,
            now=now,
            queue=QUEUE,
            unique_key=f"fallback:{row.id}",
            customer_id=row.customer_id,
        )


__all__ = ["FALLBACK", "Fallback"]
