"""The journey engine: enters customers, moves their runs step by step, ends them.

It runs on the durable queue (runtime/queue.py): each active run has at most one live job,
keyed `run:<id>`, so moving a run on replaces its job and ending it deletes the job, in the
same transaction as whatever decided it. The event log's append hook enqueues a
`journeys.react` job for events some live journey listens to, in the transaction that
stored them. See docs/journeys.md for the semantics.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from sqlalchemy import Connection

from parcours.customers import api as customers
from parcours.customers.projection import MERGE_EVENT
from parcours.journeys import api as journeys_api
from parcours.journeys import metrics as journey_metrics
from parcours.journeys import webhooks
from parcours.journeys.definition import Duration, Goal, Journey, WaitUntil, parse_duration
from parcours.journeys.program import (
    Instruction,
    Program,
    compile_journey,
    enters_on,
    entry_event,
    listened_events,
    waited_traits,
)
from parcours.journeys.tables import journey_passes, journey_refusals
from parcours.log import Event, Hook, append_events
from parcours.messaging import choice, subscriptions
from parcours.messaging import metrics as messaging_metrics
from parcours.messaging import templates as message_templates
from parcours.messaging.outbox import (
    Intent,
    add_intent,
    cancel_run_intents,
    public_message_id,
    reassign_intents,
)
from parcours.messaging.policies import Policies, hold_sends
from parcours.runtime.clock import Clock, from_ms, to_ms
from parcours.runtime.conditions import matches, normalise_key, resolve_path, uses_root
from parcours.runtime.db import chunks, insert_rows
from parcours.runtime.db import run as sql
from parcours.runtime.queue import (
    Job,
    Worker,
    cancel,
    enqueue,
    reassign_jobs,
    try_lock_customers,
)
from parcours.segments import api as segments

REACT = "journeys.react"
STEP = "journeys.step"
DATE_ENTRY = "journeys.date_entry"
DATE_SCAN = "journeys.date_scan"
SCAN_CHUNK = 500
QUEUE = "journeys"
MAX_INSTRUCTIONS_PER_JOB = 200
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
REFUSED = "Journey Entry Refused"
DUPLICATE = "duplicate"  # the trigger delivered again: no run, and no refusal either

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


@dataclass
class _Run:
    id: int
    journey_id: str
    version: int
    customer_id: int
    run_key: str
    pc: int
    waiting: str | None
    wait_event: str | None
    wait_key: str | None
    due_at: int | None
    entered_at: int
    entry_event: dict[str, Any]
    entry_message_id: str = ""
    consumed_seq: int | None = None  # the last event a wait_for of this run took
    control: bool = False  # held out by a split: measured, sent nothing
    # The wait_for it last timed out of, and that wait's deadline: an event dated before
    # the deadline that arrives later still takes the event's path, until the run acts.
    race_pc: int | None = None
    race_until: int | None = None
    dirty: bool = False  # moved in memory, not yet written (written once per job)
    has_job: bool | None = None  # whether its step job exists; None: not known


@dataclass
class _Batch:
    """What `prepare_steps` read for a batch of step jobs, valid on its connection only."""

    conn: Connection
    runs: dict[int, tuple[_Run, str]]
    profiles: dict[int, dict[str, Any]]
    now: int = 0  # the moment the batch looked: its steps act as of it
    ending: _EndingLog | None = None


@dataclass
class _EndingLog:
    """The events that may end runs (goals and exits by these names) of these customers,
    dated from `since`, read for all of them in one query when the first is needed: after
    `as_of`, so everything stored before that moment is in it."""

    customers: set[int]
    names: frozenset[str]
    since: int
    as_of: int
    rows: dict[int, list[Any]] | None = None  # None: not read yet

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


class _Journal:
    """What one job of the engine has decided but not yet written: its log lines and
    per-step counts, written together when the job ends (one insert each instead of one
    per decision), and the profiles it read (a job reads a customer once)."""

    def __init__(self) -> None:
        self.depth = 0
        self.events: list[Event] = []
        self.passes: list[tuple[str, int, str, str, int, int]] = []
        self.profiles: dict[int, dict[str, Any]] = {}
        self.ending: _EndingLog | None = None  # a reaction's customers' goal and exit events
        # (journey, version, customer, reason) -> [count, at]: refused entries, counted
        self.refusals: dict[tuple[str, int, int, str], list[int]] = {}


class JourneyEngine:
    def __init__(
        self,
        clock: Clock,
        default_region: str,
        policies: Policies | None = None,
        *,
        sector: str = "",
        timezone: str = "UTC",
    ) -> None:
        self.clock = clock
        self.region = default_region
        self.policies = policies or Policies.load()
        self.sector = sector
        self.timezone = timezone  # the brand's: for customers with no valid time zone
        self._programs: dict[tuple[str, int], Program] = {}
        self._waited_traits: set[str] = set()
        self._entry_traits: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._interest: tuple[tuple[tuple[str, int, str], ...], set[str]] | None = None
        self._goal_names: set[str] = set()  # goals of versions that may still have runs
        self._longest_window = 0  # the longest goal window among them, in ms
        self._hooks: list[Hook] = []

    def install(self, worker: Worker, hooks: list[Hook]) -> None:
        worker.register(REACT, self.react)
        worker.register(STEP, self.step, prepare=self.prepare_steps)
        worker.register(journeys_api.STATUS_JOB, self.status_changed)
        worker.register(DATE_ENTRY, self.date_entry)
        worker.register(DATE_SCAN, self.date_scan)
        hooks.append(self.on_events)
        self._hooks = hooks  # what a journey emits goes through every hook (segments too)

    # ---- reacting to events ---------------------------------------------------------------

    def on_events(self, conn: Connection, events: list[Event], now: int) -> None:
        """Append hook: follow merges, and enqueue a reaction for the events some live
        journey listens to."""
        batch = self._batch(conn)
        if batch is not None:  # what a batch read beforehand may have changed
            for event in events:
                if event.source != "system" and event.customer_id is not None:
                    batch.profiles.pop(event.customer_id, None)
        for log in (batch.ending if batch is not None else None, self._state().ending):
            if log is not None:  # a goal appended in this transaction is read again
                for event in events:
                    if event.customer_id is not None and event.name in log.names:
                        log.forget(event.customer_id)
        merges = [e for e in events if e.name == MERGE_EVENT and e.source == "system"]
        if merges:
            if batch is not None:
                batch.runs.clear()
                batch.profiles.clear()
            with self._journal(conn):
                for event in merges:
                    self._follow_merge(conn, event, now)
        names = self._listened_names(conn)
        traits = self._waited_traits | set(self._entry_traits)
        if not names and not traits:
            return
        relevant = [
            e.message_id
            for e in events
            if e.customer_id is not None
            and (e.name in names or not traits.isdisjoint(_traits_set(e.type, e.traits, e.context)))
        ]
        if relevant:
            # A reaction about one customer is claimed with that customer's lock.
            about = {e.customer_id for e in events if e.message_id in relevant}
            enqueue(
                conn,
                REACT,
                {"events": relevant},
                run_at=now,
                now=now,
                queue=QUEUE,
                customer_id=about.pop() if len(about) == 1 else None,
            )

    def react(self, conn: Connection, job: Job) -> None:
        with self._journal(conn):
            self._react(conn, job.payload["events"])

    def _react(self, conn: Connection, ids: list[str]) -> None:
        rows = sql(
            conn,
            "SELECT seq, message_id, customer_id, name, occurred_at, payload FROM events "
            "WHERE message_id IN ({}) ORDER BY occurred_at, seq".format(
                ", ".join(f":m{i}" for i in range(len(ids)))
            ),
            {f"m{i}": message_id for i, message_id in enumerate(ids)},
        ).all()
        rows = self._own_customers(conn, rows)
        live = self._live_programs(conn)
        paused = self._paused_programs(conn)
        self._listened_names(conn)  # the goals that may convert runs that have ended
        now = self.clock.now_ms()
        if rows:  # the runs this reaction enters: their goals, read at once if they act
            self._state().ending = _EndingLog(
                {int(row.customer_id) for row in rows},
                frozenset(name for p in live for name in _ending_names(p.journey)),
                min(int(row.occurred_at) for row in rows),
                now,
            )
        for row in rows:
            event = _decode(row.payload)
            event["event"] = row.name
            customer = int(row.customer_id)
            self._apply_to_runs(
                conn, customer, row.name, row.occurred_at, event, now, row.seq, row.message_id
            )
            if row.name in self._goal_names:
                self._convert_ended(conn, customer, row.name, row.occurred_at, event, now)
            changed = _traits_set(event.get("type"), event.get("traits"), event.get("context"))
            for program in live:
                trait = program.journey.entry.date_trait
                if trait and trait in changed:
                    self._schedule_date_entry(conn, program, customer, now)
                if enters_on(program.journey, row.name, event):
                    self._try_enter(
                        conn, program, customer, row.message_id, row.occurred_at, event, now
                    )
            for program in paused:  # no entry, but the customer's trace says why
                if enters_on(program.journey, row.name, event):
                    self._try_enter(
                        conn,
                        program,
                        customer,
                        row.message_id,
                        row.occurred_at,
                        event,
                        now,
                        paused=True,
                    )

    def _apply_to_runs(
        self,
        conn: Connection,
        customer: int,
        name: str,
        occurred_at: int,
        event: dict[str, Any],
        now: int,
        seq: int,
        message_id: str = "",
    ) -> None:
        for run in self._active_runs(conn, customer):
            program = self._program(conn, run.journey_id, run.version)
            journey = program.journey
            if occurred_at < run.entered_at:
                continue  # only what happens after entry counts for goals and exits
            ending = _ending(journey, run, name, event, occurred_at)
            if ending is not None:
                self._end(conn, run, ending[0], now, converted=ending[1], stop_messages=True)
                continue
            traits = _traits_set(event.get("type"), event.get("traits"), event.get("context"))
            if run.waiting == "trait" and run.wait_event in traits:
                self._schedule(conn, run, now, now)  # the step reads the new date
                continue
            if run.consumed_seq is not None and seq <= run.consumed_seq:
                continue  # an earlier wait_for of this run already took this event
            if self._late_for_wait(conn, run, program, name, occurred_at, event, now, seq):
                continue
            if message_id and message_id == run.entry_message_id:
                continue  # the event that started the run satisfies no wait of it
            if run.waiting == "event" and run.wait_event == name:
                instruction = program.at(run.pc)
                spec = instruction.spec
                if _wait_matches(spec, event, run) and (
                    run.due_at is None or occurred_at < run.due_at
                ):
                    # The event came first (at the exact deadline the timeout wins).
                    self._log(
                        conn,
                        run,
                        "Journey Event Received",
                        now,
                        {"step": instruction.step_id, "event": name},
                    )
                    run.consumed_seq = seq  # a later wait_for will not take it again
                    self._move(conn, run, instruction.targets[0], now)
                    self._save(conn, run)
                    # What follows counts from the event's own time.
                    self._schedule(conn, run, min(max(occurred_at, run.entered_at), now), now)

    def _late_for_wait(
        self,
        conn: Connection,
        run: _Run,
        program: Program,
        name: str,
        occurred_at: int,
        event: dict[str, Any],
        now: int,
        seq: int,
    ) -> bool:
        """An event dated before the deadline of the wait_for the run timed out of, arriving
        after the timeout was taken: event time decides, so the run takes the event's path
        instead, as long as it has not acted since (a message not yet sent is not sent)."""
        if run.race_pc is None or run.race_until is None or occurred_at >= run.race_until:
            return False
        instruction = program.at(run.race_pc)
        spec = instruction.spec
        if (
            instruction.op != "wait_for"
            or spec.event != name
            or not _wait_matches(spec, event, run)
        ):
            return False
        self._log(
            conn,
            run,
            "Journey Event Received",
            now,
            {"step": instruction.step_id, "event": name, "after_timeout": True},
        )
        run.consumed_seq = seq
        run.race_pc = run.race_until = None
        self._move(conn, run, instruction.targets[0], now)
        self._save(conn, run)
        self._schedule(conn, run, min(max(occurred_at, run.entered_at), now), now)
        return True

    def _convert_ended(
        self,
        conn: Connection,
        customer: int,
        name: str,
        occurred_at: int,
        event: dict[str, Any],
        now: int,
    ) -> None:
        """A goal event for runs that have ended: it is their conversion when its own time
        is within the goal's window from entry, or, for a goal without a window, before the
        run ended (it arrived late). Control runs are measured so."""
        rows = sql(
            conn,
            "SELECT * FROM journey_runs WHERE customer_id = :c AND state = 'ended' "
            "AND converted = 0 AND entered_at <= :t AND (ended_at > :t OR entered_at >= :w) "
            "ORDER BY id",
            {"c": customer, "t": occurred_at, "w": occurred_at - self._longest_window},
        ).all()
        for row in rows:
            run = _run_of(row)
            goal = _first_match(
                self._program(conn, run.journey_id, run.version).journey.goals, name, event, run
            )
            if goal is None:
                continue
            if goal.window is None and occurred_at >= int(row.ended_at):
                continue
            if goal.window is not None and not _within_window(goal, run, occurred_at):
                continue
            converted = sql(
                conn,
                "UPDATE journey_runs SET converted = 1 WHERE id = :id AND converted = 0",
                {"id": run.id},
            ).rowcount
            if converted:
                self._log(
                    conn,
                    run,
                    "Journey Converted",
                    now,
                    {"goal": goal.event, "control": run.control, "after_end": True},
                )

    def _try_enter(
        self,
        conn: Connection,
        program: Program,
        customer: int,
        message_id: str,
        occurred_at: int,
        event: dict[str, Any],
        now: int,
        *,
        paused: bool = False,
    ) -> None:
        """Enter the customer on this trigger, or record why not (in their trace and the
        stats): the trigger too old, the journey paused, already entered, re-entry too soon,
        an active run for this key. A duplicate delivery of the trigger is no refusal."""
        journey = program.journey
        entry = journey.entry
        key = ""
        if entry.key:
            value = normalise_key(resolve_path(entry.key, {"event": event}))
            if value is None:
                self._refuse(conn, program, customer, message_id, event, f"no {entry.key}", now)
                return
            key = value
        if entry.where:  # the profile and memberships are read only when a condition may
            scope = {"event": event, "entry": event, "profile": self._profile(conn, customer)}
            if uses_root(entry.where, "segment"):
                scope["segment"] = segments.membership_flags(conn, customer)
            if not matches(entry.where, scope):
                return
        lateness = parse_duration(entry.lateness).seconds * 1000
        if now - occurred_at > lateness:
            # History: importing old events never sends anything.
            self._refuse(conn, program, customer, message_id, event, "trigger too old", now)
            return
        if paused:
            self._refuse(conn, program, customer, message_id, event, "journey paused", now)
            return
        refused = self._entered_already(conn, journey, customer, message_id, key, occurred_at)
        if refused == DUPLICATE:
            return
        if refused is not None:
            self._refuse(conn, program, customer, message_id, event, refused, now)
            return
        run_id = sql(
            conn,
            "INSERT INTO journey_runs (journey_id, version, customer_id, run_key, state, "
            "pc, entered_at, entry_message_id, entry_event) VALUES (:j, :v, :c, :k, "
            "'active', 0, :at, :m, :e) RETURNING id",
            {
                "j": journey.id,
                "v": program.version,
                "c": customer,
                "k": key,
                "at": occurred_at,
                "m": message_id,
                "e": _encode(event).decode(),
            },
        ).scalar_one()
        run = _Run(
            id=int(run_id),
            journey_id=journey.id,
            version=program.version,
            customer_id=customer,
            run_key=key,
            pc=0,
            waiting=None,
            wait_event=None,
            wait_key=None,
            due_at=None,
            entered_at=occurred_at,
            entry_event=event,
            entry_message_id=message_id,
            has_job=False,
        )
        self._log(
            conn,
            run,
            "Journey Entered",
            now,
            {"trigger": entry_event(journey), "entry_message_id": message_id},
        )
        # The first steps run now, in the reaction's transaction: no second job, no wait.
        # The run's time starts at the entry event's own (corrected) time: a wait counts
        # from it, and one already past when the event is processed goes on at once.
        self._advance(conn, run, now, occurred_at)

    def _refuse(
        self,
        conn: Connection,
        program: Program,
        customer: int,
        message_id: str,
        event: dict[str, Any],
        reason: str,
        now: int,
    ) -> None:
        """An entry refused: a `Journey Entry Refused` line in the customer's trace and a
        count for the stats, once per customer, journey and reason in one reaction (a
        history import of a thousand old triggers writes one line, counting them)."""
        state = self._state()
        counted = (program.journey.id, program.version, customer, reason)
        seen = state.refusals.get(counted)
        if seen is not None:
            seen[0] += 1
            return
        state.refusals[counted] = [1, now]
        properties = {
            "journey_id": program.journey.id,
            "version": program.version,
            "reason": reason,
            "trigger": event.get("event"),
            "trigger_message_id": message_id,
        }
        document = {"type": "track", "event": REFUSED, "properties": properties}
        refusal_id = f"journey-refused:{program.journey.id}:{message_id}:{now}"
        document["messageId"] = refusal_id
        line = Event(
            message_id=refusal_id,
            type="track",
            name=REFUSED,
            user_id=None,
            anonymous_id=None,
            properties=properties,
            traits={},
            context={},
            occurred_at=now,
            received_at=now,
            timestamp=None,
            sent_at=None,
            source="system",
            payload=_encode(document).decode(),
            customer_id=customer,
        )
        if state.depth > 0:
            state.events.append(line)
        else:
            append_events(conn, [[line]], now, self.region, ())

    def _entered_already(
        self,
        conn: Connection,
        journey: Journey,
        customer: int,
        message_id: str,
        key: str,
        occurred_at: int,
    ) -> str | None:
        """Why this trigger makes no run: DUPLICATE (the same event delivered again, or a
        retried reaction), "active run exists" (for this key), "already entered" (`reentry:
        once`), "re-entry too soon" (within `period` of the last entry, by event time);
        None when it enters."""
        rows = sql(
            conn,
            "SELECT state, run_key, entered_at, entry_message_id FROM journey_runs "
            "WHERE journey_id = :j AND customer_id = :c",
            {"j": journey.id, "c": customer},
        ).all()
        if any(row.entry_message_id == message_id for row in rows):
            return DUPLICATE
        reentry = journey.entry.reentry
        period = parse_duration(journey.entry.period).seconds * 1000 if journey.entry.period else 0
        if any(row.state == "active" and row.run_key == key for row in rows):
            return "active run exists"
        if rows and reentry == "once":
            return "already entered"
        if reentry == "once_per_period" and any(
            row.entered_at > occurred_at - period for row in rows
        ):
            return "re-entry too soon"
        return None

    def status_changed(self, conn: Connection, job: Job) -> None:
        """A version was paused, resumed, superseded or archived: act on its runs."""
        with self._journal(conn):
            self._status_changed(conn, job.payload)

    def _status_changed(self, conn: Connection, change: dict[str, Any]) -> None:
        journey_id, version = change["journey_id"], int(change["version"])
        now = self.clock.now_ms()
        if "runs" in change:  # a second pass: the runs the first one left, still active
            named = sorted(int(run_id) for run_id in change["runs"])
            rows = [
                row
                for part in chunks(named)
                for row in sql(
                    conn,
                    "SELECT * FROM journey_runs WHERE id IN ({}) AND state = 'active'".format(
                        ", ".join(f":r{i}" for i in range(len(part)))
                    ),
                    {f"r{i}": run_id for i, run_id in enumerate(part)},
                ).all()
            ]
            rows.sort(key=lambda row: int(row.id))
        else:
            rows = sql(
                conn,
                "SELECT * FROM journey_runs WHERE journey_id = :j AND version = :v "
                "AND state = 'active' ORDER BY id",
                {"j": journey_id, "v": version},
            ).all()
        # The runs of customers another worker is deciding about are left to a second
        # pass, a second later, which names them: their locks are taken without waiting,
        # as claims do, and the runs already acted on are not read again.
        about = {int(row.customer_id) for row in rows}
        mine = try_lock_customers(conn, about)
        if len(mine) < len(about):
            left = sorted(int(row.id) for row in rows if row.customer_id not in mine)
            rows = [row for row in rows if row.customer_id in mine]
            enqueue(
                conn,
                journeys_api.STATUS_JOB,
                {**change, "again": True, "runs": left},
                run_at=now + 1000,
                now=now,
                queue=QUEUE,
            )
        if change["to"] == "live" and not change.get("again"):
            program = self._program(conn, journey_id, version)
            if program.journey.entry.date_trait:  # every customer's date, scheduled
                enqueue(
                    conn,
                    DATE_SCAN,
                    {"journey_id": journey_id, "version": version, "after": 0},
                    run_at=now,
                    now=now,
                    queue=QUEUE,
                )
        for run in (_run_of(row) for row in rows):
            if change["to"] == "archived":
                self._end(conn, run, "journey stopped (archived)", now)
            elif change["from"] == "paused" and change["to"] in ("live", "superseded"):
                if run.waiting and run.due_at is not None and run.due_at < now:
                    # Time stood still for the run while it was held: what follows counts
                    # from the resume, rather than everything going out at once.
                    run.due_at = now
                    self._save(conn, run)
                self._schedule(conn, run, run.due_at or now, now)

    # ---- entries on a date held by a trait (a birthday, a subscription's renewal) ----------

    def date_scan(self, conn: Connection, job: Job) -> None:
        """A date-trait journey went live: schedule the entry of every customer holding the
        trait, a chunk of customers per job so that no transaction grows with the base."""
        with self._journal(conn):
            self._date_scan(conn, job.payload)

    def _date_scan(self, conn: Connection, payload: dict[str, Any]) -> None:
        program = self._live_program(conn, payload["journey_id"])
        if program is None or program.version != int(payload["version"]):
            return
        now = self.clock.now_ms()
        ids = [
            int(value)
            for value in sql(
                conn,
                "SELECT id FROM customers WHERE id > :after AND merged_into IS NULL "
                "ORDER BY id LIMIT :n",
                {"after": int(payload["after"]), "n": SCAN_CHUNK},
            ).scalars()
        ]
        for customer in ids:
            self._schedule_date_entry(conn, program, customer, now)
        if len(ids) == SCAN_CHUNK:
            enqueue(
                conn,
                DATE_SCAN,
                {**payload, "after": ids[-1]},
                run_at=now,
                now=now,
                queue=QUEUE,
            )

    def _schedule_date_entry(
        self, conn: Connection, program: Program, customer: int, now: int
    ) -> None:
        """The customer's next entry moment from the trait (plus offset, at `at` local
        time, each year with `yearly`); none when the trait is missing or past."""
        entry = program.journey.entry
        key = f"date-entry:{program.journey.id}:{customer}"
        due, _ = trait_moment(self._profile(conn, customer), _date_spec(entry), now, self.timezone)
        if due is None or due < now:
            cancel(conn, key)
            return
        enqueue(
            conn,
            DATE_ENTRY,
            {"journey_id": program.journey.id, "customer": customer, "due": due},
            run_at=due,
            now=now,
            queue=QUEUE,
            unique_key=key,
            customer_id=customer,
        )

    def date_entry(self, conn: Connection, job: Job) -> None:
        with self._journal(conn):
            self._date_entry(conn, job.payload)

    def _date_entry(self, conn: Connection, payload: dict[str, Any]) -> None:
        program = self._live_program(conn, payload["journey_id"])
        paused = False
        if program is None:
            held = [p for p in self._paused_programs(conn) if p.journey.id == payload["journey_id"]]
            if not held:
                return
            program, paused = held[0], True  # no entry; the customer's trace says why
        customer, due = int(payload["customer"]), int(payload["due"])
        now = self.clock.now_ms()
        entry = program.journey.entry
        assert entry.date_trait is not None
        profile = self._profile(conn, customer)
        value = profile.get("traits", {}).get(entry.date_trait)
        event = {
            "type": "track",
            "event": "Date Reached",
            "properties": {"trait": entry.date_trait, "date": value, "occurrence": due},
        }
        self._try_enter(
            conn,
            program,
            customer,
            f"date:{program.journey.id}:{customer}:{due}",
            due,
            event,
            now,
            paused=paused,
        )
        if entry.yearly and not paused:
            self._schedule_date_entry(conn, program, customer, due + 1)

    def _live_program(self, conn: Connection, journey_id: str) -> Program | None:
        for program in self._live_programs(conn):
            if program.journey.id == journey_id:
                return program
        return None

    def _follow_merge(self, conn: Connection, event: Event, now: int) -> None:
        """Two profiles became one: the runs of both go on, on the surviving profile; a keyed
        run both had is kept once (the older run), so nothing is sent twice."""
        survivor = int(event.properties["survivor_id"])
        merged = int(event.properties["merged_id"])
        kept = {(r.journey_id, r.run_key): r for r in self._active_runs(conn, survivor)}
        for run in self._active_runs(conn, merged):
            twin = kept.get((run.journey_id, run.run_key))
            if twin is not None:
                older, newer = sorted((run, twin), key=lambda r: r.id)
                self._end(conn, newer, f"profiles merged: run {older.id} goes on", now)
                if newer is twin:
                    kept[(run.journey_id, run.run_key)] = run
        sql(
            conn,
            "UPDATE journey_runs SET customer_id = :new WHERE customer_id = :old",
            {"new": survivor, "old": merged},
        )
        reassign_jobs(conn, merged, survivor)
        reassign_intents(conn, merged, survivor)
        subscriptions.reassign(conn, merged, survivor)

    # ---- moving a run -------------------------------------------------------------------

    def step(self, conn: Connection, job: Job) -> None:
        with self._journal(conn):
            self._step(conn, job)

    def prepare_steps(self, conn: Connection, jobs: list[Job]) -> None:
        """Before a batch of steps: their runs (locked) and their customers, read at once
        (two or three queries instead of two or three per step), and, when the first step
        acts, the goal and exit events of all their customers (one query). What the batch
        changes is dropped from this as it goes (`_save`, `_end`, appends, merges). The
        batch's steps act as of the moment it looked (`_Batch.now`): anything stored
        before then is in what they read."""
        self._local.batch = None  # should this fail, the jobs read what they need themselves
        now = self.clock.now_ms()
        ids = sorted({int(job.payload["run"]) for job in jobs})
        lock = " FOR UPDATE OF r" if conn.dialect.name != "sqlite" else ""
        rows = sql(
            conn,
            "SELECT r.*, v.status AS version_status FROM journey_runs r JOIN journey_versions v "
            "ON v.journey_id = r.journey_id AND v.version = r.version "
            "WHERE r.state = 'active' AND r.id IN ({}) ORDER BY r.id{}".format(
                ", ".join(f":r{i}" for i in range(len(ids))), lock
            ),
            {f"r{i}": run_id for i, run_id in enumerate(ids)},
        ).all()
        runs = {int(row.id): (_run_of(row), str(row.version_status)) for row in rows}
        customer_ids = sorted({r.customer_id for r, _ in runs.values()})
        # The customers' locks (PostgreSQL): taken with their jobs when claimed, so none is
        # asked for here unless a merge moved a run since (nothing on SQLite).
        hold_sends(conn, customer_ids)
        profiles = customers.condition_views(conn, customer_ids)
        ending = _EndingLog(
            set(customer_ids),
            frozenset(
                name
                for r, _ in runs.values()
                for name in _ending_names(self._program(conn, r.journey_id, r.version).journey)
            ),
            min((r.entered_at for r, _ in runs.values()), default=now),
            now,
        )
        self._local.batch = _Batch(conn, runs, profiles, now, ending)

    def _batch(self, conn: Connection) -> _Batch | None:
        """What `prepare_steps` read for the batch running on this connection, if any."""
        batch: _Batch | None = getattr(self._local, "batch", None)
        return batch if batch is not None and batch.conn is conn else None

    def _step(self, conn: Connection, job: Job) -> None:
        run_id = int(job.payload["run"])
        batch = self._batch(conn)
        loaded = batch.runs.pop(run_id, None) if batch is not None else None
        loaded = loaded or self._load_run(conn, run_id)
        if loaded is None:
            return  # the run ended: its timer fires with no effect
        run, status = loaded
        run.has_job = False  # this job was its one job, taken when claimed
        now = batch.now if batch is not None else self.clock.now_ms()
        if status == "paused":
            # Held where it stands; resuming the journey schedules it again.
            self._log(
                conn, run, "Journey Held", now, {"reason": "journey paused", "position": run.pc}
            )
            return
        # After downtime a timer fires late; the run's own time is when it was due, so that
        # chained waits catch up in order.
        self._advance(conn, run, now, job.run_at)

    def _advance(self, conn: Connection, run: _Run, now: int, logical: int) -> None:
        """Run the run's instructions until it waits or ends; the run is written once."""
        program = self._program(conn, run.journey_id, run.version)
        for _ in range(MAX_INSTRUCTIONS_PER_JOB):
            instruction = program.at(run.pc)
            advanced = self._execute(conn, run, program, instruction, now, logical)
            if advanced is None:
                break  # waiting or ended
            logical = advanced
        else:
            self._schedule(conn, run, now, now)  # a very long chain: go on in a new job
        if run.dirty:
            self._save(conn, run)

    def _execute(
        self,
        conn: Connection,
        run: _Run,
        program: Program,
        instruction: Instruction,
        now: int,
        logical: int,
    ) -> int | None:
        """Run one instruction; return the run's time to go on with, or None to stop."""
        journey_metrics.step_run(program, instruction)
        op = instruction.op
        if op == "goto":
            self._move(conn, run, instruction.targets[0], now)
            return logical
        if op == "exit":
            self._end(conn, run, str(instruction.spec), now)
            return None
        if op == "wait":
            return self._wait_timer(
                conn, run, instruction, now, logical, lambda base: _after(base, instruction.spec)
            )
        if op == "wait_until" and instruction.spec.trait is not None:
            return self._wait_trait(conn, run, instruction, now, logical)
        if op == "wait_until":
            profile = self._profile(conn, run.customer_id)
            return self._wait_timer(
                conn,
                run,
                instruction,
                now,
                logical,
                lambda base: next_local_time(base, instruction.spec, profile, self.timezone),
                _zone_details(profile, self.timezone),
            )
        if op == "wait_for":
            return self._wait_for(conn, run, instruction, now, logical)
        if op == "branch":
            return self._branch(conn, run, instruction, now, logical)
        if op == "split":
            return self._split(conn, run, program, instruction, now, logical)
        if self._ended_by_log(conn, run, program.journey, now):
            return None  # an order already stored stops what follows, reacted to or not
        if instruction.spec.send is not None:
            return self._send(conn, run, program, instruction, now, logical)
        self._act(conn, run, program, instruction, now)
        self._move(conn, run, run.pc + 1, now)
        return logical

    def _wait_timer(
        self,
        conn: Connection,
        run: _Run,
        instruction: Instruction,
        now: int,
        logical: int,
        due: Any,
        details: dict[str, Any] | None = None,
    ) -> int | None:
        if run.waiting == "timer" and run.due_at is not None:
            if now < run.due_at:
                self._schedule(conn, run, run.due_at, now)
                return None
            finished = run.due_at
            self._move(conn, run, run.pc + 1, now)
            return finished
        due_at = int(due(logical))
        run.waiting, run.due_at, run.dirty = "timer", due_at, True
        self._log(
            conn,
            run,
            "Journey Waiting",
            now,
            {"step": instruction.step_id, "until": due_at, **(details or {})},
        )
        if due_at <= now:
            self._move(conn, run, run.pc + 1, now)
            return due_at
        self._schedule(conn, run, due_at, now)
        return None

    def _wait_trait(
        self, conn: Connection, run: _Run, instruction: Instruction, now: int, logical: int
    ) -> int | None:
        """Wait for the date a trait holds (plus the offset). The date is read again each
        time the step runs, so a changed trait moves the wait; a missing, unreadable or past
        date never fires: the run takes the step's `if_missing` path, with the reason."""
        spec = instruction.spec
        profile = self._profile(conn, run.customer_id)
        due, problem = trait_moment(profile, spec, now, self.timezone)
        if due is None or (due < now and run.waiting != "trait"):
            reason = problem or f"the date in {spec.trait} has passed"
            if spec.if_missing == "exit":
                self._end(conn, run, f"step {instruction.step_id}: {reason}", now)
                return None
            self._log(
                conn,
                run,
                "Journey Wait Skipped",
                now,
                {"step": instruction.step_id, "reason": reason},
            )
            self._move(conn, run, run.pc + 1, now)
            return logical
        if due <= now:
            self._move(conn, run, run.pc + 1, now)
            return due
        if run.waiting != "trait" or run.due_at != due:
            run.waiting, run.wait_event, run.due_at = "trait", spec.trait, due
            run.dirty = True
            self._log(
                conn,
                run,
                "Journey Waiting",
                now,
                {
                    "step": instruction.step_id,
                    "until": due,
                    "trait": spec.trait,
                    **_zone_details(profile, self.timezone),
                },
            )
        self._schedule(conn, run, due, now)
        return None

    def _wait_for(
        self,
        conn: Connection,
        run: _Run,
        instruction: Instruction,
        now: int,
        logical: int,
    ) -> int | None:
        spec = instruction.spec
        if run.waiting == "event":
            if run.due_at is not None and now >= run.due_at:
                # Event time decides: an event dated before the deadline counts even if it
                # was stored after it, or its reaction has not run yet (a worker behind).
                seen = self._seen_since_entry(conn, run, spec, run.due_at)
                if seen is not None:
                    self._log(
                        conn,
                        run,
                        "Journey Event Received",
                        now,
                        {"step": instruction.step_id, "event": spec.event, "by_event_time": True},
                    )
                    self._move(conn, run, instruction.targets[0], now)
                    return seen  # what follows counts from the event's time
                self._log(
                    conn,
                    run,
                    "Journey Wait Timed Out",
                    now,
                    {"step": instruction.step_id, "event": spec.event},
                )
                finished = run.due_at
                run.race_pc, run.race_until = run.pc, run.due_at  # for an event arriving late
                self._move(conn, run, instruction.otherwise or run.pc + 1, now)
                return finished
            self._schedule(conn, run, run.due_at or now, now)
            return None
        deadline = logical + parse_duration(spec.timeout).seconds * 1000
        if self._seen_since_entry(conn, run, spec, deadline) is not None:
            self._log(
                conn,
                run,
                "Journey Event Received",
                now,
                {"step": instruction.step_id, "event": spec.event, "before_wait": True},
            )
            self._move(conn, run, instruction.targets[0], now)
            return logical
        run.waiting, run.wait_event, run.due_at = "event", spec.event, deadline
        run.wait_key = _entry_key(spec.key, run)
        run.dirty = True
        self._log(
            conn,
            run,
            "Journey Waiting",
            now,
            {"step": instruction.step_id, "for": spec.event, "until": deadline},
        )
        self._schedule(conn, run, deadline, now)
        return None

    def _seen_since_entry(
        self, conn: Connection, run: _Run, spec: Any, deadline: int
    ) -> int | None:
        """Events since entry count: an order placed before the wait began satisfies it.
        Not the event that started the run, and not one an earlier wait_for of this run
        already took (three views are three events, not one seen three times). Returns the
        time of the event taken, or None."""
        rows = sql(
            conn,
            "SELECT seq, message_id, occurred_at, payload FROM events "
            "WHERE customer_id = :c AND name = :n "
            "AND occurred_at >= :since AND occurred_at < :deadline AND seq > :after "
            "ORDER BY seq",
            {
                "c": run.customer_id,
                "n": spec.event,
                "since": run.entered_at,
                "deadline": deadline,
                "after": run.consumed_seq or 0,
            },
        ).all()
        for row in rows:
            if row.message_id == run.entry_message_id:
                continue
            if _wait_matches(spec, _decode(row.payload), run):
                run.consumed_seq = int(row.seq)
                return int(row.occurred_at)
        return None

    def _ended_by_log(self, conn: Connection, run: _Run, journey: Journey, now: int) -> bool:
        """Before the run acts (a send, a webhook, an emit): a goal or an exit of the run
        already in the log, dated from its entry up to now, ends it here, even if that
        event's reaction has not run yet (a worker behind, or another worker's). Read in
        this transaction, under the customer's lock: a message is never sent after an
        order that was stored before the send looked."""
        names = _ending_names(journey)
        if not names:
            return False
        ending = _first_ending(journey, run, self._ending_events(conn, run, names, now), now)
        if ending is None:
            return False
        self._end(conn, run, ending[0], now, converted=ending[1], stop_messages=True)
        return True

    def messages_no_longer_wanted(
        self, conn: Connection, messages: list[Any], now: int
    ) -> dict[int, str]:
        """Delivery's check before a send (services.py registers it): of these messages
        (outbox rows of journey runs), those whose run a goal or an exit in the log, dated
        from its entry up to `now`, has ended or would end, each with that reason (`goal
        reached: Order Completed`, `exit condition: ...`). Read in the transaction that
        claims them, whether or not that event's reaction has run (the journeys queue
        behind), and whether or not the run has ended since the message was made (the
        messaging queue behind): an order stored before the send looked stops it. Two
        queries for the whole batch: the runs, and their customers' ending events."""
        by_run: dict[int, list[int]] = {}
        for message in messages:
            if message.run_id is not None:
                by_run.setdefault(int(message.run_id), []).append(int(message.id))
        if not by_run:
            return {}
        ids = sorted(by_run)
        runs = [
            _run_of(row)
            for row in sql(
                conn,
                "SELECT * FROM journey_runs WHERE id IN ({})".format(
                    ", ".join(f":r{i}" for i in range(len(ids)))
                ),
                {f"r{i}": run_id for i, run_id in enumerate(ids)},
            ).all()
        ]
        journeys = {
            run.id: self._program(conn, run.journey_id, run.version).journey for run in runs
        }
        names = frozenset(name for j in journeys.values() for name in _ending_names(j))
        if not names:
            return {}
        found = _read_ending(
            conn, {run.customer_id for run in runs}, names, min(run.entered_at for run in runs)
        )
        unwanted: dict[int, str] = {}
        for run in runs:
            journey = journeys[run.id]
            ending = _first_ending(journey, run, found.get(run.customer_id, []), now)
            if ending is not None:
                unwanted.update((outbox_id, ending[0]) for outbox_id in by_run[run.id])
        return unwanted

    def _ending_events(
        self, conn: Connection, run: _Run, names: frozenset[str], now: int
    ) -> list[Any]:
        """The customer's events that may end this run, oldest first: from what the batch
        (or the reaction) read for all its customers at once when it covers the run and
        this moment, else read for this run alone."""
        batch = self._batch(conn)
        for log in (self._state().ending, batch.ending if batch is not None else None):
            if log is not None and log.covers(run.customer_id, names, run.entered_at, now):
                if log.rows is None:
                    log.rows = _read_ending(conn, log.customers, log.names, log.since)
                return log.rows.get(run.customer_id, [])
        return _read_ending(conn, {run.customer_id}, names, run.entered_at).get(run.customer_id, [])

    def _own_customers(self, conn: Connection, rows: list[Any]) -> list[Any]:
        """The events of the customers whose lock this reaction holds or can take at once
        (PostgreSQL; all of them on SQLite). Another worker's customers get a reaction of
        their own, claimed once that worker is done with them: a worker never waits for a
        customer's lock, so two workers never deadlock, and never decide about one
        customer from two different views."""
        about = {int(row.customer_id) for row in rows if row.customer_id is not None}
        mine = try_lock_customers(conn, about)
        if len(mine) == len(about):
            return rows
        now = self.clock.now_ms()
        for customer in sorted(about - mine):
            enqueue(
                conn,
                REACT,
                {"events": [row.message_id for row in rows if row.customer_id == customer]},
                run_at=now,
                now=now,
                queue=QUEUE,
                customer_id=customer,
            )
        return [row for row in rows if row.customer_id in mine]

    def _branch(
        self, conn: Connection, run: _Run, instruction: Instruction, now: int, logical: int
    ) -> int:
        scope = {
            "entry": run.entry_event,
            "event": run.entry_event,
            "profile": self._profile(conn, run.customer_id),
        }
        if any(uses_root(conditions, "segment") for conditions in instruction.spec):
            scope["segment"] = segments.membership_flags(conn, run.customer_id)
        for number, (conditions, target) in enumerate(
            zip(instruction.spec, instruction.targets, strict=True)
        ):
            if matches(conditions, scope):
                self._log(
                    conn,
                    run,
                    "Journey Branched",
                    now,
                    {"step": instruction.step_id, "arm": number + 1},
                )
                self._move(conn, run, target, now)
                return logical
        self._log(
            conn, run, "Journey Branched", now, {"step": instruction.step_id, "arm": "otherwise"}
        )
        assert instruction.otherwise is not None
        self._move(conn, run, instruction.otherwise, now)
        return logical

    def _split(
        self,
        conn: Connection,
        run: _Run,
        program: Program,
        instruction: Instruction,
        now: int,
        logical: int,
    ) -> int:
        split = instruction.spec
        seed = split.seed or f"{program.journey.id}:{instruction.step_id}"
        if _bucket(f"{seed}:holdout:{run.customer_id}") < split.holdout:
            run.control = True  # measured over the goals' window, sent nothing
            self._log(
                conn, run, "Journey Split", now, {"step": instruction.step_id, "path": "holdout"}
            )
            assert instruction.otherwise is not None
            self._move(conn, run, instruction.otherwise, now)
            return logical
        total = sum(p.weight for p in split.paths)
        point = _bucket(f"{seed}:path:{run.customer_id}", total)
        for number, (option, target) in enumerate(
            zip(split.paths, instruction.targets, strict=True)
        ):
            if point < option.weight:
                self._log(
                    conn,
                    run,
                    "Journey Split",
                    now,
                    {"step": instruction.step_id, "path": option.name or number + 1},
                )
                self._move(conn, run, target, now)
                return logical
            point -= option.weight
        raise AssertionError("split weights exhausted")

    def _send(
        self,
        conn: Connection,
        run: _Run,
        program: Program,
        instruction: Instruction,
        now: int,
        logical: int,
    ) -> int | None:
        """Write the message intent if the policies let it go now; otherwise hold it back
        with the reason, and wait for the next allowed moment or drop it, as the step says.
        A deferred message is checked again when its moment comes."""
        send = instruction.spec.send
        if run.waiting == "held" and run.due_at is not None and now < run.due_at:
            self._schedule(conn, run, run.due_at, now)
            return None
        profile = self._profile(conn, run.customer_id)
        try:
            template = message_templates.get(conn, send.template)
        except message_templates.TemplateProblem as exc:
            # Checked when the journey went live; a brand template deleted since then.
            self._end(conn, run, f"step {instruction.step_id}: {exc}", now)
            return None
        plan = choice.plan(
            conn,
            self.policies,
            choice.Request(
                run.customer_id,
                send.template,
                send.purpose,
                send.channel,
                tuple(send.fallback),
                urgent=send.urgent,
            ),
            profile,
            now,
            self.region,
            template=template,
            sector=self.sector,
        )
        details = {
            "step": instruction.step_id,
            "channel": send.channel,
            "template": send.template,
            "purpose": send.purpose,
        }
        if plan.channel is not None:
            key = f"run:{run.id}:{instruction.step_id}:0"
            if send.channel == "best" or plan.passed:
                self._log(
                    conn,
                    run,
                    "Channel Chosen",
                    now,
                    {
                        **details,
                        "chosen": plan.channel,
                        "passed_over": plan.passed,
                        "scores": plan.scores,
                    },
                )
            add_intent(
                conn,
                Intent(
                    key,
                    run.customer_id,
                    plan.channel,
                    send.template,
                    send.purpose,
                    program.journey.id,
                    run.id,
                    instruction.step_id,
                ),
                now,
                {
                    "rest": plan.rest,
                    "if_held": send.if_held,
                    "success": send.success,
                    "fallback_after": send.fallback_after,
                    "event": run.entry_event,
                },
                plan.address,
            )
            self._log(
                conn,
                run,
                "Message Queued",
                now,
                {**details, "channel": plan.channel, "idempotency_key": key},
            )
            self._move(conn, run, run.pc + 1, now)
            return logical
        deferred = send.if_held == "defer" and plan.retry_at is not None
        messaging_metrics.held(send.channel, plan.passed)
        self._log(
            conn,
            run,
            "Message Held",
            now,
            {
                **details,
                "reason": plan.reason,
                "passed_over": plan.passed,
                "outcome": "deferred" if deferred else "dropped",
                "until": plan.retry_at if deferred else None,
            },
        )
        if deferred:
            assert plan.retry_at is not None
            run.waiting, run.due_at, run.dirty = "held", plan.retry_at, True
            self._schedule(conn, run, plan.retry_at, now)
            return None
        self._move(conn, run, run.pc + 1, now)
        return logical

    def _act(
        self, conn: Connection, run: _Run, program: Program, instruction: Instruction, now: int
    ) -> None:
        step = instruction.spec
        if run.dirty:  # what it emits may move this customer's runs: be written first
            self._save(conn, run)
        if step.update_profile is not None:
            self._update_profile(conn, run, instruction, now)
        elif step.emit is not None:
            self._append(
                conn,
                run,
                instruction,
                now,
                "track",
                step.emit.event,
                {"properties": step.emit.properties},
                source="journey",
            )
        elif step.task is not None:
            task = step.task
            self._append(
                conn,
                run,
                instruction,
                now,
                "track",
                "Task Created",
                {
                    "properties": {
                        "title": task.title,
                        "assignee": task.assignee,
                        "note": task.note,
                        "journey_id": run.journey_id,
                        "run_id": run.id,
                    }
                },
                source="journey",
            )
        elif step.webhook is not None:
            hook = step.webhook
            delivery_id = f"run:{run.id}:{instruction.step_id}"
            webhooks.schedule_delivery(
                conn,
                delivery_id=delivery_id,
                url=hook.url,
                envelope=webhooks.envelope(
                    delivery_id=delivery_id,
                    now=now,
                    journey_id=run.journey_id,
                    run_id=run.id,
                    step=instruction.step_id,
                    customer_id=customers.public_id(run.customer_id),
                    entry_event=run.entry_event.get("event"),
                    data=hook.body,
                ),
                secret=hook.secret,
                retries=hook.retries,
                now=now,
                customer_id=run.customer_id,
            )
            self._log(
                conn,
                run,
                "Webhook Scheduled",
                now,
                {"step": instruction.step_id, "url": hook.url, "delivery_id": delivery_id},
            )

    def _update_profile(
        self, conn: Connection, run: _Run, instruction: Instruction, now: int
    ) -> None:
        change = instruction.spec.update_profile
        traits: dict[str, Any] = dict(change.set)
        if change.add_tags or change.remove_tags:
            current = self._profile(conn, run.customer_id)["traits"].get("tags") or []
            tags = [t for t in current if t not in change.remove_tags]
            tags += [t for t in change.add_tags if t not in tags]
            traits["tags"] = tags
        self._append(
            conn, run, instruction, now, "identify", None, {"traits": traits}, source="journey"
        )

    # ---- bookkeeping --------------------------------------------------------------------

    def _move(self, conn: Connection, run: _Run, pc: int, now: int) -> None:
        """Move the run in memory; `_advance` (or the caller) writes it once."""
        run.pc, run.waiting, run.wait_event, run.wait_key, run.due_at = pc, None, None, None, None
        run.dirty = True

    def _schedule(self, conn: Connection, run: _Run, at: int, now: int) -> None:
        run.has_job = True
        enqueue(
            conn,
            STEP,
            {"run": run.id},
            run_at=at,
            now=now,
            queue=QUEUE,
            unique_key=f"run:{run.id}",
            customer_id=run.customer_id,
        )

    def _end(
        self,
        conn: Connection,
        run: _Run,
        reason: str,
        now: int,
        converted: bool = False,
        *,
        stop_messages: bool = False,
    ) -> None:
        """End the run with the reason. Ended by a goal or an exit (`stop_messages`), its
        messages not yet handed to a provider are cancelled, in the same transaction."""
        sql(
            conn,
            "UPDATE journey_runs SET state = 'ended', ended_at = :now, end_reason = :r, "
            "converted = :c, waiting = NULL, pc = :pc, consumed_seq = :cs, control = :ctl "
            "WHERE id = :id",
            {
                "now": now,
                "r": reason,
                "c": int(converted),
                "pc": run.pc,
                "cs": run.consumed_seq,
                "ctl": int(run.control),
                "id": run.id,
            },
        )
        run.dirty = False
        self._forget(conn, run)
        if run.has_job is not False:
            cancel(conn, f"run:{run.id}")  # its timer, if any, goes with it
        if stop_messages:
            # In the customer's trace as delivery records a message it finds unwanted
            # (messaging/delivery.py); the step's counts keep it as queued.
            for message in cancel_run_intents(conn, run.customer_id, run.id, reason, now):
                properties = {
                    "message_id": public_message_id(message.outbox_id),
                    "channel": message.channel,
                    "template": message.template,
                    "purpose": message.purpose,
                    "step": message.step_id,
                    "reason": reason,
                    "outcome": "cancelled",
                }
                self._append(
                    conn,
                    run,
                    None,
                    now,
                    "track",
                    "Message Held",
                    {"properties": properties},
                    source="system",
                )
        details: dict[str, Any] = {"reason": reason, "converted": converted}
        if run.control:
            details["control"] = True
        self._log(conn, run, "Journey Exited", now, details)

    def _save(self, conn: Connection, run: _Run) -> None:
        run.dirty = False
        self._forget(conn, run)
        sql(
            conn,
            "UPDATE journey_runs SET pc = :pc, waiting = :w, wait_event = :we, "
            "wait_key = :wk, due_at = :d, consumed_seq = :cs, race_pc = :rp, "
            "race_until = :ru WHERE id = :id",
            {
                "pc": run.pc,
                "w": run.waiting,
                "we": run.wait_event,
                "wk": run.wait_key,
                "d": run.due_at,
                "cs": run.consumed_seq,
                "rp": run.race_pc,
                "ru": run.race_until,
                "id": run.id,
            },
        )

    def _log(
        self, conn: Connection, run: _Run, name: str, now: int, details: dict[str, Any]
    ) -> None:
        """Record a decision with its reason (written with the job's other log lines)."""
        if name in _ACTS:
            _acted(run)
        if "step" in details:
            self._state().passes.append(
                (run.journey_id, run.version, details["step"], name, run.id, now)
            )
        self._append(conn, run, None, now, "track", name, {"properties": details}, source="system")

    @contextmanager
    def _journal(self, conn: Connection) -> Iterator[None]:
        """Around each handler: the job's log lines are written when it ends, in its
        transaction; a handler that fails leaves nothing behind (its savepoint is rolled
        back, and so is what it had not written yet)."""
        state = self._state()
        state.depth += 1
        try:
            yield
            if state.depth == 1:
                self._flush(conn)
        finally:
            state.depth -= 1
            if state.depth == 0:
                state.events, state.passes, state.profiles = [], [], {}
                state.ending = None
                state.refusals = {}

    def _state(self) -> _Journal:
        state: _Journal | None = getattr(self._local, "journal", None)
        if state is None:
            state = self._local.journal = _Journal()
        return state

    def _flush(self, conn: Connection) -> None:
        """Write the pending log lines: one insert for the counts, one append for the
        events (Parcours' own, about known customers: the log's fast path)."""
        state = self._state()
        if state.passes:
            insert_rows(
                conn,
                journey_passes,
                ("journey_id", "version", "step_id", "outcome", "run_id", "at"),
                state.passes,
            )
            state.passes = []
        if state.refusals:
            insert_rows(
                conn,
                journey_refusals,
                ("journey_id", "version", "customer_id", "reason", "count", "at"),
                [(*counted, n, at) for counted, (n, at) in state.refusals.items()],
            )
            state.refusals = {}
        if state.events:
            events, state.events = state.events, []
            append_events(conn, [events], events[-1].received_at, self.region, ())

    def _forget(self, conn: Connection, run: _Run) -> None:
        """A run written: what the batch read of it beforehand is out of date."""
        batch = self._batch(conn)
        if batch is not None:
            batch.runs.pop(run.id, None)

    def _profile(self, conn: Connection, customer: int) -> dict[str, Any]:
        """The customer as conditions see them, read once per job (or per batch)."""
        state = self._state()
        if state.depth == 0:
            return customers.conditions_view(conn, customer)
        profile = state.profiles.get(customer)
        if profile is None:
            batch = self._batch(conn)
            profile = batch.profiles.get(customer) if batch is not None else None
            if profile is None:
                profile = customers.conditions_view(conn, customer)
            state.profiles[customer] = profile
        return profile

    def _append(
        self,
        conn: Connection,
        run: _Run,
        instruction: Instruction | None,
        now: int,
        kind: str,
        name: str | None,
        body: dict[str, Any],
        *,
        source: str,
    ) -> None:
        """Append an event about this run to the log, in this transaction (the one door)."""
        if source != "system":
            _acted(run)
        self._sequence = getattr(self, "_sequence", 0) + 1
        properties = dict(body.get("properties", {}))
        properties.setdefault("journey_id", run.journey_id)
        properties.setdefault("run_id", run.id)
        document: dict[str, Any] = {"type": kind, **body, "properties": properties}
        if name:
            document["event"] = name
        message_id = f"journey:{run.id}:{run.pc}:{name or kind}:{now}:{self._sequence}"
        document["messageId"] = message_id
        event = Event(
            message_id=message_id,
            type=kind,
            name=name,
            user_id=None,
            anonymous_id=None,
            properties=properties,
            traits=body.get("traits", {}),
            context={},
            occurred_at=now,
            received_at=now,
            timestamp=None,
            sent_at=None,
            source=source,
            payload=_encode(document).decode(),
            customer_id=run.customer_id,
        )
        state = self._state()
        if source == "system" and state.depth > 0:
            state.events.append(event)  # a log line: written when the job ends
            return
        # What the journey emits may start or move other journeys, change a segment, and
        # change the profile: earlier log lines go first, and the profile is read again.
        self._flush(conn)
        hooks: tuple[Hook, ...] = () if source == "system" else tuple(self._hooks)
        append_events(conn, [[event]], now, self.region, hooks)
        state.profiles.clear()

    # ---- loading ------------------------------------------------------------------------

    def _program(self, conn: Connection, journey_id: str, version: int) -> Program:
        key = (journey_id, version)
        with self._lock:
            program = self._programs.get(key)
        if program is None:
            program = compile_journey(
                journeys_api.parse(journeys_api.version_source(conn, journey_id, version)),
                version,
            )
            with self._lock:
                self._programs[key] = program
        return program

    def _live_programs(self, conn: Connection) -> list[Program]:
        return [self._program(conn, j, v) for j, v, _ in journeys_api.live_versions(conn)]

    def _paused_programs(self, conn: Connection) -> list[Program]:
        """Paused versions: they take no entry, and say so in the customer's trace."""
        return [
            self._program(conn, j, v)
            for j, v, status in journeys_api.running_versions(conn)
            if status == "paused"
        ]

    def _listened_names(self, conn: Connection) -> set[str]:
        """Entry events of live journeys, and every event that can move or end a run of a
        version that may still have runs (live, paused or superseded)."""
        versions = tuple(journeys_api.running_versions(conn))
        with self._lock:
            known = self._interest
        if known is not None and known[0] == versions:
            return known[1]  # read for every group of events: the same versions, the same set
        names: set[str] = set()
        traits: set[str] = set()
        entry_traits: dict[str, list[str]] = {}
        goals: set[str] = set()
        longest = 0
        for journey_id, version, status in versions:
            journey = self._program(conn, journey_id, version).journey
            trigger = entry_event(journey)
            if status in ("live", "paused") and trigger:
                names.add(trigger)  # a paused journey records the refusal
            for goal in journey.goals:
                goals.add(goal.event)
                if goal.window is not None:
                    longest = max(longest, _window_ms(goal.window))
            if status == "live" and journey.entry.date_trait:
                entry_traits.setdefault(journey.entry.date_trait, []).append(journey_id)
            names |= listened_events(journey)
            traits |= waited_traits(journey)
        with self._lock:
            self._waited_traits = traits
            self._entry_traits = entry_traits
            self._goal_names, self._longest_window = goals, longest
            self._interest = (versions, names)
        return names

    def _active_runs(self, conn: Connection, customer: int) -> list[_Run]:
        lock = "" if conn.dialect.name == "sqlite" else " FOR UPDATE"
        rows = sql(
            conn,
            f"SELECT * FROM journey_runs WHERE customer_id = :c AND state = 'active' "
            f"ORDER BY id{lock}",
            {"c": customer},
        ).all()
        return [_run_of(row) for row in rows]

    def _load_run(self, conn: Connection, run_id: int) -> tuple[_Run, str] | None:
        """An active run, locked, and its version's status (a paused journey holds it)."""
        suffix = " FOR UPDATE OF r" if conn.dialect.name != "sqlite" else ""
        row = sql(
            conn,
            "SELECT r.*, v.status AS version_status FROM journey_runs r JOIN journey_versions v "
            "ON v.journey_id = r.journey_id AND v.version = r.version "
            f"WHERE r.id = :id AND r.state = 'active'{suffix}",
            {"id": run_id},
        ).first()
        return (_run_of(row), str(row.version_status)) if row is not None else None


