"""The durable job queue: timers and steps in the database, run exactly once (docs/queue.md)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import select
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import msgspec
from prometheus_client import Counter
from sqlalchemy import BigInteger, Column, Connection, Index, Integer, Table, Text, text

from parcours.runtime.clock import Clock, clock_ms, real_seconds
from parcours.runtime.counting import counting
from parcours.runtime.db import (
    BigId,
    Database,
    forget_locks,
    held,
    held_buckets,
    holding_writes,
    insert_rows,
    metadata,
    note_jobs_scheduled,
    release_held,
    sql,
    sql_many,
    sql_write,
    stop_holding,
    transaction_note,
    try_lock_buckets,
    upsert_rows,
)
from parcours.runtime.logs import bind_job, unbind_job

log = logging.getLogger(__name__)

jobs = Table(
    "jobs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("queue", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("unique_key", Text, nullable=True, unique=True),
    Column("payload", Text, nullable=False),
    Column("state", Text, nullable=False),  # available | failed
    Column("run_at", BigInteger, nullable=False),
    Column("attempt", Integer, nullable=False, server_default="0"),
    Column("max_attempts", Integer, nullable=False, server_default="10"),
    Column("last_error", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("customer_id", BigInteger, nullable=True),
    # A job put back for the end of a lease names the worker holding it (its heartbeat
    # id): when that worker is gone, the job is brought forward (`rescue_leases`).
    Column("lease_owner", Text, nullable=True),
)
Index("ix_jobs_due", jobs.c.state, jobs.c.queue, jobs.c.run_at, jobs.c.id)
Index(
    "ix_jobs_lease_owner",
    jobs.c.lease_owner,
    sqlite_where=text("lease_owner IS NOT NULL"),
    postgresql_where=text("lease_owner IS NOT NULL"),
)
JOBS_FAILED = Counter(
    "parcours_jobs_failed_total",
    "Job attempts whose handler failed (tried again with backoff, or failed for good), by kind",
    ["kind"],
)

NOTIFY_CHANNEL = "parcours_jobs"
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


@dataclass(frozen=True)
class Job:
    id: int
    queue: str
    kind: str
    unique_key: str | None
    payload: dict[str, Any]
    run_at: int
    attempt: int
    max_attempts: int
    customer_id: int | None
    created_at: int = 0


Handler = Callable[[Connection, Job], None]
# Called with every job of its kind in a batch before they run, to read at once what they
# will need (an optimisation only: a preparer that fails is rolled back and ignored).
Preparer = Callable[[Connection, list[Job]], None]
OnConflict = Literal["ignore", "replace"]


def enqueue(
    conn: Connection,
    kind: str,
    payload: dict[str, Any],
    *,
    run_at: int,
    now: int,
    queue: str = "default",
    unique_key: str | None = None,
    on_conflict: OnConflict = "replace",
    customer_id: int | None = None,
    max_attempts: int = 10,
    lease_owner: str | None = None,
) -> None:
    """Add a job in the caller's transaction. With a unique key that is already live, either
    keep the live job (`ignore`) or replace its kind, payload and time (`replace`).
    `lease_owner`: the job is put back for the end of a lease while that worker makes a
    call (`Worker.lease_owner`); it is brought forward should the worker be gone."""
    body = _encode(payload).decode()
    values = {
        "queue": queue,
        "kind": kind,
        "unique_key": unique_key,
        "payload": body,
        "run_at": run_at,
        "created_at": now,
        "customer_id": customer_id,
        "max_attempts": max_attempts,
        "lease_owner": lease_owner,
    }
    later = held(conn, _HELD_JOBS, _HeldJobs)
    if later is not None:
        later.put(values, on_conflict if unique_key is not None else None)
    else:
        sql_write(conn, _ENQUEUE[on_conflict if unique_key is not None else None], values)
    if conn.dialect.name != "sqlite":
        _notify(conn, run_at)
    else:
        note_jobs_scheduled(conn, run_at)


_HELD_JOBS = "queue.jobs"


class _HeldJobs:
    """The jobs a batch schedules and cancels, sent at its end: for each unique key, what
    the sequence of its changes comes to (a DELETE first when one went to the database's
    row, then the last insert), in three statements at most."""

    def __init__(self) -> None:
        self.deleted: set[str] = set()
        self.puts: dict[str, tuple[dict[str, Any], OnConflict]] = {}
        self.unkeyed: list[dict[str, Any]] = []

    def put(self, values: dict[str, Any], on_conflict: OnConflict | None) -> None:
        key = values["unique_key"]
        if on_conflict is None or key is None:
            self.unkeyed.append(values)
        elif on_conflict == "replace" or key not in self.puts:
            self.puts[key] = (values, on_conflict)
        # else `ignore` with a job held under its key: that one stands

    def cancel(self, key: str) -> bool:
        self.deleted.add(key)
        return self.puts.pop(key, None) is not None

    def write(self, conn: Connection) -> None:
        if self.deleted:
            sql_many(
                conn, "DELETE FROM jobs WHERE unique_key = :k", [{"k": k} for k in self.deleted]
            )
        columns = ("state", *_COLUMNS)
        insert_rows(conn, jobs, columns, [_job_row(values) for values in self.unkeyed])
        for rule in ("replace", "ignore"):
            rows = [_job_row(values) for values, how in self.puts.values() if how == rule]
            upsert_rows(
                conn,
                jobs,
                columns,
                rows,
                conflict=("unique_key",),
                updates=_REPLACED if rule == "replace" else None,
            )


def _job_row(values: dict[str, Any]) -> tuple[Any, ...]:
    return ("available", *(values[name] for name in _COLUMNS))


_COLUMNS = (
    "queue",
    "kind",
    "unique_key",
    "payload",
    "run_at",
    "created_at",
    "customer_id",
    "max_attempts",
    "lease_owner",
)
_INSERT_JOB = (
    f"INSERT INTO jobs (state, {', '.join(_COLUMNS)}) "
    f"VALUES ('available', {', '.join(':' + name for name in _COLUMNS)})"
)
# A job scheduled again under its key: what it replaces of the one stored.
_REPLACED = {
    "kind": "excluded.kind",
    "payload": "excluded.payload",
    "run_at": "excluded.run_at",
    "state": "'available'",
    "attempt": "0",
    "last_error": "NULL",
    "queue": "excluded.queue",
    "max_attempts": "excluded.max_attempts",
    "lease_owner": "excluded.lease_owner",
}
# The statement for each conflict rule, built once (enqueue runs for every step and send).
_ENQUEUE: dict[OnConflict | None, str] = {
    None: _INSERT_JOB,
    "ignore": _INSERT_JOB + " ON CONFLICT (unique_key) DO NOTHING",
    "replace": _INSERT_JOB
    + " ON CONFLICT (unique_key) DO UPDATE SET "
    + ", ".join(f"{column} = {value}" for column, value in _REPLACED.items()),
}


def _notify(conn: Connection, run_at: int) -> None:
    """NOTIFY the workers (delivered at commit) that a job is due at `run_at`: only those
    asleep past that time wake (`_Listener.wait`); a worker woken for a job due later
    looked for work, found none, and slept again, a transaction and a read each time (the
    referral jobs of every group of orders, due at the next second). Once per transaction,
    unless a later job is due earlier."""
    note = transaction_note(conn, "parcours_notified")
    if "run_at" in note and note["run_at"] <= run_at:
        return
    sql_write(
        conn,
        "SELECT pg_notify(:channel, :due)",
        {"channel": NOTIFY_CHANNEL, "due": str(run_at)},
    )
    note["run_at"] = run_at


def cancel(conn: Connection, unique_key: str) -> bool:
    """Remove the live job with this key, if any (in the caller's transaction). While the
    batch holds its writes: whether a job it held was dropped (one in the database goes
    when the batch's writes are sent)."""
    later = held(conn, _HELD_JOBS, _HeldJobs)
    if later is not None:
        return later.cancel(unique_key)
    result = sql(conn, "DELETE FROM jobs WHERE unique_key = :k", {"k": unique_key})
    return bool(result.rowcount)


def reassign_jobs(conn: Connection, merged_id: int, survivor_id: int, now: int) -> None:
    """Profiles merged: the merged customer's jobs are the survivor's (the queue's merge
    hook, customers.people)."""
    release_held(conn, _HELD_JOBS)  # the jobs a batch holds are in the table first
    sql(
        conn,
        "UPDATE jobs SET customer_id = :new WHERE customer_id = :old",
        {"new": survivor_id, "old": merged_id},
    )


def erase_jobs(conn: Connection, customer_ids: Sequence[int]) -> dict[str, int]:
    """A person erased: the jobs keyed by them go too (the queue's erase hook)."""
    release_held(conn, _HELD_JOBS)  # the jobs a batch holds are in the table first
    deleted = conn.execute(jobs.delete().where(jobs.c.customer_id.in_(list(customer_ids))))
    return {"jobs": deleted.rowcount}


def next_run_at(conn: Connection, queues: Iterable[str]) -> int | None:
    """The earliest due time among these queues: one statement, one index lookup per
    queue (a statement per queue was a round trip each, for a worker of four queues
    going to sleep after each batch)."""
    names = list(queues)
    if not names:
        return None
    found = sql(conn, _next_run_at_sql(len(names)), _per_queue(names)).scalar()
    return None if found is None else int(found)


@lru_cache(maxsize=16)
def _next_run_at_sql(queues: int) -> str:
    per_queue = " UNION ALL ".join(
        f"SELECT (SELECT min(run_at) FROM jobs WHERE state = 'available' AND queue = :q{n}) AS due"
        for n in range(queues)
    )
    return f"SELECT min(due) FROM ({per_queue}) AS per_queue"


def _per_queue(names: Sequence[str]) -> dict[str, Any]:
    return {f"q{n}": name for n, name in enumerate(names)}


def extend_leases(conn: Connection, unique_keys: Sequence[str], until: int) -> int:
    """Put back to `until` the lease jobs of these keys (a worker still making its calls
    keeps its lease: nobody makes them again meanwhile). Returns how many were moved."""
    if not unique_keys:
        return 0
    marks = ", ".join(f":k{n}" for n in range(len(unique_keys)))
    result = sql(
        conn,
        f"UPDATE jobs SET run_at = :until WHERE unique_key IN ({marks}) "
        "AND state = 'available' AND run_at < :until",
        {"until": until, **{f"k{n}": key for n, key in enumerate(unique_keys)}},
    )
    return int(result.rowcount)


def rescue_leases(conn: Connection, live: set[str], now: int) -> int:
    """Bring forward, to `now`, the lease jobs of workers that are not in `live` (their
    process died during a call): the call is made again at once, with the same key, rather
    than when the lease runs out. Returns how many jobs were brought forward."""
    owners = {
        str(owner)
        for owner in sql(
            conn, "SELECT DISTINCT lease_owner FROM jobs WHERE lease_owner IS NOT NULL"
        ).scalars()
    }
    gone = sorted(owners - live)
    if not gone:
        return 0
    marks = ", ".join(f":o{n}" for n in range(len(gone)))
    result = sql(
        conn,
        f"UPDATE jobs SET run_at = :now, lease_owner = NULL WHERE lease_owner IN ({marks}) "
        "AND state = 'available'",
        {"now": now, **{f"o{n}": owner for n, owner in enumerate(gone)}},
    )
    if result.rowcount:
        log.warning(
            "brought %s lease job(s) of %s gone worker(s) forward: %s",
            result.rowcount,
            len(gone),
            ", ".join(gone),
        )
    return int(result.rowcount)


# ---- per-customer locks (PostgreSQL) ------------------------------------------------------
# The journey engine and delivery decide about one customer (their runs, their sends) only
# while holding that customer's lock, so that two workers never decide from two different
# views. A worker takes a job's customer lock when it claims the job, without waiting (a
# job whose customer another worker holds is left for later), so a worker never waits for
# a customer lock while it holds anything: no deadlock between workers. Locks are
# transaction-scoped advisory locks in a key space of their own (never the writer's), on
# 4,096 buckets of the customer id. SQLite has one writer at a time: nothing to take.
CUSTOMER_LOCK_SPACE = 5_103
CUSTOMER_LOCK_BUCKETS = 4_096


def customer_bucket(customer_id: int) -> int:
    return customer_id % CUSTOMER_LOCK_BUCKETS


def lock_customers(conn: Connection, customer_ids: Iterable[int]) -> None:
    """Take these customers' locks until the transaction ends, waiting for them, in one
    round trip and in sorted order. Only for a transaction that holds no row another worker
    may want yet (its first statement: recording a batch of sends); a worker's jobs take
    them when claimed (`Worker`), and what is held is not asked for again."""
    if conn.dialect.name == "sqlite":
        return
    held = held_buckets(conn, CUSTOMER_LOCK_SPACE)
    buckets = sorted({customer_bucket(c) for c in customer_ids} - held)
    if not buckets:
        return
    sql(
        conn,
        "SELECT count(pg_advisory_xact_lock(:space, k)) FROM "
        "(SELECT unnest(CAST(:keys AS int[])) AS k ORDER BY 1) AS ordered",
        {"space": CUSTOMER_LOCK_SPACE, "keys": buckets},
    )
    held.update(buckets)


def try_lock_customers(conn: Connection, customer_ids: Iterable[int]) -> set[int]:
    """Take what can be taken of these customers' locks without waiting; return the
    customers whose lock this transaction now holds (all of them on SQLite)."""
    wanted = set(customer_ids)
    held = try_lock_buckets(conn, CUSTOMER_LOCK_SPACE, {customer_bucket(c) for c in wanted})
    return {c for c in wanted if customer_bucket(c) in held}


class Worker:
    """Runs due jobs. `run_due()` for one pass (tests, simulator); `run_forever()` to serve."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        queues: Iterable[str] = ("default",),
        batch: int = 100,
        batch_seconds: float | None = None,
        min_claim: int = 10,
        poll_seconds: float = 1.0,
    ) -> None:
        self.db = db
        self.clock = clock
        self.queues = tuple(queues)
        self.batch = batch
        # A batch takes on no more jobs once it has run about this long: it commits, and a
        # job that fell due meanwhile (a journey's reaction to an event, which on SQLite
        # cannot even be stored while the batch holds the write lock) waits about this
        # long, not for a whole batch of deliveries. 25 ms on SQLite, where the worker
        # shares one process (and its interpreter lock) with the HTTP handlers and the
        # writer: 50 ms put the event-to-intent p99 over 200 ms at 500 events/s, 10 ms let
        # the backlog grow (bench/RESULTS.md, issue 18). On PostgreSQL, where a batch
        # holds no lock the writer needs and each commit is a flush to disk, half a
        # second: enough that commits cost little, short enough that one worker does not
        # claim a whole backlog in one transaction while another has nothing to do (one
        # batch took every reaction of 20,000 entries, nine seconds, and a second worker
        # added nothing to it: bench/RESULTS.md, session 16).
        if batch_seconds is None:
            batch_seconds = 0.025 if db.is_sqlite else 0.5
        self.batch_seconds = batch_seconds
        # Jobs a batch claims at least (when that many are left to its limit), its time
        # up or not: under contention jobs look slow, and batches of one or two spent
        # their time on the transaction itself until the backlog ran away (SQLite, 500
        # events/s: event-to-intent p50 1.2 s in one run of four; bench/RESULTS.md).
        self.min_claim = min_claim
        # A moving average of what a job of each queue has taken: a journey's reaction to
        # a group of entries takes a hundred times a delivery, and one average for both
        # made a batch claim a backlog of reactions at a delivery's pace.
        self._seconds_per_job: dict[str, float] = {}
        # While idle: the clock time (ms) it sleeps until; infinite while it decides how
        # long; 0 while it runs (see wake_for).
        self._sleeping_until = 0.0
        self._busy_queues = 1  # how many queues the last claim found work in
        self.poll_seconds = poll_seconds
        self.handlers: dict[str, Handler] = {}
        self.preparers: dict[str, Preparer] = {}
        self.in_sets: set[str] = set()  # kinds whose jobs run with their writes held
        self._after = threading.local()
        self._finishers: list[Callable[[], bool]] = []
        self.wake = threading.Event()
        self.stopping = threading.Event()
        # Called at each turn of `run_forever` and before each batch (runtime/heartbeats.py).
        self.heartbeat: Callable[[], None] | None = None
        self._listener: _Listener | None = None  # while `run_forever` listens (PostgreSQL)
        # PostgreSQL: the due jobs a batch left because another worker holds their
        # customer (their ids, not claimed again by this batch), and whether the last
        # batch left any (the worker then waits a moment rather than looking again at once).
        self._skipped: list[int] = []
        self._held_back = False

    @property
    def lease_owner(self) -> str | None:
        """The id this worker's heartbeat is written under, once written: a job put back
        for a lease names it, so that another worker brings the job forward should this
        one die (`rescue_leases`). None without a heartbeat (tests, the simulator)."""
        beat = self.heartbeat
        if beat is None or getattr(beat, "last_beat_at", None) is None:
            return None
        owner = getattr(beat, "id", None)
        return owner if isinstance(owner, str) else None

    def register(
        self,
        kind: str,
        handler: Handler,
        *,
        prepare: Preparer | None = None,
        in_sets: bool = False,
    ) -> None:
        """`in_sets`: jobs of this kind may run with their writes held and sent for many
        jobs at once (`HeldWrites`); their handler does nothing outside the database that
        running it a second time would repeat (a batch that fails runs again job by job)."""
        self.handlers[kind] = handler
        if prepare is not None:
            self.preparers[kind] = prepare
        if in_sets:
            self.in_sets.add(kind)

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run `action` once the running job's transaction has committed, outside any
        transaction (network calls: an SQLite write lock is never held across them). Not
        run if the job fails. The same action registered twice in a batch runs once."""
        pending: list[Callable[[], None]] = self._after.job
        if action not in pending and action not in self._after.batch:
            pending.append(action)

    def finish_with(self, finisher: Callable[[], bool]) -> None:
        """Call `finisher` before `run_due` returns: an after-commit action may leave its
        work running while the next batch is claimed (delivery sends one batch while the
        next is rendered) and finishes it there. It returns True if it did something, for
        the jobs it may have made due."""
        self._finishers.append(finisher)

    def run_due(self, limit: int | None = None) -> int:
        """Run every job due now (up to `limit`); return how many were run or retried.
        Every after-commit action has finished when it returns."""
        done = 0
        more_due = False  # the last batch stopped at its limit or its time, jobs left due
        while True:
            ran, exhausted = 0, True
            # Shutting down: no new batch, but what is in flight is finished and recorded.
            if (limit is None or done < limit) and not self.stopping.is_set():
                ran, exhausted = self._run_batch(
                    self.batch if limit is None else min(self.batch, limit - done),
                    look_first=not more_due,
                )
            more_due = ran > 0 and not exhausted
            done += ran
            # A batch that ran out of due jobs leaves nothing due: no second write
            # transaction to find that out, unless finishing its actions made more work.
            if (ran == 0 or exhausted) and not self._finish():
                return done

    def _finish(self) -> bool:
        finished = False
        for finisher in self._finishers:
            try:
                finished = finisher() or finished
            except Exception:
                log.exception("finishing an after-commit action failed")
        return finished

    def run_forever(self) -> None:
        listener = _Listener(self.db) if not self.db.is_sqlite else None
        self._listener = listener
        try:
            while not self.stopping.is_set():
                try:
                    if self.run_due():
                        continue
                    self._sleep(listener)
                except Exception:
                    log.exception("worker pass failed; retrying")
                    self.stopping.wait(self.poll_seconds)
        finally:
            self._listener = None
            if listener is not None:
                listener.close()

    def stop(self) -> None:
        """Take no new batch; wake the worker if it sleeps (on PostgreSQL's LISTEN too)."""
        self.stopping.set()
        self.wake.set()
        listener = self._listener
        if listener is not None:
            listener.interrupt()

    def wake_for(self, run_at: int) -> None:
        """A job due at `run_at` was scheduled (SQLite; `Database.after_jobs_scheduled`):
        wake the worker if it is idle and would sleep past that time. A worker running a
        batch, or woken already, looks for due jobs again before it sleeps."""
        if run_at < self._sleeping_until:
            self.wake.set()

    def _sleep(self, listener: _Listener | None) -> None:
        if self.heartbeat is not None:
            self.heartbeat()
        self._sleeping_until = math.inf  # deciding: any job scheduled now wakes it
        try:
            with self.db.read() as conn:
                upcoming = next_run_at(conn, self.queues)
            timeout = self.poll_seconds
            if upcoming is not None:
                # In real seconds: on the demo's accelerated clock a job due in a simulated
                # minute is due in a fraction of a second.
                wait = real_seconds(self.clock, upcoming - self.clock.now_ms())
                timeout = min(timeout, max(0.0, wait))
            if self._held_back:
                # Due jobs are another worker's customers': it commits (and NOTIFYs) soon.
                timeout = max(timeout, min(self.poll_seconds, HELD_BACK_SECONDS))
            self._sleeping_until = self.clock.now_ms() + clock_ms(self.clock, timeout)
            if self.stopping.is_set():
                return
            if listener is not None:
                listener.wait(timeout, self._sleeping_until)
            else:
                self.wake.wait(timeout)
                self.wake.clear()
        finally:
            self._sleeping_until = 0.0

    def _run_batch(self, limit: int, *, look_first: bool = True) -> tuple[int, bool]:
        """Run due jobs in one transaction: how many, and whether it stopped because none
        was left due (rather than at its limit or its time). `look_first=False`: jobs are
        known to be due (the last batch left some), so no read first."""
        if self.heartbeat is not None:
            self.heartbeat()
        now = self.clock.now_ms()
        if self.db.is_sqlite and look_first:
            # Woken for a job that is not due yet (a commit scheduled one for later): a
            # read says so without taking SQLite's one write lock from the writer.
            with self.db.read() as conn:
                upcoming = next_run_at(conn, self.queues)
            if upcoming is None or upcoming > now:
                return 0, True
        self._after.batch = []
        self._after.savepoint_open = False  # a job's, left for the next one to release
        self._skipped = []
        self._held_back = False
        try:
            with self.db.write() as conn:
                deadline = time.monotonic() + self.batch_seconds
                ran = 0
                exhausted = False
                # Claimed as many at a time as the time left allows, by the time jobs have
                # been taking, so that the batch ends (and commits) about when its time is
                # up, with nothing claimed left over.
                while ran < limit:
                    started = time.monotonic()
                    left = (deadline - started) / self._busy_queues
                    wanted = {
                        queue: int(min(limit - ran, max(self.min_claim, left / max(cost, 1e-6))))
                        if (cost := self._seconds_per_job.get(queue)) is not None
                        # A queue not measured yet: the least (a backlog of heavy jobs
                        # claimed whole at a light job's pace would be one transaction).
                        else min(limit - ran, self.min_claim)
                        for queue in self.queues
                    }
                    claimed = self._claim(conn, now, wanted)
                    if not claimed:
                        exhausted = True
                        break
                    self._learn(self._run_claimed(conn, claimed, now), claimed)
                    ran += len(claimed)
                    self._busy_queues = len({job.queue for job in claimed})
                    if time.monotonic() > deadline:
                        break
            actions: list[Callable[[], None]] = self._after.batch
        finally:
            self._after.batch = []
        for action in actions:
            try:
                action()
            except Exception:
                log.exception("an after-commit action failed")
        # What the actions did (a send's outcome recorded) may have made jobs due.
        return ran, exhausted and not actions

    def _learn(self, spent: dict[str, float], claimed: list[Job]) -> None:
        """What each queue's jobs of a claim took, into its moving average."""
        counts: dict[str, int] = {}
        for job in claimed:
            counts[job.queue] = counts.get(job.queue, 0) + 1
        for queue, count in counts.items():
            each = spent.get(queue, 0.0) / count
            before = self._seconds_per_job.get(queue, each)
            self._seconds_per_job[queue] = 0.7 * before + 0.3 * each

    def _claim(self, conn: Connection, now: int, wanted: dict[str, int]) -> list[Job]:
        """Take the due jobs: deleted as they are claimed (one statement, not one per job),
        so their unique keys are free for the next jobs their handlers schedule. The
        deletion commits with the handlers' effects; a job whose handler fails is put back
        (`_record_failure`)."""
        # A part per queue: each walks the (state, queue, run_at, id) index in order and
        # stops at its limit, where `queue IN (...)` made the database sort every due job.
        # PostgreSQL: the parts in one statement (`_claim_sql`), one round trip.
        if conn.dialect.name != "sqlite":
            rows = self._claim_postgres(conn, now, wanted)
        else:  # BEGIN IMMEDIATE: the only writer; in process, no round trip to save
            rows = []
            for name in self.queues:
                rows += sql(
                    conn,
                    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state = "
                    "'available' AND queue = :q AND run_at <= :now ORDER BY run_at, id "
                    "LIMIT :limit) RETURNING id, queue, kind, unique_key, payload, run_at, "
                    "attempt, max_attempts, customer_id, created_at",
                    {"now": now, "limit": wanted[name], "q": name},
                ).all()
        rows.sort(key=lambda r: (r.run_at, r.id))
        return [
            Job(
                r.id,
                r.queue,
                r.kind,
                r.unique_key,
                _decode(r.payload),
                r.run_at,
                r.attempt,
                r.max_attempts,
                r.customer_id,
                r.created_at,
            )
            for r in rows
        ]

    def _claim_postgres(self, conn: Connection, now: int, wanted: dict[str, int]) -> list[Any]:
        """Claim due jobs of every queue, up to each one's limit, together with their
        customers' locks, taken without waiting: a job whose customer another worker holds
        is left to it (and to later), and this batch looks past it. Rows claimed by
        another worker are skipped."""
        held = held_buckets(conn, CUSTOMER_LOCK_SPACE)
        params = _per_queue(self.queues) | {
            f"l{n}": wanted[name] for n, name in enumerate(self.queues)
        }
        while True:
            rows = sql(
                conn, _claim_sql(len(self.queues)), params | {"now": now, "skip": self._skipped}
            ).all()
            taken = [row for row in rows if row.kind is not None]
            held.update(
                customer_bucket(row.customer_id) for row in taken if row.customer_id is not None
            )
            left = [row.candidate for row in rows if row.kind is None]
            if left:
                self._skipped += left
                self._held_back = True
            if taken or not left:
                return taken

    def _prepare(self, conn: Connection, claimed: list[Job]) -> None:
        for kind, prepare in self.preparers.items():
            jobs = [job for job in claimed if job.kind == kind]
            if not jobs:
                continue
            sql(conn, "SAVEPOINT parcours_prepare")
            try:
                prepare(conn, jobs)
            except Exception:
                log.exception("preparing %s jobs failed; they read what they need one by one", kind)
                _rollback_to(conn, "parcours_prepare")
            else:
                sql(conn, "RELEASE SAVEPOINT parcours_prepare")

    def _run_claimed(self, conn: Connection, claimed: list[Job], now: int) -> dict[str, float]:
        """Run claimed jobs in order: those of kinds that run in sets, a stretch at a time
        with their writes held; the others one by one, each in its savepoint. Returns the
        seconds spent per queue (a set's and the reads ahead shared among their jobs)."""
        spent: dict[str, float] = {}

        def took(jobs: list[Job], since: float) -> None:
            each = (time.monotonic() - since) / len(jobs) if jobs else 0.0
            for job in jobs:
                spent[job.queue] = spent.get(job.queue, 0.0) + each

        began = time.monotonic()
        singles = [job for job in claimed if job.kind not in self.in_sets]
        self._prepare(conn, singles)
        took(singles, began)
        stretch: list[Job] = []
        for job in claimed:
            if job.kind in self.in_sets:
                stretch.append(job)
                continue
            began = time.monotonic()
            self._run_set(conn, stretch, now)
            took(stretch, began)
            stretch = []
            began = time.monotonic()
            self._run_one(conn, job, now)
            took([job], began)
        began = time.monotonic()
        self._run_set(conn, stretch, now)
        took(stretch, began)
        return spent

    def _run_set(self, conn: Connection, jobs: list[Job], now: int) -> None:
        """Run these jobs with their writes held, sent together at the end (a statement per
        kind of write, not per job), in one savepoint instead of one each. Before a job
        about a customer an earlier one of the set was about (or about no one customer),
        what is held is sent, so it reads what they wrote. Should any fail (or the writes
        sent at the end), the set is undone and run again one job at a time, each in its
        own savepoint, as other kinds are: the failing job alone is put back."""
        if not jobs:
            return
        self._release_job_savepoint(conn)
        sql(conn, "SAVEPOINT parcours_set")
        actions = len(self._after.batch)
        holder = holding_writes(conn)
        try:
            self._prepare(conn, jobs)  # it may read ahead for the set
            about: set[int] = set()
            for job in jobs:
                if job.customer_id is None or job.customer_id in about or None in about:
                    holder.release(conn)
                    about.clear()
                about.add(job.customer_id)  # type: ignore[arg-type]
                self._run_held(conn, job)
            holder.release(conn)
        except Exception:
            stop_holding(conn)
            _rollback_to(conn, "parcours_set")
            forget_locks(conn)
            del self._after.batch[actions:]
            log.info("a set of %s jobs failed: running them again one at a time", len(jobs))
            self._prepare(conn, jobs)
            for job in jobs:
                self._run_one(conn, job, now)
            self._release_job_savepoint(conn)
        else:
            stop_holding(conn)
            sql(conn, "RELEASE SAVEPOINT parcours_set")

    def _release_job_savepoint(self, conn: Connection) -> None:
        if self._after.savepoint_open:
            sql(conn, "RELEASE SAVEPOINT parcours_job")
            self._after.savepoint_open = False

    def _run_held(self, conn: Connection, job: Job) -> None:
        """One job of a set: its failure is the set's."""
        handler = self.handlers[job.kind]
        self._after.job = []
        logged_as = bind_job(job.id, job.kind)
        try:
            handler(conn, job)
            self._after.batch.extend(self._after.job)
        finally:
            self._after.job = []
            unbind_job(logged_as)

    def _run_one(self, conn: Connection, job: Job, now: int) -> None:
        handler = self.handlers.get(job.kind)
        # A savepoint per job: a handler that fails is rolled back alone. The job was
        # deleted when claimed, so the handler may schedule the next job under its key.
        # PostgreSQL: each statement is a round trip, so a job's savepoint is released
        # with the next one's creation, in one, and the batch's commit releases the last.
        # (Two statements in one string: psycopg sends a statement without parameters by
        # the simple query protocol, which allows it; `run` passes no parameters here.)
        if self._after.savepoint_open:
            sql(conn, "RELEASE SAVEPOINT parcours_job; SAVEPOINT parcours_job")
        else:
            sql(conn, "SAVEPOINT parcours_job")
        self._after.savepoint_open = False
        self._after.job = []
        logged_as = bind_job(job.id, job.kind)  # its log lines carry its id and kind
        try:
            if handler is None:
                raise LookupError(f"no handler registered for job kind {job.kind!r}")
            handler(conn, job)
        except Exception as exc:
            _rollback_to(conn, "parcours_job")
            self._record_failure(conn, job, now, exc)
        else:
            if conn.dialect.name == "sqlite":  # one statement at a time; no round trip
                sql(conn, "RELEASE SAVEPOINT parcours_job")
            else:
                self._after.savepoint_open = True
            self._after.batch.extend(self._after.job)
        finally:
            self._after.job = []
            unbind_job(logged_as)

    def _record_failure(self, conn: Connection, job: Job, now: int, exc: Exception) -> None:
        release_held(conn, _HELD_JOBS)
        attempt = job.attempt + 1
        error = "".join(traceback.format_exception_only(exc)).strip()[:2000]
        if counting():
            JOBS_FAILED.labels(job.kind).inc()
        if attempt >= job.max_attempts:
            log.error("job %s (%s) failed for good: %s", job.id, job.kind, error)
            state, run_at = "failed", job.run_at
        else:
            log.warning("job %s (%s) failed, attempt %s: %s", job.id, job.kind, attempt, error)
            state, run_at = "available", now + backoff_ms(attempt)
        # Put back as it was claimed, one attempt further. Should a job with the same key
        # have been scheduled since (by another job of this batch), that newer one stands.
        # Under a new id: SQLite gives a deleted row's id to the next insert, so a job
        # scheduled earlier in this batch may hold the claimed one's by now.
        sql(
            conn,
            "INSERT INTO jobs (queue, kind, unique_key, payload, state, run_at, attempt, "
            "max_attempts, last_error, created_at, customer_id) VALUES (:q, :k, :u, :p, "
            ":s, :r, :a, :m, :e, :c, :cu) ON CONFLICT (unique_key) DO NOTHING",
            {
                "q": job.queue,
                "k": job.kind,
                "u": job.unique_key,
                "p": _encode(job.payload).decode(),
                "s": state,
                "r": run_at,
                "a": attempt,
                "m": job.max_attempts,
                "e": error,
                "c": job.created_at,
                "cu": job.customer_id,
            },
        )


# PostgreSQL's claim: the first `limit` due jobs (not already looked at by this batch),
# those whose customer's lock can be had at once (or that have no customer), and of those
# the rows no other worker has claimed, deleted. Every candidate comes back: the ones not
# taken (`kind` NULL) are looked past by the batch's next claim.
@lru_cache(maxsize=16)
def _claim_sql(queues: int) -> str:
    """PostgreSQL's claim of the due jobs of `queues` queues (`:q0`, `:q1`... each up to
    `:l0`, `:l1`...): every candidate, and the job taken for it when its customer's lock
    was free and no other worker had it."""
    per_queue = " UNION ALL ".join(
        "(SELECT id, customer_id FROM jobs "
        f"WHERE state = 'available' AND queue = :q{n} AND run_at <= :now "
        f"AND id <> ALL(CAST(:skip AS bigint[])) ORDER BY run_at, id LIMIT :l{n})"
        for n in range(queues)
    )
    return (
        f"WITH candidates AS MATERIALIZED ({per_queue}), "
        "free AS MATERIALIZED (SELECT id FROM candidates WHERE customer_id IS NULL "
        f"OR pg_try_advisory_xact_lock({CUSTOMER_LOCK_SPACE}, "
        f"CAST(customer_id % {CUSTOMER_LOCK_BUCKETS} AS int))), "
        "taken AS (DELETE FROM jobs WHERE id IN (SELECT id FROM jobs "
        "WHERE id IN (SELECT id FROM free) FOR UPDATE SKIP LOCKED) "
        "RETURNING id, queue, kind, unique_key, payload, run_at, attempt, max_attempts, "
        "customer_id, created_at) "
        "SELECT c.id AS candidate, t.id, t.queue, t.kind, t.unique_key, t.payload, t.run_at, "
        "t.attempt, t.max_attempts, t.customer_id, t.created_at "
        "FROM candidates c LEFT JOIN taken t ON t.id = c.id"
    )


# How long a worker waits, at most, when the due jobs are other workers' customers'.
HELD_BACK_SECONDS = 0.05
CALL_LEASE_MS = 5 * 60_000


@dataclass(frozen=True)
class Outcome:
    """What a call outside the database came to (see `CallAfterCommit`)."""

    error: str | None = None  # None: done; else tried again with backoff
    retry: bool = True  # False: an error that trying again cannot mend (logged, dropped)
    record: Callable[[Connection], None] | None = None  # its effects on the database


class CallAfterCommit:
    """Jobs whose work is a call outside the database (APNs, an HTTP API). The handler
    reads what the call needs in the job's transaction and puts the job back for the end
    of a lease; the call is made once the batch has committed, outside any transaction,
    and its outcome is recorded in a short transaction of its own: done (the lease job
    removed) or retried with backoff, up to the job's `max_attempts`. A process that dies
    during the call leaves the lease job, so the call is made again: at least once, never
    lost. Jobs of such a kind carry a unique key (one per thing kept in step); a newer
    job under that key (a newer change) replaces the lease job and is the one that goes
    on."""

    def __init__(
        self,
        worker: Worker,
        kind: str,
        prepare: Callable[[Connection, Job], Any],
        call: Callable[[Any], Outcome],
        *,
        lease_ms: int = CALL_LEASE_MS,
    ) -> None:
        self.worker = worker
        self.kind = kind
        self.prepare = prepare  # what the call needs, read in the job's transaction; None: nothing
        self.call = call
        self.lease_ms = lease_ms
        self._local = threading.local()
        worker.register(kind, self._handle)

    def _pending(self) -> list[tuple[Job, dict[str, Any], Any]]:
        if not hasattr(self._local, "pending"):
            self._local.pending = []
        pending: list[tuple[Job, dict[str, Any], Any]] = self._local.pending
        return pending

    def _handle(self, conn: Connection, job: Job) -> None:
        if job.unique_key is None:
            raise ValueError(f"{self.kind} jobs need a unique key")
        request = self.prepare(conn, job)
        if request is None:
            return
        now = self.worker.clock.now_ms()
        payload = {**job.payload, "call_attempt": int(job.payload.get("call_attempt", 0)) + 1}
        enqueue(
            conn,
            self.kind,
            payload,
            run_at=now + self.lease_ms,
            now=now,
            queue=job.queue,
            unique_key=job.unique_key,
            customer_id=job.customer_id,
            max_attempts=job.max_attempts,
            lease_owner=self.worker.lease_owner,
        )
        self._pending().append((job, payload, request))
        self.worker.after_commit(self._call_all)

    def _call_all(self) -> None:
        pending, self._local.pending = self._pending(), []
        outcomes: list[tuple[Job, dict[str, Any], Outcome]] = []
        for job, payload, request in pending:
            try:
                outcome = self.call(request)
            except Exception as exc:  # a bug, not the peer: kept and tried again
                log.exception("%s call for %s failed", self.kind, job.unique_key)
                outcome = Outcome(error=f"{type(exc).__name__}: {exc}")
            outcomes.append((job, payload, outcome))
        with self.worker.db.write() as conn:
            now = self.worker.clock.now_ms()
            for job, payload, outcome in outcomes:
                if outcome.record is not None:
                    outcome.record(conn)
                self._settle(conn, job, payload, outcome, now)

    def _settle(
        self, conn: Connection, job: Job, payload: dict[str, Any], outcome: Outcome, now: int
    ) -> None:
        lease = sql(
            conn,
            "DELETE FROM jobs WHERE unique_key = :k AND payload = :p",
            {"k": job.unique_key, "p": _encode(payload).decode()},
        )
        if not lease.rowcount:
            return  # a newer change took the key: its own job makes the call again
        attempt = int(payload["call_attempt"])
        if outcome.error is None:
            return
        if not outcome.retry or attempt >= job.max_attempts:
            log.error("%s for %s failed for good: %s", self.kind, job.unique_key, outcome.error)
            return
        log.warning(
            "%s for %s failed, attempt %s: %s", self.kind, job.unique_key, attempt, outcome.error
        )
        enqueue(
            conn,
            self.kind,
            payload,
            run_at=now + backoff_ms(attempt),
            now=now,
            queue=job.queue,
            unique_key=job.unique_key,
            customer_id=job.customer_id,
            max_attempts=job.max_attempts,
        )


def _rollback_to(conn: Connection, savepoint: str) -> None:
    """Undo what was done since the savepoint, and drop it (one round trip on PostgreSQL);
    the advisory locks taken since are given back too."""
    forget_locks(conn)
    if conn.dialect.name == "sqlite":
        sql(conn, f"ROLLBACK TO SAVEPOINT {savepoint}")
        sql(conn, f"RELEASE SAVEPOINT {savepoint}")
    else:
        sql(conn, f"ROLLBACK TO SAVEPOINT {savepoint}; RELEASE SAVEPOINT {savepoint}")


def backoff_ms(attempt: int) -> int:
    """Exponential backoff with jitter: about 1 s, 2 s, 4 s ... capped at one hour."""
    base = min(3_600_000, 1000 * 2 ** (attempt - 1))
    return int(base * (0.75 + random.random() * 0.5))


class _Listener:
    """LISTEN on PostgreSQL so that an enqueue anywhere wakes this worker at once; and a
    pipe of its own, so that `Worker.stop()` wakes it too."""

    def __init__(self, db: Database) -> None:
        import psycopg

        url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._conn = psycopg.connect(url, autocommit=True)
        self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        self._woken, self._wake = os.pipe()
        os.set_blocking(self._woken, False)
        os.set_blocking(self._wake, False)
        self._pipe_lock = threading.Lock()  # `interrupt` never writes to a closed pipe
        self._closed = False

    def wait(self, timeout: float, until: float = math.inf) -> None:
        """Until a notification of a job due before `until` (the worker's clock, ms: when
        it would wake anyway), an `interrupt()`, or the timeout."""
        if self._drain(until):  # read by the driver already
            return
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self._conn.fileno(), self._woken], [], [], left)
            if self._woken in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._woken, 64)
                return
            if not ready or self._drain(until):
                return

    def _drain(self, until: float) -> bool:
        """Take the notifications that have come (without waiting); whether one is of a
        job due before `until` (one without a time, from an older Parcours, counts)."""
        due = [notice.payload for notice in self._conn.notifies(timeout=0)]
        return any(not at.isdigit() or int(at) < until for at in due)

    def interrupt(self) -> None:
        """Wake `wait` (from another thread), now or at its next call."""
        with self._pipe_lock:
            if not self._closed:
                with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending
                    os.write(self._wake, b"!")

    def close(self) -> None:
        self._conn.close()
        with self._pipe_lock:
            self._closed = True
            os.close(self._woken)
            os.close(self._wake)
