"""The journey engine: the jobs that enter customers, move their runs and end them.

It runs on the durable queue (runtime/queue.py): each active run has at most one live job,
keyed `run:<id>`, so moving a run on replaces its job and ending it deletes the job, in the
same transaction as whatever decided it. The event log's reaction enqueues a
`journeys.react` job for events some live journey listens to, in the transaction that
stored them. See docs/journeys.md for the semantics and docs/journeys-engine.md for the
modules: what a run does is decided by `interpreter`, carried out by `runner`, kept by
`store`; `entries` says who enters, `people` follows a merge of two customers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection

from parcours.customers import profiles as customers
from parcours.journeys import interpreter, people, store
from parcours.journeys import versions as journeys_api
from parcours.journeys.entries import DATE_ENTRY, DATE_SCAN, Entries
from parcours.journeys.journal import Batch, EndingLog, Journal
from parcours.journeys.program import Program, enters_on, entry_event
from parcours.journeys.programs import Programs
from parcours.journeys.runner import QUEUE, STEP, Runner
from parcours.journeys.runs import LoggedEvent, Run, ending_names, first_ending, traits_set
from parcours.journeys.times import next_local_time, trait_moment, zone_of
from parcours.log import Event, Reactions
from parcours.messaging import Policies, hold_sends, read_ahead_sends
from parcours.runtime.clock import Clock
from parcours.runtime.queue import Job, Worker, enqueue, try_lock_customers

__all__ = ["QUEUE", "JourneyEngine", "next_local_time", "trait_moment", "zone_of"]

REACT = "journeys.react"
# The most events one reaction job takes (more when one customer has more): a group of
# them is a few jobs, which several workers share.
REACT_EVENTS = 200


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
        self.journal = Journal(default_region)
        self.programs = Programs()
        self.runner = Runner(
            self.journal,
            self.programs,
            policies or Policies.load(),
            region=default_region,
            sector=sector,
            timezone=timezone,
        )
        self.entries = Entries(self.journal, self.programs, self.runner)
        # The merge hooks of the packages a step writes to (services.py): for a run whose
        # customer was merged while the run was being made (`_follow_late_merges`).
        self.late_merge: Callable[..., None] | None = None

    def install(self, worker: Worker, reactions: Reactions) -> None:
        """Run the journeys' jobs on `worker`, and react to every append."""
        self.register_jobs(worker)
        reactions.react("journeys", self.on_events)
        reactions.read_ahead(store.RUNNING_VERSIONS)
        self.journal.reactions = reactions  # what a journey emits goes through them all

    def register_jobs(self, worker: Worker) -> None:
        """Run the journeys' jobs on `worker` too (one more worker of the same process)."""
        worker.register(REACT, self.react, in_sets=True)
        worker.register(STEP, self.step, prepare=self.prepare_steps, in_sets=True)
        worker.register(journeys_api.STATUS_JOB, self.status_changed)
        worker.register(DATE_ENTRY, self.date_entry)
        worker.register(DATE_SCAN, self.date_scan)

    # ---- reacting to events ---------------------------------------------------------------

    def follow_merge(self, conn: Connection, merged: int, survivor: int, now: int) -> None:
        """The journeys' merge hook (customers.people): the runs of both profiles go on, on
        the survivor, a keyed run both had kept once (journeys.people)."""
        batch = self.journal.batch(conn)
        if batch is not None:  # what the running batch read of either is out of date
            batch.runs.clear()
            batch.profiles.clear()
        with self.journal.job(conn):
            people.follow_merge(conn, merged, survivor, now, self.runner)

    def on_events(self, conn: Connection, events: list[Event], now: int) -> None:
        """Reaction to an append: enqueue a reaction for the events some live journey listens to."""
        self.journal.appended(conn, events)
        names = self.programs.listened_names(conn)
        traits = self.programs.waited_traits | set(self.programs.entry_traits)
        if not names and not traits:
            return
        about = [
            e
            for e in events
            if e.customer_id is not None
            and (e.name in names or not traits.isdisjoint(traits_set(e.type, e.traits, e.context)))
        ]
        # A reaction about one customer is claimed with that customer's lock. A large
        # group's reactions are split, a customer's events together, so that several
        # workers share them (a reaction of a thousand entries was one worker's alone).
        for part in _parts_by_customer(about, REACT_EVENTS):
            whom = {e.customer_id for e in part}
            enqueue(
                conn,
                REACT,
                {"events": [e.message_id for e in part]},
                run_at=now,
                now=now,
                queue=QUEUE,
                customer_id=whom.pop() if len(whom) == 1 else None,
            )

    def react(self, conn: Connection, job: Job) -> None:
        with self.journal.job(conn):
            self._react(conn, job.payload["events"])

    def _react(self, conn: Connection, ids: list[str]) -> None:
        events = self._own_customers(conn, store.events_by_message_id(conn, ids))
        live = self.programs.live(conn)
        paused = self.programs.paused(conn)
        self.programs.listened_names(conn)  # the goals that may convert runs that have ended
        now = self.clock.now_ms()
        # Their runs, read for all of them (when reactions run as a set).
        store.read_ahead_runs(
            conn,
            sorted({event.customer_id for event in events}),
            sorted({p.journey.id for p in [*live, *paused]}),
        )
        # What a first step's send checks, for the customers whose event enters a live
        # journey (one may send at once: the abandoned cart's first email), read at once.
        triggers = {entry_event(p.journey) for p in live}
        entering = sorted({event.customer_id for event in events if event.name in triggers})
        if entering:
            read_ahead_sends(conn, self.runner.policies, entering, now)
            self.journal.pending().profiles.update(customers.condition_views(conn, entering))
        if events:  # the runs this reaction enters: their goals, read at once if they act
            self.journal.pending().ending = EndingLog(
                {event.customer_id for event in events},
                frozenset(name for p in live for name in ending_names(p.journey)),
                min(event.occurred_at for event in events),
                now,
            )
        for event in events:
            document = event.document()
            self.runner.on_event(conn, event, document, now)
            if event.name in self.programs.goal_names:
                self.runner.convert_ended(conn, event, document, now)
            self._enter_on(conn, event, document, live, paused, now)

    def _enter_on(
        self,
        conn: Connection,
        event: LoggedEvent,
        document: dict[str, Any],
        live: list[Program],
        paused: list[Program],
        now: int,
    ) -> None:
        """The journeys this event enters the customer into (or would, when paused: the
        customer's trace says why not), and the date entries a changed trait moves."""
        changed = traits_set(document.get("type"), document.get("traits"), document.get("context"))
        customer, entries = event.customer_id, self.entries
        for program in live:
            trait = program.journey.entry.date_trait
            if trait and trait in changed:
                entries.schedule_date_entry(conn, program, customer, now)
            if enters_on(program.journey, event.name, document):
                entries.try_enter(
                    conn, program, customer, event.message_id, event.occurred_at, document, now
                )
        for program in paused:
            if enters_on(program.journey, event.name, document):
                entries.try_enter(
                    conn,
                    program,
                    customer,
                    event.message_id,
                    event.occurred_at,
                    document,
                    now,
                    paused=True,
                )

    def _own_customers(self, conn: Connection, events: list[LoggedEvent]) -> list[LoggedEvent]:
        """The events of the customers whose lock this reaction holds or can take at once
        (PostgreSQL; all of them on SQLite). Another worker's customers get a reaction of
        their own, claimed once that worker is done with them: a worker never waits for a
        customer's lock, so two workers never deadlock, and never decide about one
        customer from two different views."""
        about = {event.customer_id for event in events}
        mine = try_lock_customers(conn, about)
        if len(mine) == len(about):
            return events
        now = self.clock.now_ms()
        left = sorted(about - mine)
        # One reaction for all of them (a job per customer made hundreds when two workers'
        # groups of a thousand shared some buckets of the customer locks).
        enqueue(
            conn,
            REACT,
            {"events": [e.message_id for e in events if e.customer_id not in mine]},
            run_at=now,
            now=now,
            queue=QUEUE,
            customer_id=left[0] if len(left) == 1 else None,
        )
        return [event for event in events if event.customer_id in mine]

    # ---- a version paused, resumed, superseded or archived ---------------------------------

    def status_changed(self, conn: Connection, job: Job) -> None:
        """A version was paused, resumed, superseded or archived: act on its runs."""
        with self.journal.job(conn):
            self._status_changed(conn, job.payload)

    def _status_changed(self, conn: Connection, change: dict[str, Any]) -> None:
        journey_id, version = change["journey_id"], int(change["version"])
        now = self.clock.now_ms()
        if "runs" in change:  # a second pass: the runs the first one left, still active
            named = sorted(int(run_id) for run_id in change["runs"])
            runs = store.runs_by_id(conn, named, active_only=True)
        else:
            runs = store.active_runs_of_version(conn, journey_id, version)
        runs = self._runs_to_act_on(conn, runs, change, now)
        if change["to"] == "live" and not change.get("again"):
            program = self.programs.get(conn, journey_id, version)
            if program.journey.entry.date_trait:  # every customer's date, scheduled
                scan = {"journey_id": journey_id, "version": version, "after": 0}
                enqueue(conn, DATE_SCAN, scan, run_at=now, now=now, queue=QUEUE)
        for run in runs:
            decisions = interpreter.on_version_change(run, change["from"], change["to"], now)
            self.runner.apply(conn, run, decisions, now)

    def _runs_to_act_on(
        self, conn: Connection, runs: list[Run], change: dict[str, Any], now: int
    ) -> list[Run]:
        """The runs of customers another worker is deciding about are left to a second
        pass, a second later, which names them: their locks are taken without waiting, as
        claims do, and the runs already acted on are not read again."""
        about = {run.customer_id for run in runs}
        mine = try_lock_customers(conn, about)
        if len(mine) == len(about):
            return runs
        left = sorted(run.id for run in runs if run.customer_id not in mine)
        enqueue(
            conn,
            journeys_api.STATUS_JOB,
            {**change, "again": True, "runs": left},
            run_at=now + 1000,
            now=now,
            queue=QUEUE,
        )
        return [run for run in runs if run.customer_id in mine]

    # ---- entries on a date held by a trait -------------------------------------------------

    def date_scan(self, conn: Connection, job: Job) -> None:
        with self.journal.job(conn):
            self.entries.date_scan(conn, job.payload, self.clock.now_ms())

    def date_entry(self, conn: Connection, job: Job) -> None:
        with self.journal.job(conn):
            self.entries.date_entry(conn, job.payload, self.clock.now_ms())

    # ---- moving a run -------------------------------------------------------------------

    def prepare_steps(self, conn: Connection, jobs: list[Job]) -> None:
        """Before a batch of steps: their runs (locked) and their customers, read at once
        (two or three queries instead of two or three per step), and, when the first step
        acts, the goal and exit events of all their customers (one query). What the batch
        changes is dropped from this as it goes (a run saved or ended, appends, merges).
        The batch's steps act as of the moment it looked (`Batch.now`): anything stored
        before then is in what they read."""
        pending = self.journal.pending()
        pending.batch = None  # should this fail, the jobs read what they need themselves
        now = self.clock.now_ms()
        runs = store.load_runs(conn, sorted({int(job.payload["run"]) for job in jobs}))
        customer_ids = sorted({run.customer_id for run, _ in runs.values()})
        # The customers' locks (PostgreSQL): taken with their jobs when claimed, so none is
        # asked for here unless a merge moved a run since (nothing on SQLite).
        hold_sends(conn, customer_ids)
        profiles = customers.condition_views(conn, customer_ids)
        if len(profiles) < len(customer_ids) and self._follow_late_merges(
            conn, [c for c in customer_ids if c not in profiles], now
        ):  # where the runs stand now, and their customers
            runs = store.load_runs(conn, sorted({int(job.payload["run"]) for job in jobs}))
            customer_ids = sorted({run.customer_id for run, _ in runs.values()})
            hold_sends(conn, customer_ids)
            profiles = customers.condition_views(conn, customer_ids)
        # What their sends will check, read for all of them (when the steps run as a set).
        read_ahead_sends(conn, self.runner.policies, customer_ids, now)
        ending = EndingLog(
            set(customer_ids),
            frozenset(
                name
                for run, _ in runs.values()
                for name in ending_names(
                    self.programs.get(conn, run.journey_id, run.version).journey
                )
            ),
            min((run.entered_at for run, _ in runs.values()), default=now),
            now,
        )
        pending.batch = Batch(conn, runs, profiles, now, ending)

    def _follow_late_merges(self, conn: Connection, gone: list[int], now: int) -> bool:
        """Customers of runs that are no longer there (merged or erased; condition_views
        leaves them out): those merged into another have their runs, jobs, messages and
        events moved to the survivor now. A run entered by a worker while the merge of its
        customer was being stored by the writer was not committed yet, so the merge could
        not move it (docs/architecture.md, "Concurrency on PostgreSQL"). Whether any moved."""
        merged = customers.survivors(conn, gone)
        if self.late_merge is None or not merged:
            return False
        for merged_id, survivor in merged.items():
            self.late_merge(conn, merged_id, survivor, now)
        return True

    def step(self, conn: Connection, job: Job) -> None:
        with self.journal.job(conn):
            self._step(conn, job)

    def _step(self, conn: Connection, job: Job) -> None:
        run_id = int(job.payload["run"])
        batch = self.journal.batch(conn)
        loaded = batch.runs.pop(run_id, None) if batch is not None else None
        if loaded is None:  # not read with a batch: read alone, its customer's merge followed
            loaded = store.load_run(conn, run_id)
            if loaded is not None and self._follow_late_merges(
                conn, [loaded[0].customer_id], self.clock.now_ms()
            ):
                loaded = store.load_run(conn, run_id)
        if loaded is None:
            return  # the run ended: its timer fires with no effect
        run, status = loaded
        run.has_job = False  # this job was its one job, taken when claimed
        now = batch.now if batch is not None else self.clock.now_ms()
        if status == "paused":
            self.runner.apply(conn, run, interpreter.while_paused(run), now)
            return
        # After downtime a timer fires late; the run's own time is when it was due, so that
        # chained waits catch up in order.
        self.runner.advance(conn, run, now, job.run_at)

    # ---- delivery's check before a send ------------------------------------------------------

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
        runs = store.runs_by_id(conn, sorted(by_run))
        journeys = {
            run.id: self.programs.get(conn, run.journey_id, run.version).journey for run in runs
        }
        names = frozenset(name for j in journeys.values() for name in ending_names(j))
        if not names:
            return {}
        found = store.ending_events(
            conn, {run.customer_id for run in runs}, names, min(run.entered_at for run in runs)
        )
        unwanted: dict[int, str] = {}
        for run in runs:
            ending = first_ending(journeys[run.id], run, found.get(run.customer_id, []), now)
            if ending is not None:
                unwanted.update((outbox_id, ending[0]) for outbox_id in by_run[run.id])
        return unwanted


def _parts_by_customer(events: list[Event], most: int) -> list[list[Event]]:
    """The events in parts of about `most`, in their order, a customer's all in one part
    (the first part that holds one of them)."""
    if len(events) <= most:
        return [events] if events else []
    parts: list[list[Event]] = []
    where: dict[int | None, int] = {}
    for event in events:
        index = where.get(event.customer_id)
        if index is None:
            if not parts or len(parts[-1]) >= most:
                parts.append([])
            index = where[event.customer_id] = len(parts) - 1
        parts[index].append(event)
    return parts