def _run_of(row: Any) -> _Run:
    return _Run(
        id=row.id,
        journey_id=row.journey_id,
        version=row.version,
        customer_id=row.customer_id,
        run_key=row.run_key,
        pc=row.pc,
        waiting=row.waiting,
        wait_event=row.wait_event,
        wait_key=row.wait_key,
        due_at=row.due_at,
        entered_at=row.entered_at,
        entry_event=_decode(row.entry_event),
        entry_message_id=row.entry_message_id,
        consumed_seq=row.consumed_seq,
        control=bool(row.control),
        race_pc=row.race_pc,
        race_until=row.race_until,
    )


def _traits_set(kind: Any, traits: Any, context: Any) -> dict[str, Any]:
    """The traits an event sets: an identify's, and any event's `context.traits` (Segment's
    rule, and how Parcours sets `referral_code` with `Referral Code Issued`)."""
    found: dict[str, Any] = {}
    in_context = context.get("traits") if isinstance(context, dict) else None
    if isinstance(in_context, dict):
        found.update(in_context)
    if kind == "identify" and isinstance(traits, dict):
        found.update(traits)
    return found


def _first_match(goals: list[Goal], name: str, event: dict[str, Any], run: _Run) -> Goal | None:
    for goal in goals:
        if goal.event != name:
            continue
        if goal.key and normalise_key(resolve_path(goal.key, {"event": event})) != _entry_key(
            goal.key, run
        ):
            continue
        if goal.where and not matches(goal.where, {"event": event, "entry": run.entry_event}):
            continue
        return goal
    return None


