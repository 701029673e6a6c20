"""What one job of the journey engine has decided and read, kept per thread until the job
ends: its log lines and step counts (written together, in the job's transaction, so a
failed job leaves none behind), the profiles and goal events it read, and what the batch
of step jobs it belongs to read beforehand. Anything the job changes drops what was read
of it, so a step never acts on a run or a profile older than its own last change."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
from sqlalchemy import Connection

from parcours.customers import profiles as customers
from parcours.journeys import store
from parcours.journeys.runs import ACTS, LoggedEvent, Run, acted
from parcours.log import QUIET, Event, Reactions, append_events
from parcours.messaging import choice
from parcours.runtime.db import held, release_held

_encode = msgspec.json.Encoder().encode


@dataclass
class EndingLog:
    """The events that may end runs (goals and exits by these names) of these customers,
    dated from `since`, read for all of them in one query when the first is needed: after
    `as_of`, so everything stored before that moment is in it."""

    customers: set[int]
    names: frozenset[str]
    since: int
    as_of: int
    rows: dict[int, list[LoggedEvent]] | None = None  # None: not read yet

    def covers(self, customer: int, names: frozenset[str], since: int, now: int) -> bool:
        return (
            customer in self.customers
            and names <= self.names
            and since >= self.since
            and now <= self.as_of
        )

    def forget(self, customer: int) -> None:
        """An event about this customer was appended since: read theirs again."""
        self.customers.discard(customer)
        if self.rows is not None:
            self.rows.pop(customer, None)


@dataclass
class Batch:
    """What the engine read before a batch of step jobs, valid on its connection only."""

    conn: Connection
    runs: dict[int, tuple[Run, str]]
    profiles: dict[int, dict[str, Any]]
    now: int = 0  # the moment the batch looked: its steps act as of it
    ending: EndingLog | None = None


@dataclass
class _Pending:
    """One thread's job: decided, not yet written, and read once."""

    depth: int = 0
    events: list[Event] = field(default_factory=list)
    visits: list[tuple[str, int, str, str, int, int]] = field(default_factory=list)
    profiles: dict[int, dict[str, Any]] = field(default_factory=dict)
    ending: EndingLog | None = None  # a reaction's customers' goal and exit events
    # (journey, version, customer, reason) -> [count, at]: refused entries, counted
    refusals: dict[tuple[str, int, int, str], list[int]] = field(default_factory=dict)
    batch: Batch | None = None


