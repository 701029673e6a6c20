"""The durable job queue: due work runs once, survives a killed worker, shared by workers."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from parcours.runtime.clock import SimulatedClock
from parcours.runtime.db import Database, _bucket, lock_keys, migrate, sql
from parcours.runtime.queue import (
    Job,
    Worker,
    _rollback_to,
    cancel,
    enqueue,
    lock_customers,
    next_run_at,
    rescue_leases,
    try_lock_customers,
)
from tests.conftest import START, truncate_all, wait_until


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    migrate(database)
    yield database
    database.dispose()


@pytest.fixture
def effects(db: Database) -> Iterator[str]:
    """A scratch table where test handlers record what they did."""
    name = f"effects_{uuid.uuid4().hex[:8]}"
    with db.write() as conn:
        conn.execute(text(f"CREATE TABLE {name} (job_id BIGINT, note TEXT)"))
    yield name
    with db.write() as conn:
        conn.execute(text(f"DROP TABLE {name}"))


def record(table: str) -> object:
    def handler(conn: Connection, job: Job) -> None:
        conn.execute(
            text(f"INSERT INTO {table} (job_id, note) VALUES (:id, :note)"),
            {"id": job.id, "note": job.payload.get("note", "")},
        )

    return handler


def notes(db: Database, table: str) -> list[str]:
    with db.read() as conn:
        return [r[0] for r in conn.execute(text(f"SELECT note FROM {table} ORDER BY job_id"))]


def live_jobs(db: Database) -> list[tuple[str, int, str]]:
    with db.read() as conn:
        rows = conn.execute(text("SELECT kind, attempt, state FROM jobs ORDER BY id"))
        return [(r[0], r[1], r[2]) for r in rows]


def add(db: Database, kind: str, run_at: int, **options: object) -> None:
    note = options.pop("note", kind)
    with db.write() as conn:
        enqueue(conn, kind, {"note": note}, run_at=run_at, now=START, **options)  # type: ignore[arg-type]


def test_a_job_runs_when_due_and_not_before(db: Database, effects: str) -> None:
    clock = SimulatedClock(START)
    worker = Worker(db, clock)
    worker.register("remind", record(effects))  # type: ignore[arg-type]
    add(db, "remind", START + 60_000)
    assert worker.run_due() == 0
    clock.advance_ms(59_999)
    assert worker.run_due() == 0
    clock.advance_ms(1)
    assert worker.run_due() == 1
    assert notes(db, effects) == ["remind"]
    assert live_jobs(db) == []


def test_due_jobs_run_in_time_order(db: Database, effects: str) -> None:
    clock = SimulatedClock(START + 10_000)
    worker = Worker(db, clock)
    worker.register("step", record(effects))  # type: ignore[arg-type]
    for number, at in enumerate([START + 300, START + 100, START + 200]):
        add(db, "step", at, note=str(number))
    worker.run_due()
    with db.read() as conn:
        order = [r[0] for r in conn.execute(text(f"SELECT note FROM {effects}"))]
    assert order == ["1", "2", "0"]


def test_a_batch_out_of_time_commits_and_the_next_takes_what_fell_due_first(
    db: Database, effects: str
) -> None:
    """With no time for a batch (and claims of one), each claims one job and commits: all
    jobs run once, in time order, and a job that fell due meanwhile goes before the later
    ones."""
    clock = SimulatedClock(START + 10_000)
    worker = Worker(db, clock, batch_seconds=0, min_claim=1)
    executed: list[str] = []
    commits: list[list[str]] = []
    original = worker._run_batch

    def batch(limit: int, *, look_first: bool = True) -> tuple[int, bool]:
        before = len(executed)
        ran = original(limit, look_first=look_first)
        commits.append(executed[before:])
        return ran

    worker._run_batch = batch  # type: ignore[method-assign]

    def step(conn: Connection, job: Job) -> None:
        record(effects)(conn, job)  # type: ignore[operator]
        executed.append(job.payload["note"])
        if job.payload["note"] == "0":  # the first one makes an urgent job due now
            enqueue(conn, "step", {"note": "urgent"}, run_at=START, now=START)

    worker.register("step", step)
    for number in range(5):
        add(db, "step", START + 100 * number, note=str(number))
    assert worker.run_due() == 6
    assert commits == [["0"], ["urgent"], ["1"], ["2"], ["3"], ["4"], []]
    assert sorted(notes(db, effects)) == ["0", "1", "2", "3", "4", "urgent"]
    assert live_jobs(db) == []


def test_a_batch_out_of_time_still_claims_its_minimum(db: Database, effects: str) -> None:
    """However slow jobs look, a batch claims at least `min_claim` of them (so that a busy
    worker does not spend its time on transactions of one job)."""
    clock = SimulatedClock(START + 10_000)
    worker = Worker(db, clock, batch_seconds=0, min_claim=3)
    sizes: list[int] = []
    original = worker._claim

    def claim(conn: Connection, now: int, wanted: dict[str, int]) -> list[Job]:
        sizes.append(wanted["default"])
        return original(conn, now, wanted)

    worker._claim = claim  # type: ignore[method-assign]
    worker.register("step", record(effects))
    for number in range(7):
        add(db, "step", START + 100 * number, note=str(number))
    assert worker.run_due() == 7
    assert sizes[:3] == [3, 3, 3]
    assert sorted(notes(db, effects)) == [str(n) for n in range(7)]


def test_each_queue_claims_by_what_its_own_jobs_take(db: Database, effects: str) -> None:
    """A queue whose jobs are slow (a journey's reactions to a thousand entries) is claimed
    a few at a time, whatever a quick queue's jobs (deliveries) take, and a queue not
    measured yet the least: one batch never takes a backlog of slow jobs whole while
    another worker has nothing to do."""
    clock = SimulatedClock(START + 10_000)
    worker = Worker(db, clock, queues=("slow", "quick"), batch_seconds=0.2, min_claim=2)
    wanted_seen: list[dict[str, int]] = []
    original = worker._claim

    def claim(conn: Connection, now: int, wanted: dict[str, int]) -> list[Job]:
        wanted_seen.append(dict(wanted))
        return original(conn, now, wanted)

    def slow(conn: Connection, job: Job) -> None:
        time.sleep(0.05)  # at least this long: the claim's upper bound below follows
        record(effects)(conn, job)  # type: ignore[operator]

    worker._claim = claim  # type: ignore[method-assign]
    worker.register("slow-step", slow)
    worker.register("quick-step", record(effects))  # type: ignore[arg-type]
    for number in range(30):
        add(db, "slow-step", START + number, queue="slow", note=f"s{number}")
        add(db, "quick-step", START + number, queue="quick", note=f"q{number}")
    assert worker.run_due() == 60
    assert wanted_seen[0] == {"slow": 2, "quick": 2}  # nothing measured yet: the least
    # Measured: at least 50 ms a slow job, so no more than 0.2 s / 0.05 s of them at once.
    assert all(w["slow"] <= 4 for w in wanted_seen)
    assert any(w["quick"] > w["slow"] for w in wanted_seen[1:])
    assert len(notes(db, effects)) == 60


def test_one_claim_takes_each_queues_earliest_due_jobs_up_to_its_own_limit(db: Database) -> None:
    """A worker of several queues claims them all at once (on PostgreSQL one statement):
    each queue's earliest due jobs, as many as its own limit, none not yet due, and no
    queue it does not watch; the earliest time due among its queues is that of its own."""
    clock = SimulatedClock(START + 1_000)
    worker = Worker(db, clock, queues=("a", "b"))
    for number in range(4):
        add(db, "step", START + number, queue="a", note=f"a{number}")
        add(db, "step", START + 10 + number, queue="b", note=f"b{number}")
    add(db, "step", START + 5_000, queue="b", note="later")
    add(db, "step", START - 50, queue="c", note="elsewhere")
    with db.read() as conn:
        assert next_run_at(conn, ("a", "b")) == START
        assert next_run_at(conn, ("b",)) == START + 10
        assert next_run_at(conn, ("c", "a")) == START - 50
        assert next_run_at(conn, ()) is None
    with db.write() as conn:
        claimed = worker._claim(conn, clock.now_ms(), {"a": 2, "b": 3})
        assert [job.payload["note"] for job in claimed] == ["a0", "a1", "b0", "b1", "b2"]
        rest = worker._claim(conn, clock.now_ms(), {"a": 5, "b": 5})
        assert [job.payload["note"] for job in rest] == ["a2", "a3", "b3"]
        assert worker._claim(conn, clock.now_ms(), {"a": 5, "b": 5}) == []
    with db.read() as conn:
        assert next_run_at(conn, ("a", "b")) == START + 5_000


def test_a_batch_with_time_left_also_runs_what_its_jobs_made_due(
    db: Database, effects: str
) -> None:
    clock = SimulatedClock(START + 10_000)
    worker = Worker(db, clock, batch_seconds=60)

    def step(conn: Connection, job: Job) -> None:
        record(effects)(conn, job)  # type: ignore[operator]
        if job.payload["note"] == "0":
            enqueue(conn, "step", {"note": "urgent"}, run_at=START, now=START)

    worker.register("step", step)
    for number in range(3):
        add(db, "step", START + 100 * number, note=str(number))
    assert worker._run_batch(100) == (4, True)  # one transaction, two claims
    assert sorted(notes(db, effects)) == ["0", "1", "2", "urgent"]


def test_a_batch_that_runs_out_of_due_jobs_is_the_last_write(db: Database, effects: str) -> None:
    """Finding that nothing is left due takes no write transaction of its own: an idle
    worker's empty batch held SQLite's write lock for nothing after every wake-up."""
    clock = SimulatedClock(START + 10_000)
    worker = Worker(db, clock, batch_seconds=60)
    worker.register("step", record(effects))
    for number in range(3):
        add(db, "step", START + 100 * number, note=str(number))
    writes = 0
    original = db.write

    @contextmanager
    def counted() -> Iterator[Connection]:
        nonlocal writes
        writes += 1
        with original() as conn:
            yield conn

    db.write = counted  # type: ignore[method-assign]
    try:
        assert worker.run_due() == 3
        assert writes == 1
    finally:
        db.write = original  # type: ignore[method-assign]
    add(db, "step", clock.now_ms() + 1000, note="later")
    writes = 0
    db.write = counted  # type: ignore[method-assign]
    try:
        assert worker.run_due() == 0
        # Nothing due (woken for a job scheduled for later): on SQLite a read says so, and
        # the write lock stays the writer's; PostgreSQL claims with SKIP LOCKED.
        assert writes == (0 if db.is_sqlite else 1)
        clock.advance_ms(1000)
        assert worker.run_due() == 1
    finally:
        db.write = original  # type: ignore[method-assign]
    assert sorted(notes(db, effects)) == ["0", "1", "2", "later"]


def test_an_idle_worker_wakes_for_work_due_before_it_would_have_woken(
    db: Database, effects: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit that schedules a job wakes an idle worker only if the job is due before
    the worker would look again: under a stream of ingest commits scheduling later work,
    a worker woken each time read the queue for nothing (SQLite: the commit's listener;
    PostgreSQL: NOTIFY says when the job is due, and the worker's LISTEN lets later ones
    by)."""
    import parcours.runtime.queue as queue_module

    clock = SimulatedClock(START)
    worker = Worker(db, clock, poll_seconds=60)
    worker.register("step", record(effects))
    db.after_jobs_scheduled(worker.wake_for)
    looks: list[int] = []
    original = queue_module.next_run_at

    def counted(conn: Connection, queues: object) -> int | None:
        looks.append(1)
        return original(conn, queues)  # type: ignore[arg-type]

    monkeypatch.setattr(queue_module, "next_run_at", counted)
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    try:
        wait_until(lambda: worker._sleeping_until not in (0.0, math.inf), 10, what="idle")
        asleep_until, before = worker._sleeping_until, len(looks)
        add(db, "step", START + 3_600_000, note="in an hour")
        if db.is_sqlite:
            # Left asleep (its poll comes before that): the commit called `wake_for` before
            # `add` returned, and it did not wake the worker, so nothing can wake it now.
            assert not worker.wake.is_set()
        else:
            # The notification comes on the worker's own connection, soon after the
            # commit: woken, it would have looked again within milliseconds.
            time.sleep(0.5)
        assert (worker._sleeping_until, len(looks)) == (asleep_until, before)
        add(db, "step", START, note="now")
        # Long before its 60-second poll.
        wait_until(lambda: notes(db, effects) == ["now"], 10, every=0.01, what="the job")
    finally:
        worker.stop()
        thread.join(10)


def test_a_unique_key_keeps_one_live_job(db: Database, effects: str) -> None:
    clock = SimulatedClock(START)
    add(db, "wait", START + 1000, unique_key="run-1", note="first")
    add(db, "wait", START + 5000, unique_key="run-1", note="replaced")
    add(db, "wait", START + 9000, unique_key="run-1", note="ignored", on_conflict="ignore")
    worker = Worker(db, clock)
    worker.register("wait", record(effects))  # type: ignore[arg-type]
    clock.advance_ms(10_000)
    worker.run_due()
    assert notes(db, effects) == ["replaced"]


def test_a_handler_may_schedule_the_next_job_under_its_own_key(db: Database, effects: str) -> None:
    clock = SimulatedClock(START)
    worker = Worker(db, clock)

    def step(conn: Connection, job: Job) -> None:
        record(effects)(conn, job)  # type: ignore[operator]
        count = int(job.payload["note"])
        if count < 3:
            enqueue(
                conn,
                "step",
                {"note": str(count + 1)},
                run_at=job.run_at + 1000,
                now=clock.now_ms(),
                unique_key="run-7",
            )

    worker.register("step", step)
    add(db, "step", START, unique_key="run-7", note="1")
    for _ in range(5):
        worker.run_due()
        clock.advance_ms(1000)
    assert notes(db, effects) == ["1", "2", "3"]
    assert live_jobs(db) == []


def test_run_due_returns_once_work_left_running_after_the_commit_is_finished(
    db: Database, effects: str
) -> None:
    """An after-commit action may leave its work running in the background (delivery sends
    one batch while the next is claimed); run_due finishes it before it returns, and runs
    the jobs that finishing made due."""
    clock = SimulatedClock(START)
    worker = Worker(db, clock, batch=2)
    running: list[threading.Thread] = []
    finished: list[str] = []

    def send(conn: Connection, job: Job) -> None:
        note = job.payload["note"]

        def start() -> None:
            thread = threading.Thread(target=time.sleep, args=(0.05,), name=note)
            thread.start()
            running.append(thread)

        worker.after_commit(start)

    def finish() -> bool:
        if not running:
            return False
        for thread in running:
            thread.join()
            finished.append(thread.name)
        running.clear()
        with db.write() as conn:  # what the background work found out, as a new job
            enqueue(conn, "record", {"note": "recorded"}, run_at=START, now=START)
        return True

    worker.register("send", send)
    worker.register("record", record(effects))  # type: ignore[arg-type]
    worker.finish_with(finish)
    for note in ("a", "b", "c"):
        add(db, "send", START, note=note)
    assert worker.run_due() == 4
    assert sorted(finished) == ["a", "b", "c"] and not running
    assert notes(db, effects) == ["recorded"]
    assert worker.run_due(limit=1) == 0  # nothing was left behind


def test_cancel_removes_a_waiting_job(db: Database, effects: str) -> None:
    add(db, "wait", START + 1000, unique_key="run-2")
    with db.write() as conn:
        assert cancel(conn, "run-2")
        assert not cancel(conn, "run-2")
    assert live_jobs(db) == []


def test_a_failing_handler_is_rolled_back_and_retried_with_backoff(
    db: Database, effects: str
) -> None:
    clock = SimulatedClock(START)
    worker = Worker(db, clock)
    calls = []

    def flaky(conn: Connection, job: Job) -> None:
        record(effects)(conn, job)  # type: ignore[operator]
        calls.append(job.attempt)
        if len(calls) < 3:
            raise RuntimeError("provider down")

    worker.register("flaky", flaky)
    add(db, "flaky", START)
    worker.run_due()
    assert live_jobs(db) == [("flaky", 1, "available")]
    assert notes(db, effects) == []  # the failed attempt's effects were rolled back
    assert worker.run_due() == 0  # backing off
    clock.advance_ms(2_000)
    worker.run_due()
    clock.advance_ms(10_000)
    worker.run_due()
    assert calls == [0, 1, 2]
    assert notes(db, effects) == ["flaky"]
    assert live_jobs(db) == []


def test_in_a_batch_each_failing_job_is_undone_alone_and_the_others_commit(
    db: Database, effects: str
) -> None:
    """Jobs that fail first, between two that succeed, twice in a row and last: each is
    rolled back to its own savepoint (on PostgreSQL a job's savepoint is released with
    the next one's creation, and the last by the commit)."""
    clock = SimulatedClock(START)
    worker = Worker(db, clock)
    writes = record(effects)

    def writes_then_fails(conn: Connection, job: Job) -> None:
        writes(conn, job)  # type: ignore[operator]
        raise RuntimeError("broke after writing")

    worker.register("ok", writes)  # type: ignore[arg-type]
    worker.register("bad", writes_then_fails)
    kinds = ["bad", "ok", "bad", "ok", "bad", "bad", "ok", "ok", "bad"]
    for n, kind in enumerate(kinds):
        add(db, kind, START, note=f"{kind}-{n}")
    assert worker.run_due() == len(kinds)
    assert notes(db, effects) == [f"ok-{n}" for n, kind in enumerate(kinds) if kind == "ok"]
    assert live_jobs(db) == [("bad", 1, "available")] * kinds.count("bad")


def test_a_failed_job_gives_way_to_a_newer_job_under_its_key(db: Database, effects: str) -> None:
    """A job that fails is put back, unless a job of the same batch has scheduled a newer
    one under its key meanwhile: the newer job stands, the stale one is not retried."""
    clock = SimulatedClock(START)
    worker = Worker(db, clock)

    def replace(conn: Connection, job: Job) -> None:
        enqueue(conn, "step", {"note": "newer"}, run_at=START, now=START, unique_key="run-9")

    def failing(conn: Connection, job: Job) -> None:
        raise RuntimeError("stale step")

    worker.register("replace", replace)
    worker.register("failing", failing)
    worker.register("step", record(effects))  # type: ignore[arg-type]
    add(db, "failing", START + 1, unique_key="run-9")
    add(db, "replace", START)
    clock.advance_ms(1)
    worker.run_due()
    assert notes(db, effects) == ["newer"]
    assert live_jobs(db) == []


def test_a_failed_job_is_kept_when_a_job_scheduled_before_it_took_its_id(
    db: Database, effects: str
) -> None:
    """SQLite gives a deleted row's id to the next insert: the claimed jobs are deleted, the
    first schedules two jobs (which take the freed ids), the second fails. It is put back
    all the same, and runs once it succeeds."""
    clock = SimulatedClock(START)
    worker = Worker(db, clock)
    failing = {"fail": True}

    def first(conn: Connection, job: Job) -> None:
        for n in (1, 2):
            enqueue(conn, "later", {"note": f"later-{n}"}, run_at=START + 3_600_000, now=START)

    def second(conn: Connection, job: Job) -> None:
        if failing["fail"]:
            raise RuntimeError("not now")
        record(effects)(conn, job)  # type: ignore[operator]

    worker.register("first", first)
    worker.register("second", second)
    add(db, "first", START)
    add(db, "second", START + 1)
    clock.advance_ms(10)
    worker.run_due()
    assert sorted(live_jobs(db)) == [
        ("later", 0, "available"),
        ("later", 0, "available"),
        ("second", 1, "available"),
    ]
    failing["fail"] = False
    clock.advance_ms(600_000)
    worker.run_due()
    assert notes(db, effects) == ["second"]


def test_a_preparer_sees_the_batch_and_one_that_fails_changes_nothing(
    db: Database, effects: str
) -> None:
    clock = SimulatedClock(START)
    worker = Worker(db, clock)
    seen: list[list[str]] = []

    def prepare(conn: Connection, jobs: list[Job]) -> None:
        seen.append(sorted(job.payload["note"] for job in jobs))
        conn.execute(text(f"INSERT INTO {effects} (job_id, note) VALUES (0, 'prepared')"))
        raise RuntimeError("prefetch broke")

    worker.register("step", record(effects), prepare=prepare)  # type: ignore[arg-type]
    add(db, "step", START, note="a")
    add(db, "step", START, note="b")
    add(db, "other", START, note="c")
    worker.register("other", record(effects))  # type: ignore[arg-type]
    worker.run_due()
    assert seen == [["a", "b"]]  # every job of its kind in the batch, no other kind
    assert sorted(notes(db, effects)) == ["a", "b", "c"]  # its writes rolled back, jobs ran


def test_a_job_that_always_fails_is_kept_as_failed(db: Database) -> None:
    clock = SimulatedClock(START)
    worker = Worker(db, clock)
    add(db, "unknown-kind", START, max_attempts=2)
    worker.run_due()
    clock.advance_ms(3_600_000)
    worker.run_due()
    assert live_jobs(db) == [("unknown-kind", 2, "failed")]
    with db.read() as conn:
        error = conn.execute(text("SELECT last_error FROM jobs")).scalar_one()
    assert "no handler registered for job kind 'unknown-kind'" in error


_KILLED_WORKER = """
import sys, time
from pathlib import Path
from sqlalchemy import text
from parcours.runtime.clock import SystemClock
from parcours.runtime.db import Database
from parcours.runtime.queue import Worker

url, table, marker = sys.argv[1:4]
worker = Worker(Database(url), SystemClock())

def slow(conn, job):
    conn.execute(text(f"INSERT INTO {table} (job_id, note) VALUES (:i, 'half')"), {"i": job.id})
    Path(marker).write_text("inside")
    time.sleep(60)

worker.register("slow", slow)
worker.run_due()
"""


@pytest.mark.processes
def test_a_worker_killed_mid_step_loses_nothing_and_repeats_nothing(
    db: Database, effects: str, tmp_path: Path, database_url: str
) -> None:
    add(db, "slow", 0)
    marker = tmp_path / "inside"
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_KILLED_WORKER), database_url, effects, str(marker)],
        env={**os.environ},
    )
    wait_until(marker.exists, 30, what="the worker to start the step")
    process.send_signal(signal.SIGKILL)
    process.wait()
    if not db.is_sqlite:
        # PostgreSQL ends the dead worker's transaction once it sees its connection gone;
        # until then the claim holds the job's row.
        wait_until(lambda: _claimable(db), 30, what="the dead worker's claim to be undone")
    assert notes(db, effects) == []  # the half-done step left nothing behind
    assert [kind for kind, _, _ in live_jobs(db)] == ["slow"]  # and the job is still there
    worker = Worker(db, SimulatedClock(START))
    worker.register("slow", record(effects))  # type: ignore[arg-type]
    assert worker.run_due() == 1
    assert notes(db, effects) == ["slow"]
    assert live_jobs(db) == []


