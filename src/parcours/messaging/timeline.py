"""What a message's events say on its customer's timeline (`Message Sent` ...
`Message Failed`), how far a message got, and the one call that appends them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import Connection

from parcours.log import Event, Reactions, append_events, internal_event
from parcours.messaging.outbox import public_message_id
from parcours.runtime.db import held

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
# RANK is also written in SQL, in outbox_rows.STATUS_RANK_SQL.


def about(row: Any) -> dict[str, Any]:
    """The properties every event about this outbox row carries."""
    about = {
        "message_id": public_message_id(row.id),
        "channel": row.channel,
        "template": row.template,
        "purpose": row.purpose,
    }
    if row.journey_id:
        about |= {"journey_id": row.journey_id, "run_id": row.run_id, "step": row.step_id}
    return about


def in_history(row: Any) -> bool:
    """Whether a message's events go on its customer's timeline: every message's do but
    those of a test sent to the brand's own address with `history=False` (the console's
    test sends: Delivery.test_send), which only borrowed the customer's data."""
    if row.purpose != "test":
        return True
    return msgspec.json.decode(row.detail).get("history", True) is not False


def digest(text: str) -> str:
    """A short stable digest, for the message ids of events about a text or an address."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_HELD_EVENTS = "messaging.timeline"


class _HeldEvents:
    """The messages' events a set holds, appended in one pass of the log's door."""

    def __init__(self, reactions: Reactions) -> None:
        self.reactions = reactions
        self.events: list[Event] = []
        self.now = 0

    def write(self, conn: Connection) -> None:
        append_events(conn, [self.events], self.now, self.reactions)


@dataclass(frozen=True)
class Timeline:
    """Appends the events of messages through the log's door, in the caller's transaction."""

    region: str
    reactions: Reactions  # what reacts to an append (log/reactions.py)

    def append(
        self,
        conn: Connection,
        customer_id: int,
        name: str,
        properties: dict[str, Any],
        now: int,
        message_id: str,
        source: str = "channel",
    ) -> None:
        event = internal_event(customer_id, name, properties, now, message_id, source)
        self.append_all(conn, [event], now)

    def append_all(self, conn: Connection, events: list[Event], now: int) -> None:
        """These events in one pass of the log's door. While a set of jobs (or a batch of
        sends recorded) holds its writes, they join the set's, appended in one pass at its
        end: a pass costs about six statements however many events it carries."""
        later = held(conn, _HELD_EVENTS, lambda: _HeldEvents(self.reactions))
        if later is not None:
            later.events += events
            later.now = max(later.now, now)
            return
        append_events(conn, [events], now, self.reactions)

    def status(
        self, conn: Connection, row: Any, status: str, now: int, extra: dict[str, Any]
    ) -> None:
        """The event of a status a message reached (`Message Delivered` ...)."""
        if not in_history(row):
            return
        self.append(
            conn,
            row.customer_id,
            EVENT_NAMES[status],
            {**about(row), **extra},
            now,
            f"msg:{row.id}:{status}",
        )


__all__ = ["EVENT_NAMES", "RANK", "Timeline", "about", "digest", "in_history"]