def _ending(
    journey: Journey, run: _Run, name: str, event: dict[str, Any], occurred_at: int
) -> tuple[str, bool] | None:
    """Whether this event ends the run: the reason, and whether it is a conversion (a goal,
    within the goal's window); None if it is neither a goal nor an exit of the run."""
    goal = _first_match(journey.goals, name, event, run)
    if goal is not None:
        if _within_window(goal, run, occurred_at):
            return f"goal reached: {goal.event}", True
        return f"goal reached: {goal.event} (after its window)", False
    leave = _first_match(journey.exits, name, event, run)
    if leave is not None:
        return f"exit condition: {leave.event}", False
    return None


def _first_ending(
    journey: Journey, run: _Run, rows: list[Any], now: int
) -> tuple[str, bool] | None:
    """The first of these events (oldest first, as `_read_ending` gives them) that ends
    the run: a goal or an exit of it dated from its entry up to `now`, not the event that
    started it. Its reason and whether it converts, or None."""
    names = _ending_names(journey)
    for row in rows:
        if (
            row.occurred_at < run.entered_at
            or row.occurred_at > now
            or row.name not in names
            or row.message_id == run.entry_message_id
        ):
            continue
        event = _decode(row.payload)
        event["event"] = row.name
        ending = _ending(journey, run, row.name, event, int(row.occurred_at))
        if ending is not None:
            return ending
    return None