class Journal:
    def __init__(self, region: str) -> None:
        self.region = region
        self.reactions = QUIET  # what a journey emits goes through every reaction
        self._local = threading.local()
        self._sequence = 0

    # ---- the job ------------------------------------------------------------------------

    @contextmanager
    def job(self, conn: Connection) -> Iterator[None]:
        """Around each handler: the job's log lines are written when it ends, in its
        transaction; a handler that fails leaves nothing behind (its savepoint is rolled
        back, and so is what it had not written yet)."""
        state = self.pending()
        state.depth += 1
        try:
            yield
            if state.depth == 1:
                self.flush(conn)
        finally:
            state.depth -= 1
            if state.depth == 0:
                state.events, state.visits, state.profiles = [], [], {}
                state.ending = None
                state.refusals = {}

    def pending(self) -> _Pending:
        state: _Pending | None = getattr(self._local, "pending", None)
        if state is None:
            state = self._local.pending = _Pending()
        return state

    def batch(self, conn: Connection) -> Batch | None:
        """What was read for the batch running on this connection, if any."""
        batch = self.pending().batch
        return batch if batch is not None and batch.conn is conn else None

    def flush(self, conn: Connection) -> None:
        """Write the pending log lines: one insert for the counts, one append for the
        events (Parcours' own, about known customers: the log's fast path). While a batch
        of steps holds its writes, they join the batch's, written once at its end."""
        state = self.pending()
        later = held(conn, _HELD_LOG, _HeldLog)
        if later is not None:
            later.visits += state.visits
            later.refusals += [(*counted, n, at) for counted, (n, at) in state.refusals.items()]
            later.events += state.events
            state.visits, state.refusals, state.events = [], {}, []
            return
        if state.visits:
            store.insert_visits(conn, state.visits)
            state.visits = []
        if state.refusals:
            store.insert_refusals(
                conn, [(*counted, n, at) for counted, (n, at) in state.refusals.items()]
            )
            state.refusals = {}
        if state.events:
            events, state.events = state.events, []
            append_events(conn, [events], events[-1].received_at, QUIET)

    # ---- what a job read ------------------------------------------------------------------

    def forget_run(self, conn: Connection, run: Run) -> None:
        """A run written: what the batch read of it beforehand is out of date."""
        batch = self.batch(conn)
        if batch is not None:
            batch.runs.pop(run.id, None)

    def profile(self, conn: Connection, customer: int) -> dict[str, Any]:
        """The customer as conditions see them, read once per job (or per batch)."""
        state = self.pending()
        if state.depth == 0:
            return customers.conditions_view(conn, customer)
        profile = state.profiles.get(customer)
        if profile is None:
            batch = self.batch(conn)
            profile = batch.profiles.get(customer) if batch is not None else None
            if profile is None:
                profile = customers.conditions_view(conn, customer)
            state.profiles[customer] = profile
        return profile

    def ending_events(
        self, conn: Connection, customer: int, names: frozenset[str], since: int, now: int
    ) -> list[LoggedEvent]:
        """The customer's events that may end a run, oldest first: from what the batch (or
        the reaction) read for all its customers at once when it covers the run and this
        moment, else read for this customer alone."""
        batch = self.batch(conn)
        for log in (self.pending().ending, batch.ending if batch is not None else None):
            if log is not None and log.covers(customer, names, since, now):
                if log.rows is None:
                    log.rows = store.ending_events(conn, log.customers, log.names, log.since)
                return log.rows.get(customer, [])
        return store.ending_events(conn, {customer}, names, since).get(customer, [])

    def appended(self, conn: Connection, events: list[Event]) -> None:
        """Events were appended in this transaction: what was read of their customers
        (profiles, goal and exit events) is read again when next needed."""
        batch = self.batch(conn)
        if batch is not None:
            for event in events:
                if event.source != "system" and event.customer_id is not None:
                    batch.profiles.pop(event.customer_id, None)
        for log in (batch.ending if batch is not None else None, self.pending().ending):
            if log is not None:  # a goal appended in this transaction is read again
                for event in events:
                    if event.customer_id is not None and event.name in log.names:
                        log.forget(event.customer_id)

    # ---- writing ----------------------------------------------------------------------------

    def log(self, conn: Connection, run: Run, name: str, now: int, details: dict[str, Any]) -> None:
        """Record a decision with its reason (written with the job's other log lines)."""
        if name in ACTS:
            acted(run)
        if "step" in details:
            self.pending().visits.append(
                (
                    run.journey_id,
                    run.version,
                    details["step"],
                    visit_outcome(name, details),
                    run.id,
                    now,
                )
            )
        self.append(conn, run, now, "track", name, {"properties": details}, source="system")

    def append(
        self,
        conn: Connection,
        run: Run,
        now: int,
        kind: str,
        name: str | None,
        body: dict[str, Any],
        *,
        source: str,
    ) -> None:
        """Append an event about this run to the log, in this transaction (the one door):
        a log line (`source="system"`) waits for the job's end; what the journey emits
        goes in at once, through every reaction."""
        if source != "system":
            acted(run)
        self._sequence += 1
        properties = dict(body.get("properties", {}))
        properties.setdefault("journey_id", run.journey_id)
        properties.setdefault("run_id", run.id)
        document: dict[str, Any] = {"type": kind, **body, "properties": properties}
        if name:
            document["event"] = name
        message_id = f"journey:{run.id}:{run.pc}:{name or kind}:{now}:{self._sequence}"
        document["messageId"] = message_id
        event = system_event(
            run.customer_id,
            message_id,
            kind,
            name,
            properties,
            body.get("traits", {}),
            now,
            document,
            source,
        )
        self.add(conn, event, now, reactions=QUIET if source == "system" else self.reactions)

    def add(
        self, conn: Connection, event: Event, now: int, *, reactions: Reactions = QUIET
    ) -> None:
        """A log line is kept for the job's end; an event with reactions goes in now."""
        state = self.pending()
        if not reactions and event.source == "system" and state.depth > 0:
            state.events.append(event)
            return
        # What the journey emits may start or move other journeys, change a segment, and
        # change the profile: earlier log lines go first (and whatever the batch holds),
        # and the profile is read again.
        self.flush(conn)
        release_held(conn)
        append_events(conn, [[event]], now, reactions)
        state.profiles.clear()


def visit_outcome(name: str, details: dict[str, Any]) -> str:
    """What a step visit records: the decision's name, and for a branch its arm, for a
    split its path, for a held message the kind of its reason (`Message Held: consent`),
    so that the step's counts say which way runs went and why messages were held."""
    if name == "Journey Branched":
        return f"{name}: {details.get('arm')}"
    if name == "Journey Split":
        return f"{name}: {details.get('path')}"
    if name == "Message Held":
        passed = details.get("passed_over") or []
        reasons = [str(p.get("reason", "")) for p in passed if isinstance(p, dict)]
        kinds = sorted({choice.reason_kind(r) for r in reasons or [str(details.get("reason"))]})
        return f"{name}: {'+'.join(kinds)}"
    return name


_HELD_LOG = "journeys.log"


class _HeldLog:
    """The log lines and step counts of a batch of steps, written at its end: an insert
    for the counts, one for the refusals, one append for the events."""

    def __init__(self) -> None:
        self.visits: list[tuple[str, int, str, str, int, int]] = []
        self.refusals: list[tuple[str, int, int, str, int, int]] = []
        self.events: list[Event] = []

    def write(self, conn: Connection) -> None:
        store.insert_visits(conn, self.visits)
        store.insert_refusals(conn, self.refusals)
        if self.events:
            now = max(event.received_at for event in self.events)
            append_events(conn, [self.events], now, QUIET)


def system_event(
    customer: int,
    message_id: str,
    kind: str,
    name: str | None,
    properties: dict[str, Any],
    traits: dict[str, Any],
    now: int,
    document: dict[str, Any],
    source: str = "system",
) -> Event:
    """An event Parcours writes about a known customer."""
    return Event(
        message_id=message_id,
        type=kind,
        name=name,
        user_id=None,
        anonymous_id=None,
        properties=properties,
        traits=traits,
        context={},
        occurred_at=now,
        received_at=now,
        timestamp=None,
        sent_at=None,
        source=source,
        payload=_encode(document).decode(),
        customer_id=customer,
    )
