"""Worker heartbeats: each process running the worker writes its row every few seconds from
a thread of its own, so that /readyz and the metrics can tell live workers from gone ones,
and so that the lease jobs of a worker that died during a call (a send) are brought forward
by another at once rather than when the lease runs out (`rescue_leases`). The beat does not
wait for the worker's loop: a call that takes longer than `worker_stale_seconds` (a slow
SMTP server) must not make a live worker look dead, or its sends would be made twice."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Integer,
    Table,
    Text,
    case,
    delete,
    func,
    insert,
    select,
    update,
)

from parcours.runtime.clock import Clock, wall_clock
from parcours.runtime.db import Database, metadata
from parcours.runtime.queue import rescue_leases

log = logging.getLogger(__name__)

worker_heartbeats = Table(
    "worker_heartbeats",
    metadata,
    Column("id", Text, primary_key=True),  # host:pid:random, one per worker loop
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("beat_at", BigInteger, nullable=False),
)

BEAT_EVERY_SECONDS = 5.0
FORGET_AFTER_MS = 24 * 3_600_000  # a row of a process gone for a day is removed
STALE_MS = 30_000  # the default of `worker_stale_seconds`


def _host_identity() -> str:
    """This host as far as process ids go: the host name, and on Linux the boot and the
    pid namespace, so that two containers sharing a host name (host networking) never
    take each other's processes for their own when asking whether a pid still runs."""
    name = socket.gethostname()
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot:
            boot_id = boot.read().strip()[:8]
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return name
    return f"{name}/{boot_id}/{namespace}"


HOST = _host_identity()
_IN_THIS_PROCESS: set[str] = set()  # the heartbeats of this process's worker loops


@dataclass(frozen=True)
class WorkerCounts:
    fresh: int
    stale: int


def beat_clock(clock: Clock) -> Clock:
    """The clock heartbeats are written and read on: real time, even when `clock` runs
    faster (the demo's), since a beat says that a process lives now and
    `worker_stale_seconds` counts real seconds; `clock` itself in tests, which move it."""
    return wall_clock(clock)


class Heartbeat:
    """Called by the worker at every turn of its loop: the first call writes the row and
    starts a thread that writes it again every `every` seconds until `remove()`, whatever
    the loop is doing. Each write also brings forward the lease jobs of workers that are
    gone (`live_workers`). What it says is that the process lives; a worker thread stuck
    for good is not told from a busy one (its leases run out, then its jobs go on)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        every: float = BEAT_EVERY_SECONDS,
        *,
        stale_ms: int = STALE_MS,
    ) -> None:
        self.db = db
        self.clock = clock  # the jobs': a lease brought forward is due at its `now`
        self.beats = beat_clock(clock)
        self.every = every
        self.stale_ms = stale_ms
        self.id = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        _IN_THIS_PROCESS.add(self.id)
        self.started_at = self.beats.now_ms()
        self.last_beat_at: int | None = None  # on `beats`, the last one written
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    def __call__(self) -> None:
        if self._thread is not None:
            return
        self._beat_logged()
        self._stopped.clear()
        self._thread = threading.Thread(
            target=self._beat_until_removed, name="parcours-heartbeat", daemon=True
        )
        self._thread.start()

    def _beat_until_removed(self) -> None:
        while not self._stopped.wait(self.every):
            self._beat_logged()

    def _beat_logged(self) -> None:
        try:
            self.beat()
        except Exception:  # the database may be away for a moment; readyz will say so
            log.warning("could not write the worker heartbeat", exc_info=True)

    def beat(self) -> None:
        now = self.beats.now_ms()
        with self.db.write() as conn:
            updated = conn.execute(
                update(worker_heartbeats)
                .where(worker_heartbeats.c.id == self.id)
                .values(beat_at=now)
            ).rowcount
            if not updated:
                conn.execute(
                    insert(worker_heartbeats).values(
                        id=self.id,
                        host=HOST,
                        pid=os.getpid(),
                        started_at=self.started_at,
                        beat_at=now,
                    )
                )
                conn.execute(
                    delete(worker_heartbeats).where(
                        worker_heartbeats.c.beat_at < now - FORGET_AFTER_MS
                    )
                )
            # A send claimed by a worker that died is made again now, not after its lease.
            live = live_workers(conn, now, self.stale_ms) | {self.id}
            rescue_leases(conn, live, self.clock.now_ms())
        self.last_beat_at = now

    def remove(self) -> None:
        """The worker stopped: the beats stop and its row goes (it would only turn stale)."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        _IN_THIS_PROCESS.discard(self.id)
        if self.last_beat_at is None:
            return
        try:
            with self.db.write() as conn:
                conn.execute(delete(worker_heartbeats).where(worker_heartbeats.c.id == self.id))
        except Exception:
            log.warning("could not remove the worker heartbeat", exc_info=True)
        self.last_beat_at = None


def worker_counts(conn: Connection, now: int, stale_ms: int) -> WorkerCounts:
    """How many workers, anywhere, beat within `stale_ms` (fresh), and how many did not;
    `now` on the heartbeats' clock (`beat_clock`)."""
    fresh = func.coalesce(
        func.sum(case((worker_heartbeats.c.beat_at >= now - stale_ms, 1), else_=0)), 0
    )
    row = conn.execute(
        select(func.count().label("total"), fresh.label("fresh")).select_from(worker_heartbeats)
    ).one()
    return WorkerCounts(int(row.fresh), int(row.total) - int(row.fresh))


def live_workers(conn: Connection, now: int, stale_ms: int) -> set[str]:
    """The heartbeat ids of the workers that may be alive: they beat within `stale_ms`,
    and, when they ran on this host, their process still runs (a worker killed here and
    started again is known gone at once, not `stale_ms` later). A worker whose row is
    missing (it stopped, or it never beat) is not among them."""
    alive: set[str] = set()
    heartbeats = worker_heartbeats.c
    for row in conn.execute(
        select(heartbeats.id, heartbeats.host, heartbeats.pid).where(
            heartbeats.beat_at >= now - stale_ms
        )
    ).all():
        if row.host == HOST:
            if row.pid == os.getpid():
                if row.id not in _IN_THIS_PROCESS:
                    continue  # this process's pid, from before a restart
            elif not _process_runs(int(row.pid)):
                continue
        alive.add(str(row.id))
    return alive


def _process_runs(pid: int) -> bool:
    """Whether a process with this id runs on this host (a zombie, dead but not yet
    reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc: it exists


__all__ = [
    "HOST",
    "Heartbeat",
    "WorkerCounts",
    "beat_clock",
    "live_workers",
    "worker_counts",
    "worker_heartbeats",
]