def _ending_names(journey: Journey) -> frozenset[str]:
    """The events that may end a run of this journey: its goals' and its exits'."""
    return frozenset(goal.event for goal in (*journey.goals, *journey.exits))


def _read_ending(
    conn: Connection, customers: set[int], names: frozenset[str], since: int
) -> dict[int, list[Any]]:
    """These customers' events named so, dated from `since`, oldest first, in one query."""
    if not customers or not names:
        return {}
    ids, wanted = sorted(customers), sorted(names)
    found: dict[int, list[Any]] = {}
    for row in sql(
        conn,
        "SELECT seq, message_id, customer_id, name, occurred_at, payload FROM events "
        "WHERE customer_id IN ({}) AND name IN ({}) AND occurred_at >= :since "
        "ORDER BY occurred_at, seq".format(
            ", ".join(f":c{i}" for i in range(len(ids))),
            ", ".join(f":n{i}" for i in range(len(wanted))),
        ),
        {
            "since": since,
            **{f"c{i}": customer for i, customer in enumerate(ids)},
            **{f"n{i}": name for i, name in enumerate(wanted)},
        },
    ).all():
        found.setdefault(int(row.customer_id), []).append(row)
    return found


def _entry_key(path: str | None, run: _Run) -> str | None:
    if path is None:
        return None
    return normalise_key(resolve_path(path, {"event": run.entry_event}))


