"""What the benchmarks share: a server subprocess, a scratch database, memory sampling, and
the statements they read and write the database with. Those are raw by design: a floor
measures the storage alone, and a count must not depend on the code it measures."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Connection, text

from parcours.bench.latency import LatencyProxy, latency_added

WRITE_KEY = "bench-write-key"
ADMIN_KEY = "bench-admin-key"


class MissingTool(RuntimeError):
    """A module the benchmarks need and a plain install of Parcours does not bring."""


def psutil() -> Any:
    """psutil, which the benchmarks measure CPU and memory with: an extra of its own
    (`parcours[bench]`), since the server never needs it."""
    try:
        import psutil as module
    except ModuleNotFoundError:
        raise MissingTool(
            "the benchmarks measure CPU and memory with psutil, which is not installed: "
            "pip install 'parcours[bench]' (or pip install psutil)"
        ) from None
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def scratch_database(postgres_url: str | None) -> Iterator[tuple[str, Path]]:
    """A fresh database (SQLite in a temp dir, or a new PostgreSQL database), removed after."""
    directory = Path(tempfile.mkdtemp(prefix="parcours-bench-"))
    if postgres_url is None:
        try:
            yield f"sqlite:///{directory / 'parcours.db'}", directory
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return
    import psycopg

    name = f"parcours_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = postgres_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}", directory
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def measured_database(
    postgres_url: str | None, latency_ms: float | None
) -> Iterator[tuple[str, Path, LatencyProxy | None]]:
    """A scratch database for the code measured; with a latency (PostgreSQL), its URL
    through the proxy that adds it (bench/latency.py), and the proxy, for its counts."""
    with scratch_database(postgres_url) as (url, directory):
        if latency_ms is None:
            yield url, directory, None
            return
        with latency_added(url, latency_ms) as (proxied, proxy):
            yield proxied, directory, proxy


@dataclass
class MemorySampler:
    """Samples a process's resident memory every `interval` seconds."""

    pid: int
    interval: float = 0.2
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._psutil = psutil()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        process = self._psutil.Process(self.pid)
        start = time.monotonic()
        while not self._stop.is_set():
            try:
                family = [process, *process.children(recursive=True)]
                rss = sum(member.memory_info().rss for member in family)
            except self._psutil.Error:
                return
            self.samples.append((time.monotonic() - start, rss))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def peak_mb(self) -> float:
        return max((rss for _, rss in self.samples), default=0) / 2**20


class Server:
    """`parcours serve` in a subprocess, on a free port."""

    def __init__(self, database_url: str, data_dir: Path, *, workers: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PARCOURS_DATABASE_URL": database_url,
            "PARCOURS_WRITE_KEY": WRITE_KEY,
            "PARCOURS_ADMIN_KEY": ADMIN_KEY,
            "PARCOURS_LOG_LEVEL": "warning",
        }
        command = [
            str(Path(sys.executable).parent / "parcours"),
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(data_dir),
        ]
        # Warnings and errors go to a file beside the data directory, shown if any appear.
        self.log_path = data_dir.parent / f"server-{data_dir.name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=self._log
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the server exited at start")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the server did not start within 60 s")

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        """CPU of the server process and any children it has."""
        process = psutil().Process(self.pid)
        total = 0.0
        for member in [process, *process.children(recursive=True)]:
            times = member.cpu_times()
            total += times.user + times.system
        return total

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM, then wait (once; a second call does nothing)."""
        if self._log.closed:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()
        self.show_log()

    def show_log(self) -> None:
        """Print what the server logged (warnings and errors), if anything."""
        logged = self.log_path.read_text(encoding="utf-8", errors="replace").strip()
        if logged:
            print(f"the server logged:\n{logged[-4000:]}", file=sys.stderr)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def insert_events_straight(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """The storage floor: `rows` (in the order of the events table's columns as appended)
    inserted by the driver's executemany, in the caller's transaction."""
    from parcours.log import events as events_table
    from parcours.log.queries import _EVENT_COLUMNS

    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    sql = (
        f"INSERT INTO {events_table.name} ({', '.join(_EVENT_COLUMNS)}) "
        f"VALUES ({', '.join(mark for _ in _EVENT_COLUMNS)})"
    )
    conn.connection.driver_connection.cursor().executemany(sql, rows)  # type: ignore[union-attr]


def email_identities(conn: Connection) -> dict[str, int]:
    """Each email address known, and its customer's id."""
    return dict(
        conn.exec_driver_sql("SELECT value, customer_id FROM identities WHERE kind = 'email'")
        .tuples()
        .all()
    )


def outbox_states(conn: Connection) -> dict[str, int]:
    """How many messages of the outbox are in each state."""
    return dict(
        conn.exec_driver_sql("SELECT state, count(*) FROM outbox GROUP BY state").tuples().all()
    )


def step_visits(conn: Connection) -> int:
    """How many journey steps were recorded."""
    count: int = conn.execute(text("SELECT count(*) FROM journey_step_visits")).scalar_one()
    return count


def intents(conn: Connection) -> int:
    """How many messages journeys asked for (the outbox's rows)."""
    count: int = conn.execute(text("SELECT count(*) FROM outbox")).scalar_one()
    return count


def messages_done(conn: Connection) -> int:
    """How many messages were sent, or failed later by the sandbox's feedback."""
    count: int = conn.execute(
        text("SELECT count(*) FROM outbox WHERE state IN ('sent', 'failed')")
    ).scalar_one()
    return count


def active_runs(conn: Connection) -> int:
    """How many journey runs are still active."""
    count: int = conn.execute(
        text("SELECT count(*) FROM journey_runs WHERE state = 'active'")
    ).scalar_one()
    return count


def queued_jobs(conn: Connection) -> int:
    """How many jobs the queue holds."""
    count: int = conn.execute(text("SELECT count(*) FROM jobs")).scalar_one()
    return count


def event_to_intent_delays(conn: Connection) -> list[int]:
    """For each message a journey asked for, the time from its run's entry event being
    received to the message's row, in milliseconds."""
    return list(
        conn.execute(
            text(
                "SELECT o.created_at - e.received_at FROM outbox o "
                "JOIN journey_runs r ON r.id = o.run_id "
                "JOIN events e ON e.message_id = r.entry_message_id"
            )
        )
        .scalars()
        .all()
    )