def _claimable(db: Database) -> bool:
    """Whether a job's row is there that no transaction holds."""
    with db.write() as conn:
        return conn.execute(text("SELECT id FROM jobs FOR UPDATE SKIP LOCKED")).first() is not None


@pytest.fixture
def pg_db(postgres_url: str) -> Iterator[Database]:
    """PostgreSQL only: several workers sharing one database is PostgreSQL's job."""
    truncate_all(postgres_url)
    database = Database(postgres_url)
    yield database
    database.dispose()


def test_several_workers_share_the_work_and_run_each_job_once(pg_db: Database) -> None:
    db = pg_db
    effects = f"effects_{uuid.uuid4().hex[:8]}"
    with db.write() as conn:
        conn.execute(text(f"CREATE TABLE {effects} (job_id BIGINT, note TEXT)"))
    for number in range(400):
        add(db, "share", 0, note=str(number))
    seen: list[str] = []
    lock = threading.Lock()

    def make_worker(name: str) -> Worker:
        worker = Worker(db, SimulatedClock(START), batch=10)

        def handler(conn: Connection, job: Job) -> None:
            record(effects)(conn, job)  # type: ignore[operator]
            with lock:
                seen.append(name)
            time.sleep(0.001)

        worker.register("share", handler)
        return worker

    workers = [make_worker(f"w{i}") for i in range(4)]
    threads = [threading.Thread(target=w.run_due) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    done = notes(db, effects)
    assert sorted(done, key=int) == [str(n) for n in range(400)]
    assert len(set(seen)) > 1, "only one worker got work"
    assert live_jobs(db) == []
    with db.write() as conn:
        conn.execute(text(f"DROP TABLE {effects}"))


def test_an_enqueue_wakes_a_sleeping_worker(db: Database, effects: str) -> None:
    from parcours.runtime.clock import SystemClock

    worker = Worker(db, SystemClock(), poll_seconds=30)
    worker.register("ping", record(effects))  # type: ignore[arg-type]
    thread = threading.Thread(target=worker.run_forever)
    thread.start()
    try:
        # Asleep, for up to 30 s.
        wait_until(lambda: 0 < worker._sleeping_until < math.inf, 10, what="the worker to sleep")
        with db.write() as conn:
            enqueue(conn, "ping", {"note": "now"}, run_at=0, now=0)
        if db.is_sqlite:
            worker.wake.set()  # in-process wake-up, as the application does after commit
        wait_until(lambda: notes(db, effects), 10, every=0.01, what="the job")
        assert notes(db, effects) == ["now"]
    finally:
        worker.stop()
        thread.join(10)


def test_a_lock_given_back_by_a_rollback_to_a_savepoint_is_taken_again(pg_db: Database) -> None:
    """`lock_keys` does not ask again for what the transaction holds; a rollback to a
    savepoint gives back the locks taken since, and it then asks again."""
    space = 5_999

    def free_elsewhere(key: str) -> bool:
        with pg_db.read() as other:
            return bool(
                other.execute(
                    text("SELECT pg_try_advisory_xact_lock(:s, :b)"),
                    {"s": space, "b": _bucket(key)},
                ).scalar_one()
            )

    with pg_db.write() as conn:
        lock_keys(conn, ["kept"], space=space)
        sql(conn, "SAVEPOINT parcours_job")
        lock_keys(conn, ["kept", "undone"], space=space)
        assert not free_elsewhere("undone")
        _rollback_to(conn, "parcours_job")
        assert free_elsewhere("undone") and not free_elsewhere("kept")
        lock_keys(conn, ["kept", "undone"], space=space)
        assert not free_elsewhere("undone")


def test_stop_wakes_a_worker_asleep_even_on_postgresql_listen(db: Database) -> None:
    """A worker asleep with nothing due (here for up to an hour) stops at once when told:
    on PostgreSQL it sleeps on LISTEN, which `stop()` wakes through a pipe of its own."""
    worker = Worker(db, SimulatedClock(START), poll_seconds=3600)
    thread = threading.Thread(target=worker.run_forever)
    thread.start()
    try:
        wait_until(lambda: 0 < worker._sleeping_until < math.inf, 30, what="the worker to sleep")
    finally:
        worker.stop()
        thread.join(60)
    assert not thread.is_alive()  # woken: an hour of sleep would outlast the join


def test_a_job_whose_customer_another_worker_holds_waits_for_it(pg_db: Database) -> None:
    """Claims take their customer's lock without waiting: a due job of a customer another
    transaction holds (another worker deciding about them) is left, and the worker runs
    the jobs behind it; once the other is done, the job runs."""
    done: list[str] = []

    def handler(conn: Connection, job: Job) -> None:
        done.append(job.payload["note"])

    worker = Worker(pg_db, SimulatedClock(START))
    worker.register("about", handler)
    with pg_db.write() as conn:
        enqueue(conn, "about", {"note": "7 first"}, run_at=0, now=0, customer_id=7)
        enqueue(conn, "about", {"note": "8"}, run_at=1, now=0, customer_id=8)
        enqueue(conn, "about", {"note": "7 again"}, run_at=2, now=0, customer_id=7)
        enqueue(conn, "about", {"note": "nobody's"}, run_at=3, now=0)
    with pg_db.write() as other:  # another worker, deciding about customer 7
        assert try_lock_customers(other, [7]) == {7}
        assert worker.run_due() == 2
        assert done == ["8", "nobody's"]
        assert [kind for kind, _, _ in live_jobs(pg_db)] == ["about", "about"]
    assert worker.run_due() == 2
    assert done == ["8", "nobody's", "7 first", "7 again"]
    assert live_jobs(pg_db) == []


def test_customer_locks_are_taken_once_and_given_back_with_a_savepoint(pg_db: Database) -> None:
    def free_elsewhere(customer: int) -> bool:
        with pg_db.read() as other:
            return try_lock_customers(other, [customer]) == {customer}

    with pg_db.write() as conn:
        lock_customers(conn, [3, 1, 2])
        assert not free_elsewhere(2)
        sql(conn, "SAVEPOINT parcours_job")
        assert try_lock_customers(conn, [1, 5]) == {1, 5}
        _rollback_to(conn, "parcours_job")
        assert free_elsewhere(5) and not free_elsewhere(1)
        assert try_lock_customers(conn, [5]) == {5}
        assert not free_elsewhere(5)
    assert free_elsewhere(1) and free_elsewhere(5)


def test_the_lease_jobs_of_a_gone_worker_are_brought_forward(db: Database) -> None:
    with db.write() as conn:
        for note, owner in (("dead", "h:1:dead"), ("alive", "h:2:alive"), ("none", None)):
            enqueue(
                conn,
                "call",
                {"note": note},
                run_at=START + 300_000,
                now=START,
                unique_key=f"call:{note}",
                lease_owner=owner,
            )
    with db.write() as conn:
        assert rescue_leases(conn, {"h:2:alive", "h:3:idle"}, START + 5_000) == 1
        assert rescue_leases(conn, {"h:2:alive"}, START + 6_000) == 0  # done already
    with db.read() as conn:
        rows = conn.execute(
            text("SELECT unique_key, run_at, lease_owner FROM jobs ORDER BY unique_key")
        ).all()
    assert [tuple(row) for row in rows] == [
        ("call:alive", START + 300_000, "h:2:alive"),
        ("call:dead", START + 5_000, None),
        ("call:none", START + 300_000, None),
    ]


@pytest.mark.processes
def test_a_worker_is_live_while_it_beats_and_its_process_runs(db: Database) -> None:
    """Fresh heartbeats count as live, except, on this host, those whose process is gone
    (a worker killed and started again is known gone at once) or that are this process's
    pid under an id it does not run (from before a restart)."""
    from parcours.runtime.heartbeats import HOST, Heartbeat, live_workers

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    here = HOST
    mine = Heartbeat(db, SimulatedClock(START))
    rows = [
        (mine.id, here, os.getpid(), START),
        (f"{here}:{os.getpid()}:before", here, os.getpid(), START),
        (f"{here}:{ended.pid}:x", here, ended.pid, START),
        (f"{here}:{sleeper.pid}:x", here, sleeper.pid, START),
        ("elsewhere:1:fresh", "elsewhere", 1, START - 29_000),
        ("elsewhere:2:stale", "elsewhere", 2, START - 31_000),
    ]
    try:
        with db.write() as conn:
            for ident, host, pid, beat in rows:
                conn.execute(
                    text(
                        "INSERT INTO worker_heartbeats (id, host, pid, started_at, beat_at) "
                        "VALUES (:i, :h, :p, :s, :b)"
                    ),
                    {"i": ident, "h": host, "p": pid, "s": START - 60_000, "b": beat},
                )
        with db.read() as conn:
            live = live_workers(conn, START, 30_000)
    finally:
        sleeper.kill()
        sleeper.wait()
        mine.remove()
    assert live == {mine.id, f"{here}:{sleeper.pid}:x", "elsewhere:1:fresh"}


def test_another_pid_namespace_on_a_host_of_the_same_name_is_not_this_one(db: Database) -> None:
    """Two containers sharing a host name (host networking) have pid namespaces of their
    own: a pid of the other one is never looked up here, where it would seem gone."""
    import socket

    from parcours.runtime.heartbeats import HOST, live_workers

    assert HOST.startswith(socket.gethostname() + "/")  # boot and pid namespace follow
    other = socket.gethostname() + "/elsewhere/4026531836"
    with db.write() as conn:
        conn.execute(
            text(
                "INSERT INTO worker_heartbeats (id, host, pid, started_at, beat_at) "
                "VALUES (:i, :h, :p, :s, :b)"
            ),
            {"i": f"{other}:999999:x", "h": other, "p": 999_999, "s": START, "b": START},
        )
    with db.read() as conn:
        assert live_workers(conn, START, 30_000) == {f"{other}:999999:x"}


def test_the_heartbeat_goes_on_while_the_worker_is_busy(db: Database) -> None:
    """A call longer than `worker_stale_seconds` (a slow SMTP server) must not make a live
    worker look dead to the others, who would send its messages again."""
    from parcours.runtime.heartbeats import Heartbeat

    clock = SimulatedClock(START)
    beat = Heartbeat(db, clock, every=0.05)
    try:
        beat()  # the worker's loop, once; then it is busy for a long while
        first = beat.last_beat_at
        clock.advance_ms(60_000)
        for _ in range(200):
            if beat.last_beat_at != first:
                break
            threading.Event().wait(0.05)
        assert beat.last_beat_at == START + 60_000
    finally:
        beat.remove()
    with db.read() as conn:
        assert conn.execute(text("SELECT count(*) FROM worker_heartbeats")).scalar_one() == 0


# ---- jobs run in sets: writes held and sent together ------------------------------------------


def test_a_set_whose_job_fails_runs_again_one_job_at_a_time(db: Database, effects: str) -> None:
    """Kinds that run in sets share one savepoint: a job that fails undoes the set, which
    runs again job by job, so the others' effects are there once and the failing one alone
    is put back."""
    clock = SimulatedClock(START)
    worker = Worker(db, clock)
    writes = record(effects)
    ran: list[str] = []

    def writes_and_schedules(conn: Connection, job: Job) -> None:
        ran.append(job.payload["note"])
        writes(conn, job)  # type: ignore[operator]
        enqueue(conn, "later", {"note": "next"}, run_at=START + 10_000, now=START)
        if job.payload["note"] == "bad":
            raise RuntimeError("broke after writing")

    worker.register("set", writes_and_schedules, in_sets=True)
    for note in ("a", "b", "bad", "c"):
        add(db, "set", START, note=note)
    assert worker.run_due() == 4
    assert notes(db, effects) == ["a", "b", "c"]
    assert sorted(live_jobs(db)) == [("later", 0, "available")] * 3 + [("set", 1, "available")]
    assert ran == ["a", "b", "bad", "a", "b", "bad", "c"]  # the set, then one at a time


def test_a_set_holds_its_jobs_and_sends_what_their_changes_come_to(db: Database) -> None:
    """Scheduled, cancelled and scheduled again under a key within one set, replaced or
    kept by `ignore`: the table ends as if each had been written at once."""
    clock = SimulatedClock(START)
    worker = Worker(db, clock)
    with db.write() as conn:
        enqueue(conn, "t", {"n": 0}, run_at=START + 50_000, now=START, unique_key="gone")
        enqueue(conn, "t", {"n": 0}, run_at=START + 50_000, now=START, unique_key="kept")

    def changes(conn: Connection, job: Job) -> None:
        at = START + 60_000
        enqueue(conn, "t", {"n": 1}, run_at=at, now=START, unique_key="again")
        assert cancel(conn, "again")  # held: dropped before it reached the table
        enqueue(conn, "t", {"n": 2}, run_at=at, now=START, unique_key="again")
        cancel(conn, "gone")  # in the table: deleted when the set's writes go
        enqueue(conn, "t", {"n": 3}, run_at=at, now=START, unique_key="kept", on_conflict="ignore")
        enqueue(conn, "t", {"n": 4}, run_at=at, now=START, unique_key="new")
        enqueue(conn, "t", {"n": 5}, run_at=at, now=START, unique_key="new", on_conflict="ignore")

    worker.register("change", changes, in_sets=True)
    add(db, "change", START)
    assert worker.run_due() == 1
    with db.read() as conn:
        rows = sql(conn, "SELECT unique_key, payload FROM jobs ORDER BY unique_key").all()
    assert [(r.unique_key, r.payload) for r in rows] == [
        ("again", '{"n":2}'),
        ("kept", '{"n":0}'),
        ("new", '{"n":4}'),
    ]


def test_a_job_of_a_set_sees_what_earlier_jobs_wrote_about_its_customer(db: Database) -> None:
    """Held writes go to the table before a job whose customer an earlier job of the set
    was about (and before a job about no one customer), so it reads them."""
    clock = SimulatedClock(START)
    worker = Worker(db, clock)
    seen: list[tuple[int | None, int]] = []

    def counts(conn: Connection, job: Job) -> None:
        found = sql(conn, "SELECT count(*) FROM jobs WHERE kind = 'mark'").scalar()
        seen.append((job.customer_id, int(found)))
        enqueue(conn, "mark", {}, run_at=START + 60_000, now=START, customer_id=job.customer_id)

    worker.register("count", counts, in_sets=True)
    for customer in (1, 2, 1, None, 3):
        add(db, "count", START, customer_id=customer)
    assert worker.run_due() == 5
    # 1 and 2 held theirs; the second job of 1 finds both; the one about no one the
    # third; 3 comes after a release, so it finds the fourth.
    assert seen == [(1, 0), (2, 0), (1, 2), (None, 3), (3, 4)]