def _wait_matches(spec: Any, event: dict[str, Any], run: _Run) -> bool:
    if spec.key:
        expected = _entry_key(spec.key, run)
        if expected is None or normalise_key(resolve_path(spec.key, {"event": event})) != expected:
            return False
    return not spec.where or matches(spec.where, {"event": event, "entry": run.entry_event})


def _within_window(goal: Goal, run: _Run, occurred_at: int) -> bool:
    """Whether a goal event at this time is the run's conversion: within the goal's window
    from entry (any time while the run goes on, for a goal without one)."""
    if goal.window is None:
        return True
    return occurred_at <= _after(run.entered_at, parse_duration(goal.window))


def _window_ms(window: str) -> int:
    duration = parse_duration(window)
    return duration.seconds * 1000 + duration.months * 31 * 86_400_000


# What a run does that cannot be taken back: once done, a late event no longer turns it
# onto the path of the wait it timed out of. These are the decisions logged for it; what a
# run emits, sets on the profile or creates as a task goes through `_append` with source
# "journey", which counts as acting too.
_ACTS = frozenset({"Message Queued", "Webhook Scheduled"})


def _acted(run: _Run) -> None:
    if run.race_pc is not None:
        run.race_pc = run.race_until = None
        run.dirty = True


def _after(base: int, duration: Duration) -> int:
    moment = from_ms(base)
    if duration.months:
        moment = _add_months(moment, duration.months)
    return to_ms(moment) + duration.seconds * 1000


