"""Whether a message of a journey run is still wanted when delivery claims it: a goal or
an exit of its run in the log (an order, say) cancels it, never sent (docs/channels.md,
"Delivery"; docs/journeys.md, "Nothing goes out after an order")."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from parcours.customers import profiles as customers
from parcours.messaging import outbox_rows
from parcours.messaging.outbox_rows import CANCELLED
from parcours.messaging.policies import consent_refusal
from parcours.messaging.timeline import Timeline, about
from parcours.runtime.clock import Clock
from parcours.runtime.queue import Job

# A check a message must pass when delivery claims it to send: given the batch's messages
# that belong to a journey run and are not yet handed over (outbox rows) and the moment of
# the check, the ids of those no longer wanted, each with its reason. The composition root
# (services.py) registers the journey engine's: messaging does not know about journeys.
SendCheck = Callable[[Connection, list[Any], int], dict[int, str]]


@dataclass
class _Checked:
    """What `before_batch` found for a batch of sends, valid on its connection only."""

    conn: Connection
    at: int  # the moment it looked: what was stored before then is in what it read
    ids: set[int]  # the messages it checked
    unwanted: dict[int, str]  # of those, the ones no longer wanted, and why


class SendChecks:
    def __init__(self, clock: Clock, timeline: Timeline) -> None:
        self.clock = clock
        self.timeline = timeline
        self._checks: list[SendCheck] = []
        self._local = threading.local()

    def add(self, check: SendCheck) -> None:
        self._checks.append(check)

    def before_batch(
        self, conn: Connection, jobs: list[Job], rows: list[Any] | None = None
    ) -> None:
        """Before a batch of sends: whether each message is still wanted, checked for the
        whole batch at once (its rows, read here unless given, then each check in a query
        or two, whatever the batch's size), in the transaction that claimed them (on
        PostgreSQL, holding their customers' locks). Should this fail, each send checks
        its own message."""
        self._local.checked = None
        now = self.clock.now_ms()
        if rows is None:
            rows = outbox_rows.rows(
                conn,
                sorted({int(job.payload["id"]) for job in jobs}),
                "id, customer_id, journey_id, run_id, step_id, state, channel, purpose",
            )
        pending = [row for row in rows if row.state == "pending"]
        self._local.checked = _Checked(
            conn, now, {int(row.id) for row in pending}, self._unwanted(conn, pending, now)
        )

    def when_claimed(self, conn: Connection, row: Any, now: int) -> tuple[int, str | None]:
        """When this message was checked, and why it is no longer wanted (None: it is):
        from the batch's check when it covers it, else checked now on its own."""
        checked: _Checked | None = getattr(self._local, "checked", None)
        if checked is not None and checked.conn is conn and int(row.id) in checked.ids:
            return checked.at, checked.unwanted.get(int(row.id))
        return now, self._unwanted(conn, [row], now).get(int(row.id))

    def _unwanted(self, conn: Connection, rows: list[Any], now: int) -> dict[int, str]:
        """Of these messages, those no longer wanted, and why: the customer's consent in
        force now does not let it go (withdrawn since it was decided: a withdrawal stored
        before the hand-over wins, in one query for the batch), or a registered check
        says so (a goal of its run)."""
        unwanted: dict[int, str] = {}
        judged = [row for row in rows if row.purpose != "test"]
        if judged:
            consents = customers.consents_in_force(conn, [int(row.customer_id) for row in judged])
            for row in judged:
                refused = consent_refusal(consents[int(row.customer_id)], row.channel, row.purpose)
                if refused is not None:
                    unwanted[int(row.id)] = refused
        runs = [row for row in rows if row.run_id is not None]
        for check in self._checks if runs else ():
            for outbox_id, reason in check(conn, runs, now).items():
                unwanted.setdefault(outbox_id, reason)
        return unwanted

    def cancel(self, conn: Connection, row: Any, reason: str, checked_at: int, now: int) -> None:
        """A message no longer wanted when its delivery came (its customer ordered
        meanwhile): never sent; the row and the customer's trace say why."""
        outbox_rows.mark_cancelled(conn, row.id, reason, checked_at, now)
        self.timeline.append(
            conn,
            row.customer_id,
            "Message Held",
            {**about(row), "reason": reason, "outcome": CANCELLED},
            now,
            f"msg:{row.id}:{CANCELLED}",
            "system",
        )


__all__ = ["SendCheck", "SendChecks"]
