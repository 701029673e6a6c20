"""Appending to the log: the one door for every event, Parcours' own included.

`append_events` stores a group's new events in the caller's transaction, deduplicated by
message id, has their customers resolved and their profiles projected (docs/core.md), then
calls the reactions registered for an append (log/reactions.py: journeys, segments,
referrals...) in the same transaction.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection

from parcours.log.event import Event
from parcours.log.queries import insert_events, stored_message_ids
from parcours.log.reactions import Identities, Reactions
from parcours.runtime.db import lock_keys, sql_ahead


@dataclass(frozen=True)
class AppendResult:
    stored: int
    duplicates: int


class Appender(Protocol):
    """What takes events from a transport (the tracking API, Shopify, a provider's
    callback, bulk import) to `append_events`: the writer (ingest/writer.py)."""

    def submit(self, events: list[Event]) -> Future[AppendResult]: ...

    async def append(self, events: list[Event]) -> AppendResult: ...

    def append_sync(self, events: list[Event]) -> AppendResult: ...


def append_events(
    conn: Connection,
    group: list[list[Event]],
    now_ms: int,
    reactions: Reactions,
) -> tuple[list[AppendResult], list[Event]]:
    """Append the group's new events and project them, in the caller's transaction.

    The one door into the log: the writer thread calls it for the API, and the journey
    engine calls it inside its own transactions for the events it emits. System events
    (source "system", customer already known) are logged but change no profile.
    """
    if len(group) == 1 and all(
        e.source == "system" and e.customer_id is not None for e in group[0]
    ):
        # Parcours' own decisions: unique ids by construction, about a known customer,
        # changing no profile. Nothing to deduplicate, resolve or project; the reactions
        # still see them (a journey may enter on a segment entry).
        insert_events(conn, group[0])
        for hook in reactions:
            hook(conn, group[0], now_ms)
        return [AppendResult(len(group[0]), 0)], group[0]
    if reactions.identities is None:
        raise RuntimeError(
            "events from outside Parcours need their customers resolved: append them with "
            "the Reactions the composition root made (Reactions(identities=...))"
        )
    first_by_id: dict[str, tuple[int, Event]] = {}
    for index, events in enumerate(group):
        for event in events:
            first_by_id.setdefault(event.message_id, (index, event))
    projector = reactions.identities(conn, now_ms)
    for statement in reactions.reads_ahead:
        sql_ahead(conn, statement)  # the writer's: with its first statement
    if conn.dialect.name != "sqlite":  # SQLite: BEGIN IMMEDIATE already serialises writers
        lock_keys(conn, _lock_keys(projector, [event for _, event in first_by_id.values()]))
    # The writer's: who owns the events' identities, read with the check of their ids
    # (resolving reads again if some are stored already).
    projector.read_ahead([event for _, event in first_by_id.values()])
    existing = stored_message_ids(conn, list(first_by_id))
    new = [(i, e) for message_id, (i, e) in first_by_id.items() if message_id not in existing]
    new_events = [event for _, event in new]
    if new_events:
        produced = projector.resolve(new_events)
        insert_events(conn, new_events + produced)
        projector.project([e for e in new_events if e.source != "system"])
        for hook in reactions:
            hook(conn, new_events + produced, now_ms)
    counts = [0] * len(group)
    for index, _ in new:
        counts[index] += 1
    results = [
        AppendResult(stored=counts[i], duplicates=len(events) - counts[i])
        for i, events in enumerate(group)
    ]
    return results, new_events


def _lock_keys(projector: Identities, events: list[Event]) -> set[str]:
    """The identity keys these events may touch, each once (a shopper's events repeat
    theirs, and each key is hashed to its lock)."""
    keys: set[str] = set()
    for event in events:
        keys.update(f"{kind}:{value}" for kind, value in projector.keys_of(event))
        if event.previous_id:
            keys.add(f"user_id:{event.previous_id}")
            keys.add(f"anonymous_id:{event.previous_id}")
    return keys