def _add_months(moment: datetime, months: int) -> datetime:
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    for day in range(moment.day, 27, -1):
        try:
            return moment.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    return moment.replace(year=year, month=month, day=min(moment.day, 28))


def zone_of(profile: dict[str, Any], fallback: str = "UTC") -> tuple[ZoneInfo, str]:
    """The customer's time zone and where it comes from; the brand's time zone (setting
    `brand_timezone`) for a customer with none, or with one that is not a valid IANA name."""
    computed = profile.get("computed", {})
    name = computed.get("timezone")
    if name:
        try:
            zone = ZoneInfo(str(name))
        except (ZoneInfoNotFoundError, ValueError):
            why = f"the customer's time zone {name!r} is not valid"
        else:
            source = computed.get("timezone_source")
            return zone, (
                "the customer's, from their country"
                if source == "country"
                else "the customer's, from their device"
            )
    else:
        why = "no time zone is known for the customer"
    try:
        return ZoneInfo(fallback), f"{why}: the brand's"
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC"), f"{why}: UTC"


def customer_zone(profile: dict[str, Any], fallback: str = "UTC") -> ZoneInfo:
    return zone_of(profile, fallback)[0]


def _zone_details(profile: dict[str, Any], fallback: str) -> dict[str, str]:
    """What a local-time wait's trace says of the time zone it used, and why."""
    zone, why = zone_of(profile, fallback)
    return {"time_zone": zone.key, "time_zone_reason": why}


def next_local_time(
    base: int, spec: WaitUntil, profile: dict[str, Any], fallback: str = "UTC"
) -> int:
    """The first moment at or after `base` that is `spec.time` on an allowed weekday, in the
    customer's time zone. A local time that does not exist that day (spring forward) moves
    forward by the gap; an ambiguous one (fall back) takes its first occurrence."""
    assert spec.time is not None
    zone = customer_zone(profile, fallback)
    hour, minute = (int(part) for part in spec.time.split(":"))
    allowed = {WEEKDAYS.index(day) for day in spec.weekdays} or set(range(7))
    local = from_ms(base).astimezone(zone)
    for offset in range(0, 15):
        day = (local + timedelta(days=offset)).date()
        if day.weekday() not in allowed:
            continue
        wall = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone, fold=0)
        moment = _resolve_wall_time(wall)
        if to_ms(moment) >= base:
            return to_ms(moment)
    raise AssertionError("no allowed weekday within two weeks")


def _resolve_wall_time(wall: datetime) -> datetime:
    """A wall-clock time made real. With fold=0 (PEP 495), a time skipped by a spring-
    forward change maps to the offset before it, i.e. forward by the gap (02:30 -> 03:30),
    and an ambiguous time at fall-back is its first occurrence."""
    return wall.replace(fold=0).astimezone(UTC)


def _date_spec(entry: Any) -> WaitUntil:
    """A date-trait entry read as the wait it amounts to."""
    return WaitUntil(trait=entry.date_trait, offset=entry.offset, at=entry.at, yearly=entry.yearly)


def trait_moment(
    profile: dict[str, Any], spec: WaitUntil, now: int, fallback: str = "UTC"
) -> tuple[int | None, str]:
    """The moment a date trait points at, plus the offset; (None, why) when there is none.

    A date without a time is that day in the customer's time zone, at `at` (default
    00:00). With `yearly`, the next anniversary at or after now; 29 February falls on
    28 February in other years."""
    assert spec.trait is not None
    value = profile.get("traits", {}).get(spec.trait)
    if value is None or value == "":
        return None, f"{spec.trait} is missing"
    zone = customer_zone(profile, fallback)
    offset = parse_duration(spec.offset, signed=True) if spec.offset else Duration(0)
    try:
        moment = _trait_datetime(str(value), zone, spec.at)
    except ValueError:
        return None, f"{spec.trait} is not a date: {value!r}"
    if spec.yearly:
        year = from_ms(now).astimezone(zone).year
        for candidate in (year - 1, year, year + 1):
            due = _after(to_ms(_same_day_in(moment, candidate)), offset)
            if due >= now:
                return due, ""
        return None, f"{spec.trait} has no coming anniversary"
    return _after(to_ms(moment), offset), ""


def _trait_datetime(value: str, zone: ZoneInfo, at: str | None) -> datetime:
    text_value = value.strip()
    if len(text_value) == 10:  # a date: that day, in the customer's time zone
        day = datetime.fromisoformat(text_value)
        hour, minute = (int(part) for part in (at or "00:00").split(":"))
        # Local wall time (fold=0: a skipped time moves forward, as for time-of-day waits).
        return day.replace(hour=hour, minute=minute, tzinfo=zone)
    moment = datetime.fromisoformat(text_value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def _same_day_in(moment: datetime, year: int) -> datetime:
    try:
        return moment.replace(year=year)
    except ValueError:  # 29 February in a year without one
        return moment.replace(year=year, day=28)


def _bucket(text_value: str, size: int = 100) -> int:
    digest = hashlib.sha256(text_value.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % size
