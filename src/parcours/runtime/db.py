"""The database: one engine for SQLite or PostgreSQL, the shared metadata, migrations."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import threading
import time
import weakref
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Generic, NamedTuple, Protocol, TypeVar, cast

from sqlalchemy import BigInteger, Connection, Engine, Integer, MetaData, create_engine, event
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.pool import QueuePool

try:
    import fcntl
except ImportError:  # Windows: processes fall back on SQLite's busy handler
    fcntl = None  # type: ignore[assignment]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# An auto-incrementing 64-bit key: BIGINT on PostgreSQL, INTEGER PRIMARY KEY (rowid) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")

# SQLite allows 32,766 bound parameters per statement; stay far below for IN lists.
IN_CHUNK = 500

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

log = logging.getLogger(__name__)


class Database:
    """An engine plus what the rest of the code needs to know about its dialect."""

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self.url = normalise_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self._scheduled_listeners: list[Callable[[int], None]] = []
        if self.is_sqlite:
            _ensure_sqlite_dir(self.url)
            self.engine: Engine = create_engine(
                self.url,
                poolclass=QueuePool,
                pool_size=pool_size,
                connect_args={"check_same_thread": False, "timeout": 30},
            )
            _configure_sqlite(self.engine)
            self._gate: WriteGate | None = WriteGate.for_sqlite(self.url)
        else:
            self._gate = None
            self.engine = create_engine(self.url, pool_size=pool_size)
            _ping_after_idle(self.engine)
            _configure_postgres(self.engine)

    @property
    def dialect(self) -> str:
        return "sqlite" if self.is_sqlite else "postgresql"

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that will write: BEGIN IMMEDIATE on SQLite, so it never upgrades late.
        After a commit that scheduled jobs, the `after_jobs_scheduled` listeners are called
        (outside the write lock)."""
        with self._gate or nullcontext(), self.engine.connect() as conn:
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            try:
                with conn.begin() as transaction:
                    yield conn
            finally:
                conn.info.pop(_LOCKS_HELD, None)  # the transaction's locks are gone
                if not conn.invalidated:
                    _end_pipeline(conn, failing=True)
                conn.info.pop(_HELD_WRITES, None)
                conn.info.pop(_AHEAD, None)  # what was read ahead and not taken
                _end_begun_by_hand(conn)
            noted = conn.info.pop(_JOBS_SCHEDULED, None)
            earliest = noted[1].get("run_at") if noted and noted[0] is transaction else None
        if earliest is not None:
            for listener in self._scheduled_listeners:
                try:
                    listener(earliest)
                except Exception:
                    log.exception("a jobs-scheduled listener failed")

    def after_jobs_scheduled(self, listener: Callable[[int], None]) -> None:
        """Call `listener(run_at)` after each write transaction of this process that
        scheduled jobs (`note_jobs_scheduled`), with the earliest time they are due: on
        SQLite, how a worker learns of new work."""
        self._scheduled_listeners.append(listener)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction (a consistent snapshot on both databases)."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()
        if self._gate is not None:
            self._gate.close()


class WriteGate:
    """SQLite's one writer at a time, as a queue: threads of this process take turns in
    arrival order, processes on a file lock beside the database. A waiting writer starts
    the moment the lock is free, where SQLite's busy handler would poll it with sleeps of
    1 to 100 ms (and let one thread starve another)."""

    def __init__(self, lock_path: str | None) -> None:
        self._turns = threading.Condition()
        self._next_ticket = 0
        self._serving = 0
        self._abandoned: set[int] = set()
        self._holder = threading.local()
        self._path = lock_path if fcntl is not None else None
        self._fd = -1  # opened at the first write, closed by Database.dispose

    @classmethod
    def for_sqlite(cls, url: str) -> WriteGate:
        if ":///" not in url:
            return cls(None)  # an in-memory database: this process only
        path = url.split(":///", 1)[1].split("?", 1)[0]
        return cls(None if path in ("", ":memory:") else f"{path}-writer.lock")

    def __enter__(self) -> None:
        if getattr(self._holder, "inside", False):
            raise RuntimeError("a write transaction inside another on the same SQLite database")
        with self._turns:
            ticket = self._next_ticket
            self._next_ticket += 1
            try:
                while ticket != self._serving:
                    self._turns.wait()
            except BaseException:  # interrupted while waiting: give the turn up
                self._abandoned.add(ticket)
                if ticket == self._serving:
                    self._advance()
                raise
        try:
            if self._path is not None:
                if self._fd < 0:
                    self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._next_turn()
            raise
        self._holder.inside = True

    def __exit__(self, *_: object) -> None:
        self._holder.inside = False
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._next_turn()

    def _next_turn(self) -> None:
        with self._turns:
            self._advance()

    def _advance(self) -> None:
        self._serving += 1
        while self._serving in self._abandoned:
            self._abandoned.remove(self._serving)
            self._serving += 1
        self._turns.notify_all()

    def close(self) -> None:
        with self._turns:  # not while a thread holds the lock
            if self._fd < 0 or self._serving != self._next_ticket:
                return
            os.close(self._fd)
            self._fd = -1


def normalise_url(url: str) -> str:
    """Accept `postgresql://` as users write it and use psycopg 3."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url[len("postgres://") :]
    return url


def _ensure_sqlite_dir(url: str) -> None:
    """Make the database's directory and an empty database file, readable by this user
    only (0700, 0600): they hold the link-signing secret, the VAPID private key and every
    customer's data. SQLite gives its -wal and -shm files the database file's mode. What
    exists already keeps its mode (docs/security.md, "Files on disk")."""
    path = url.split(":///", 1)[-1].split("?", 1)[0]
    if not path or path == ":memory:":
        return
    file = Path(path)
    file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with suppress(FileExistsError):
        os.close(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


PING_AFTER_IDLE_SECONDS = 1.0


def _ping_after_idle(engine: Engine) -> None:
    """Check a pooled connection before use only when it has been idle a while: after a
    restart of PostgreSQL or a dropped connection, the pool gives a fresh one instead.
    SQLAlchemy's `pool_pre_ping` checked before every transaction, one more round trip for
    each of the writer's groups and the workers' batches, which take connections back to
    back; a connection that breaks while in use fails its transaction either way."""

    @event.listens_for(engine, "checkin")
    def _returned(dbapi_connection: Any, record: Any) -> None:
        record.info["parcours_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _taken(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("parcours_idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(";")  # an empty query: one round trip, as SQLAlchemy's ping
            finally:
                cursor.close()
        except Exception as exc:
            raise DisconnectionError("the pooled connection is gone") from exc


# What PostgreSQL's planner is told an index probe costs, against a sequential read's 1.0,
# set on each connection unless an operator set it: its default (4) is a spinning disk's;
# Parcours reads its hot rows by key, from memory or an SSD. At 4, the reads of a group's
# orders by customer planned a scan of the whole table while it held some thousands of
# rows: 1.2 ms where the index took 0.07 (bench/RESULTS.md, session 17).
RANDOM_PAGE_COST = "1.1"
_PLANNER = (
    "SELECT set_config('random_page_cost', %s, false) "
    "WHERE current_setting('random_page_cost') = '4'"
)


def _configure_postgres(engine: Engine) -> None:
    """Each new connection: lists are sent to the server in binary (psycopg otherwise
    writes an array's text form, quoting and escaping each element in Python: a third of
    the writer's CPU, with profiles' JSON in the arrays of `update_rows`), and
    random_page_cost as above, for the session (one round trip). Statements given arrays
    are never prepared (`_ARRAYS_UNPREPARED`)."""
    from psycopg.types.array import ListBinaryDumper

    # Writes held (`hold_writes`) go before anything SQLAlchemy sends, and before the
    # commit; a rollback drops them; the transaction's end ends the holding.
    @event.listens_for(engine, "before_cursor_execute")
    def _held_first(conn: Connection, *_: Any) -> None:
        if _PIPELINE in conn.info:
            _end_pipeline(conn)

    @event.listens_for(engine, "commit")
    def _held_before_commit(conn: Connection) -> None:
        # The COMMIT goes down the pipeline, answered with everything sent before it: one
        # round trip (psycopg then finds the transaction ended, and sends nothing).
        if _PIPELINE in conn.info:
            _write(conn, "COMMIT", None, one_plan=True)
        _end_pipeline(conn)
        conn.info.pop(_HELD_WRITES, None)

    @event.listens_for(engine, "rollback")
    def _held_dropped(conn: Connection) -> None:
        if not conn.invalidated:  # a connection found broken has no info to read
            _end_pipeline(conn, failing=True)
            conn.info.pop(_HELD_WRITES, None)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.adapters.register_dumper(list, ListBinaryDumper)
        autocommit = dbapi_conn.autocommit
        dbapi_conn.autocommit = True  # the settings outlive any transaction
        try:
            dbapi_conn.execute(_PLANNER, (RANDOM_PAGE_COST,))
        finally:
            dbapi_conn.autocommit = autocommit


def _configure_sqlite(engine: Engine) -> None:
    # The driver's own transaction handling is switched off; SQLAlchemy emits BEGIN itself,
    # so that writers can ask for BEGIN IMMEDIATE (see Database.write).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=OFF")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        # Straight to the driver: SQLAlchemy's execution path cost half a transaction.
        conn.connection.driver_connection.execute(f"BEGIN {mode}")  # type: ignore[union-attr]


_JOBS_SCHEDULED = "parcours_jobs_scheduled"


def note_jobs_scheduled(conn: Connection, run_at: int) -> None:
    """This transaction scheduled a job due at `run_at`: its commit calls the
    `after_jobs_scheduled` listeners with the earliest such time."""
    note = transaction_note(conn, _JOBS_SCHEDULED)
    note["run_at"] = min(run_at, note.get("run_at", run_at))


def transaction_note(conn: Connection, name: str) -> dict[Any, Any]:
    """A dict that lives as long as the connection's current transaction: kept in
    `conn.info` under `name`, tagged with the transaction, so that the next transaction
    on the pooled connection starts with an empty one."""
    transaction = conn.get_transaction()
    noted = conn.info.get(name)
    if noted is None or noted[0] is not transaction:
        noted = (transaction, {})
        conn.info[name] = noted
    note: dict[Any, Any] = noted[1]
    return note


_V = TypeVar("_V")


class PerDatabase(Generic[_V]):
    """What a process keeps of a database between its transactions (the customer ids it
    took ahead, what the catalog knows is filled), one value for each database it works
    on, made by `make` on first use and gone with the engine. `forget_kept` drops every
    one at once (a test that empties its database)."""

    def __init__(self, make: Callable[[], _V]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._kept: weakref.WeakKeyDictionary[Engine, _V] = weakref.WeakKeyDictionary()
        _ALL_KEPT.add(self)

    def of(self, conn: Connection) -> _V:
        with self._lock:
            kept = self._kept.get(conn.engine)
            if kept is None:
                kept = self._kept[conn.engine] = self._make()
            return kept

    def forget(self) -> None:
        with self._lock:
            self._kept = weakref.WeakKeyDictionary()


_ALL_KEPT: weakref.WeakSet[PerDatabase[Any]] = weakref.WeakSet()


def forget_kept() -> None:
    """Drop what every `PerDatabase` kept, in this process."""
    for kept in list(_ALL_KEPT):
        kept.forget()


class HeldPart(Protocol):
    """One package's writes held by a batch of jobs (`held`), sent by `write`."""

    def write(self, conn: Connection) -> None: ...


_HELD = "parcours_held_writes"


class HeldWrites:
    """Writes a batch of jobs holds back and sends together, a statement per kind of write
    for the whole batch instead of one per job (docs/architecture.md, "Work in sets").
    Each package keeps its own part (`held`); `release` writes them all, in the order the
    parts were first used. What a job reads of its own held writes is the owner's to
    send first (`release` before the read); the worker releases everything before a job
    whose customer an earlier job of the batch was about, so a job sees every earlier
    job's writes about its customer, as when each wrote at once."""

    def __init__(self) -> None:
        self.parts: dict[str, HeldPart] = {}
        # Rows read for all the set's customers at once (`read_ahead`), each taken once.
        self.ahead: dict[str, dict[Any, Any]] = {}

    def release(self, conn: Connection) -> None:
        """Write everything held; what was read ahead may be out of date from now on."""
        self.ahead = {}
        while self.parts:  # a part's writes may hold others' (an intent, its job)
            parts, self.parts = self.parts, {}
            for part in parts.values():
                part.write(conn)


_P = TypeVar("_P", bound=HeldPart)


def holding_writes(conn: Connection) -> HeldWrites:
    """From now until `stop_holding`, this connection's held parts keep their writes."""
    holder = HeldWrites()
    conn.info[_HELD] = holder
    return holder


def stop_holding(conn: Connection) -> None:
    """Writes are sent at once again; what was held and not released is dropped."""
    conn.info.pop(_HELD, None)


def held(conn: Connection, name: str, make: Callable[[], _P]) -> _P | None:
    """This package's part of the writes the connection holds (made on first use), or
    None when it holds none: write at once."""
    holder: HeldWrites | None = conn.info.get(_HELD)
    if holder is None:
        return None
    part = holder.parts.get(name)
    if part is None:
        part = holder.parts[name] = make()
    return cast(_P, part)


def reading_ahead(conn: Connection) -> bool:
    """Whether a set of jobs runs on this connection: what its jobs will read about their
    customers is worth reading for all of them at once (`read_ahead`)."""
    return _HELD in conn.info


def read_ahead(conn: Connection, name: str, found: dict[Any, Any]) -> None:
    """Keep what was read for many keys (customers) at once, under `name`, for the set's
    jobs to take (`take_ahead`), each key once: a second read of it goes to the database,
    and so does any after the set has written what it held (`HeldWrites.release`). A key
    read and found with nothing must be given an empty value, not left out."""
    holder: HeldWrites | None = conn.info.get(_HELD)
    if holder is not None:
        holder.ahead.setdefault(name, {}).update(found)


def take_ahead(conn: Connection, name: str, key: Any, *, keep: bool = False) -> Any:
    """What was read ahead under `name` for `key`, taken (None: not read ahead: read it).
    `keep`: left for the next read too, until its owner forgets it (`forget_ahead`) when
    it writes what it is made of."""
    holder: HeldWrites | None = conn.info.get(_HELD)
    if holder is None:
        return None
    found = holder.ahead.get(name)
    if found is None:
        return None
    return found.get(key) if keep else found.pop(key, None)


def forget_ahead(conn: Connection, name: str, key: Any) -> None:
    """What was read ahead under `name` for `key` is out of date: the next read goes to
    the database."""
    holder: HeldWrites | None = conn.info.get(_HELD)
    if holder is not None and name in holder.ahead:
        holder.ahead[name].pop(key, None)


def release_held(conn: Connection, name: str | None = None) -> None:
    """Send the held writes now (this package's part only, with `name`): before a read
    that must see them."""
    holder: HeldWrites | None = conn.info.get(_HELD)
    if holder is None:
        return
    if name is None:
        holder.release(conn)
    else:
        part = holder.parts.pop(name, None)
        if part is not None:
            part.write(conn)  # what it holds of others' stays held


def chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


LIKE_ESCAPE = "\\"  # the escape character of every LIKE pattern built with like_escape


def like_escape(value: str) -> str:
    """`value` matched as written inside a LIKE pattern whose escape character is
    LIKE_ESCAPE (`ESCAPE '\\'`, `.like(..., escape=LIKE_ESCAPE)`): an id holding `_` or
    `%` is not a wildcard."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# The hashed buckets of the keys locked. Two writers' groups of 100 events (some 150 keys
# each) shared a bucket almost every time among 4,096, and waited for each other as if
# they were about the same people (bench/RESULTS.md, session 17). Among 2^30 (the most a
# two-key lock's int4 takes above its offset), two groups of 1,000 events (some 2,000
# keys each) share one about once in 270. A transaction holds about as many locks either
# way: one per key.
LOCK_BUCKETS = 1 << 30


def lock_keys(conn: Connection, keys: Iterable[str], *, space: int | None = None) -> None:
    """Serialise writers that touch the same keys, until the transaction ends.

    PostgreSQL: transaction-scoped advisory locks on hashed buckets (`LOCK_BUCKETS`), taken
    in sorted order so two writers cannot deadlock. SQLite: nothing to do, BEGIN IMMEDIATE
    already made this the only writer. With `space` (a number of the caller's own), the
    buckets are PostgreSQL's two-key advisory locks, a key space apart from the one-key
    locks the writer takes: work holding many of them for a while (a segment's batch
    evaluation) then never delays ingestion. Only appends to the log (ingest/writer.py
    `append_events`) use the one-key space; everything else locks in a space of its own
    (segments 5101, referrals 5102, customers 5103). A transaction that locks
    keys in several calls (a batch of jobs) may still deadlock with another: PostgreSQL
    detects it, and the victim is tried again (`is_transient`). Work that must never wait
    takes its locks with `try_lock_buckets` instead.
    """
    if conn.dialect.name == "sqlite":
        return
    # What the transaction holds already is not asked for again (a batch of journey steps
    # takes its customers' send locks at once, and each send would take its own).
    held = held_buckets(conn, space)
    buckets = sorted({_bucket(key) for key in keys} - held)
    if not buckets:
        return
    # One statement; the subquery's ORDER BY makes the locks be taken in order. Its
    # answer is not read: while the transaction holds its writes (`hold_writes`), it goes
    # with the next statement, which the server runs once the locks are taken.
    if space is None:
        _write(
            conn,
            "SELECT count(pg_advisory_xact_lock(k)) FROM "
            "(SELECT unnest(%s::bigint[]) AS k ORDER BY 1) AS ordered",
            (buckets,),
            one_plan=True,
        )
    else:
        _write(
            conn,
            "SELECT count(pg_advisory_xact_lock(%s, k)) FROM "
            "(SELECT unnest(%s::int[]) AS k ORDER BY 1) AS ordered",
            (space, buckets),
            one_plan=True,
        )
    held.update(buckets)  # once taken (a deadlock raises above)


def try_lock_buckets(conn: Connection, space: int, buckets: Iterable[int]) -> set[int]:
    """Take, without waiting, what can be taken of these buckets' two-key advisory locks in
    `space` until the transaction ends; return those of them this transaction now holds
    (all of them on SQLite, whose writer is alone). A transaction that only ever tries its
    locks in a space never waits there, so it cannot deadlock there, however many calls
    it makes; what it could not take is another's, for later. The number of buckets of a
    space bounds how many of its locks every session together holds at once (each takes a
    place in PostgreSQL's lock table: 6,400 by default for the whole server)."""
    wanted = set(buckets)
    if conn.dialect.name == "sqlite":
        return wanted
    held = held_buckets(conn, space)
    missing = sorted(wanted - held)
    if missing:
        held.update(
            int(bucket)
            for bucket in sql(
                conn,
                "SELECT k FROM unnest(CAST(:keys AS int[])) AS k "
                "WHERE pg_try_advisory_xact_lock(:space, k)",
                {"space": space, "keys": missing},
            ).scalars()
        )
    return wanted & held


def held_buckets(conn: Connection, space: int | None) -> set[int]:
    """The advisory-lock buckets of `space` this transaction is known to hold (a set to
    add to once more are taken)."""
    return _locks_held(conn).setdefault(space, set())


_LOCKS_HELD = "parcours_locks_held"


def _locks_held(conn: Connection) -> dict[int | None, set[int]]:
    """The advisory-lock buckets this transaction holds, by key space."""
    if conn.get_transaction() is None:  # autocommit: each statement's locks end with it
        return {}
    return transaction_note(conn, _LOCKS_HELD)


def forget_locks(conn: Connection) -> None:
    """After a rollback to a savepoint, which gives back the locks taken since: what the
    transaction holds is no longer known, and the next `lock_keys` asks again."""
    conn.info.pop(_LOCKS_HELD, None)


def _bucket(key: str) -> int:
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    # Keep clear of the small integers other advisory-lock users may take.
    return 7_000_000 + int.from_bytes(digest, "big") % LOCK_BUCKETS


# SQLSTATEs after which the whole transaction may simply be tried again (PostgreSQL): a
# deadlock, a serialization failure, and "out of shared memory", PostgreSQL's lock table
# (shared by every session) full for as long as others hold many locks.
_RETRYABLE_STATES = frozenset({"40P01", "40001", "53200"})


def is_transient(exc: BaseException) -> bool:
    """Whether trying the transaction again may succeed: a deadlock, a serialization
    failure or a full lock table on PostgreSQL, a locked or busy database on SQLite.
    Recognises SQLAlchemy's wrapped errors and the driver's own, which `run` raises as
    they are."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if getattr(orig, "sqlstate", None) in _RETRYABLE_STATES:
        return True
    if isinstance(orig, sqlite3.OperationalError):
        message = str(orig).lower()
        return "database is locked" in message or "busy" in message
    return False


def migrate(db: Database) -> None:
    """Bring the schema to the latest migration (Alembic). A database at it already is
    left as it is after one read of its revision: Alembic reads every migration's file
    to find the head (30 ms, for every process and every test that opens the services),
    which is found once per process here."""
    from alembic import command

    if current_revision(db) == head_revision():
        return
    command.upgrade(alembic_config(db), "head")


def current_revision(db: Database) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@cache
def head_revision() -> str | None:
    """The latest migration's revision (the files do not change while a process runs)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def alembic_config(db: Database) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    config.attributes["engine"] = db.engine
    return config


COPY_FROM_ROWS = 20


def insert_rows(
    conn: Connection, table: Any, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert many rows straight through the driver: executemany on SQLite, COPY on
    PostgreSQL (the hot path: SQLAlchemy's per-row parameter processing cost more than the
    database here), or arrays held for the next statement (`hold_writes`)."""
    if not rows:
        return
    if _HELD_WRITES in conn.info:
        # Held for the next statement: COPY cannot ride psycopg's pipeline; the rows go
        # as one array per column (binary, see _configure_postgres).
        arrays = _unnest(conn, table, columns)
        statement = f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM {arrays}"
        _write(conn, statement, _as_arrays(rows, len(columns)), one_plan=True)
        return
    if conn.dialect.name != "sqlite" and len(rows) >= COPY_FROM_ROWS:
        # PostgreSQL: COPY is several times faster than a pipelined executemany for many
        # rows; for a few (a journey's log line), its own round trips cost more.
        with _cursor(conn).copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    mark = _placeholder(conn)
    sql = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "
        f"VALUES ({', '.join(mark for _ in columns)})"
    )
    _cursor(conn).executemany(sql, rows)


# PostgreSQL: a statement given arrays (the rows of a group, a batch of jobs) is planned at
# each run, never prepared. psycopg prepares a statement from its sixth run on a
# connection, and PostgreSQL then keeps a generic plan made with the table sizes of that
# moment and ten elements to an array. In a fresh database that fills fast (a brand's
# history imported), plans made while the tables were nearly empty scanned them whole
# until autovacuum's next ANALYZE, a minute or more later: the check of a group's new
# orders took 7 ms at 60,000 orders (bench/RESULTS.md, session 17). Statements of one
# row (an executemany's) keep their prepared plans: they have no other to choose.
_ARRAYS_UNPREPARED: dict[str, Any] = {"prepare": False}


def upsert_rows(
    conn: Connection,
    table: Any,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    conflict: Sequence[str],
    updates: dict[str, str] | None = None,
) -> None:
    """INSERT rows; where a stored row has the same `conflict` columns, set each column of
    `updates` to its SQL (of the stored row's `table.column` and the new `excluded.column`),
    or leave the stored row as it is when `updates` is None. No two rows may share their
    `conflict` columns (PostgreSQL refuses to change a row twice in one statement).

    On PostgreSQL one statement whatever the number of rows: the rows go as one array per
    column (`unnest`), where a pipelined executemany cost the driver and the server a
    message and an execution per row (the hot path of ingest: 8,000 rows of product views
    a 20,000 events). On SQLite, in process, an executemany."""
    if not rows:
        return
    action = (
        "DO NOTHING"
        if updates is None
        else "DO UPDATE SET " + ", ".join(f"{c} = {e}" for c, e in updates.items())
    )
    tail = f"ON CONFLICT ({', '.join(conflict)}) {action}"
    names = ", ".join(columns)
    if conn.dialect.name == "sqlite":
        marks = ", ".join("?" for _ in columns)
        statement = f"INSERT INTO {table.name} ({names}) VALUES ({marks}) {tail}"
        _cursor(conn).executemany(statement, rows)
        return
    arrays = _unnest(conn, table, columns)
    _write(
        conn,
        f"INSERT INTO {table.name} ({names}) SELECT * FROM {arrays} {tail}",
        _as_arrays(rows, len(columns)),
    )


def update_rows(
    conn: Connection,
    table: Any,
    columns: Sequence[str],
    key: str,
    rows: Sequence[Sequence[Any]],
) -> None:
    """UPDATE table SET columns... WHERE key = ?, for many rows (values first, key last;
    a key given twice: its last row counts). On PostgreSQL one statement (`UPDATE ... FROM
    unnest(...)`, as `upsert_rows`), on SQLite an executemany."""
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        assignments = ", ".join(f"{column} = ?" for column in columns)
        _cursor(conn).executemany(f"UPDATE {table.name} SET {assignments} WHERE {key} = ?", rows)
        return
    last = list({row[-1]: row for row in rows}.values())
    named = (*columns, key)
    assignments = ", ".join(f"{column} = v.{column}" for column in columns)
    _write(
        conn,
        f"UPDATE {table.name} SET {assignments} FROM {_unnest(conn, table, named)} "
        f"AS v({', '.join(named)}) WHERE {table.name}.{key} = v.{key}",
        _as_arrays(last, len(named)),
    )


def _unnest(conn: Connection, table: Any, columns: Sequence[str]) -> str:
    """`unnest(%s::T1[], %s::T2[], ...)`: the columns' values as arrays of their types
    (without a column's collation, which an array's type cannot carry: the column applies
    its own to what is stored)."""
    return "unnest(" + ", ".join(f"%s::{_element_type(conn, table, c)}[]" for c in columns) + ")"


def _element_type(conn: Connection, table: Any, column: str) -> str:
    """The SQL type of a column's values in an array (its collation left out)."""
    return _COLLATION.sub("", table.c[column].type.compile(dialect=conn.dialect))


_COLLATION = re.compile(r'\s+COLLATE\s+"[^"]*"')


def _as_arrays(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width


def _placeholder(conn: Connection) -> str:
    return "?" if conn.dialect.name == "sqlite" else "%s"


def select_in(
    conn: Connection,
    sql: str,
    values: Sequence[Any],
    leading: Sequence[Any] = (),
    *,
    named: bool = False,
    uses: int = 1,
) -> list[Any]:
    """Rows of `sql`, whose `{marks}` stands for an IN list, for every chunk of `values`:
    plain tuples, or with `named` named tuples with the columns' names, as `sql` gives.
    `uses`: how many times `sql` holds `IN ({marks})`, each the same list (one statement
    over several tables, `UNION ALL`).

    `leading` are the parameters that come before the IN list. Straight through the driver,
    as for insert_rows. On PostgreSQL the list is one array parameter (`= ANY(%s)`): a
    statement of 500 placeholders cost more to build and parse than to run, and each
    length was a statement of its own, never prepared.
    """
    mark = _placeholder(conn)
    found: list[Any] = []
    cursor = _cursor(conn)
    items = list(values)
    if not items:
        return found
    if conn.dialect.name != "sqlite":
        cast = "::bigint[]" if isinstance(items[0], int) else "::text[]"
        statement = sql.replace("IN ({marks})", f"= ANY(%s{cast})").replace("{mark}", mark)
        assert "{marks}" not in statement, "select_in takes `IN ({marks})`"
        for part in chunks(items, _ARRAY_CHUNK):
            params = (*leading, *[list(part)] * uses)
            if _sent_ahead(conn, statement, params, _ARRAYS_UNPREPARED):
                continue
            ahead = _taken_ahead(conn, statement, params)
            if ahead is not None:
                cursor = ahead
            else:
                _execute(conn, statement, params, **_ARRAYS_UNPREPARED)
                cursor = _cursor(conn)
            found.extend(cursor.fetchall())
    else:
        for part in chunks(items):
            statement = sql.replace("{marks}", ", ".join(mark for _ in part))
            cursor.execute(statement.replace("{mark}", mark), (*leading, *list(part) * uses))
            found.extend(cursor.fetchall())
    if named and found:
        make = _row_type_of(sql, cursor.description)
        return [make(*row) for row in found]
    return found


_ARRAY_CHUNK = 10_000


# ---- the writer's transaction: one pipeline (PostgreSQL) ----------------------------------

# conn.info: the transaction holds its writes (`hold_writes`), and the psycopg pipeline it
# runs in while it is open (`_Open`).
_HELD_WRITES = "parcours_holds_writes"
_PIPELINE = "parcours_pipeline"


class _Open(NamedTuple):
    """psycopg's pipeline of a transaction holding its writes, and the context it was
    entered by (left by `_end_pipeline`)."""

    pipeline: Any
    entered: Any


def hold_writes(conn: Connection) -> None:
    """PostgreSQL: until this transaction ends, its writes (`insert_rows`, `upsert_rows`,
    `update_rows`, `delete_rows`, `sql_write`), the locks of `lock_keys` and the reads
    sent ahead (`send_ahead`) go down psycopg's pipeline as they are made, and nobody
    waits for them: the server runs them while Python goes on, and their answers come
    back with the next read's (a read is sent, then the pipeline synchronised: one round
    trip, which waits for the server to finish what was sent before it, in order). A write
    that fails fails the read that synchronises after it, and the transaction. The writer
    runs its groups so (ingest/writer.py; docs/architecture.md, "One pipeline a group").
    Nothing to do on SQLite, in process.

    Called before the transaction's first statement, its BEGIN goes down the pipeline too
    (psycopg sends its own and waits for the answer, a round trip before every
    transaction): the connection is put in autocommit until the transaction ends, and
    BEGIN is the first thing sent (`Database.write` puts the connection back). A statement
    that cannot go down the pipeline (COPY, an executemany, whatever SQLAlchemy sends)
    first waits for everything sent; the pipeline opens again at the next write."""
    if conn.dialect.name == "sqlite":
        return
    driver = _cursor(conn).connection
    conn.info[_HELD_WRITES] = True
    if driver.info.transaction_status.name == "IDLE" and not driver.autocommit:
        driver.autocommit = True
        conn.info[_BEGUN_BY_HAND] = True
        _write(conn, "BEGIN", None, one_plan=True)


_BEGUN_BY_HAND = "parcours_begun_by_hand"


def _end_begun_by_hand(conn: Connection) -> None:
    """After the transaction of `hold_writes`: the connection leaves autocommit (one that
    cannot, broken, is not given to anyone again)."""
    if conn.info.pop(_BEGUN_BY_HAND, None) is None:
        return
    try:
        _cursor(conn).connection.autocommit = False
    except Exception:
        conn.invalidate()


def holds_writes(conn: Connection) -> bool:
    """Whether this transaction holds its writes (`hold_writes`): the writer's."""
    return _HELD_WRITES in conn.info


def _pipeline(conn: Connection) -> Any:
    """The open pipeline of a transaction holding its writes, opened if need be (None
    for any other transaction)."""
    if _HELD_WRITES not in conn.info:
        return None
    open_ = conn.info.get(_PIPELINE)
    if open_ is None:
        entered = _cursor(conn).connection.pipeline()
        open_ = conn.info[_PIPELINE] = _Open(entered.__enter__(), entered)
    return open_.pipeline


def _end_pipeline(conn: Connection, *, failing: bool = False) -> None:
    """Leave the pipeline, if open: what was sent is waited for and its answers read (the
    first error raised, unless the transaction is `failing` already: then it is only
    logged, and the rollback follows)."""
    open_ = conn.info.pop(_PIPELINE, None)
    if open_ is None:
        return
    if not failing:
        open_.entered.__exit__(None, None, None)
        return
    try:
        open_.entered.__exit__(None, None, None)
    except Exception as exc:  # the error that fails the transaction, raised already
        log.debug("leaving a failed transaction's pipeline: %s", exc)


def _write(conn: Connection, statement: str, params: Any, *, one_plan: bool = False) -> None:
    """A write (or a lock) whose answer nobody reads: sent down the pipeline if the
    transaction holds its writes (on a cursor of its own, its answer read with the next
    read's), else run at once. `one_plan`: an INSERT of arrays, or a statement of single
    values, has one plan and may be prepared; an UPDATE, an upsert or a DELETE joins its
    arrays to a table, and is planned at each run (`_ARRAYS_UNPREPARED`)."""
    options: dict[str, Any] = {} if one_plan else _ARRAYS_UNPREPARED
    if _pipeline(conn) is not None:
        _cursor(conn).connection.cursor().execute(statement, params, **options)
    else:
        _cursor(conn).execute(statement, params, **options)


def _execute(conn: Connection, statement: str, params: Any, **options: Any) -> None:
    """Run a statement whose answer is read at once on the connection's cursor: in the
    pipeline, synchronised (one round trip, with the answers of everything sent before)."""
    cursor = _cursor(conn)
    cursor.execute(statement, params, **options)
    open_ = conn.info.get(_PIPELINE)
    if open_ is not None:
        open_.pipeline.sync()


# ---- reads sent ahead (the writer's transaction, PostgreSQL) ------------------------------

_AHEAD = "parcours_sent_ahead"  # transaction note: (statement, parameters) -> its cursor
_SENDING = "parcours_sending_ahead"


def send_ahead(conn: Connection, read: Callable[..., Any], *args: Any) -> None:
    """In a transaction holding its writes (the writer's, on PostgreSQL): call
    `read(*args)` now with its reads (`sql`, `select_in`) sent down the pipeline and not
    waited for (it sees no rows: whatever it returns is dropped); the next read of the
    same statement with the same parameters, in this transaction, is answered with those
    rows, once, without a round trip of its own. For a read whose inputs are known before
    its answer is needed (the events of a group), and which nothing the transaction
    writes in between changes. `read` must not decide what it reads from what it read.
    Elsewhere nothing: the read runs when it is made."""
    if _pipeline(conn) is None:
        return
    conn.info[_SENDING] = True
    try:
        read(*args)
    finally:
        conn.info.pop(_SENDING, None)


def sql_ahead(conn: Connection, statement: str) -> None:
    """`send_ahead` of a read of no parameters (the journeys and the segments defined,
    read at each group)."""
    send_ahead(conn, sql, conn, statement)


def _ahead_key(statement: str, params: Any) -> tuple[Any, ...]:
    """A read's statement and parameters, as a key (lists as tuples)."""
    if isinstance(params, dict):
        values: Iterable[Any] = (v for item in sorted(params.items()) for v in item)
    else:
        values = params or ()
    return (statement, *(tuple(v) if isinstance(v, list) else v for v in values))


def _sent_ahead(conn: Connection, statement: str, params: Any, options: dict[str, Any]) -> bool:
    """While `send_ahead` calls its read: send this statement, keep its cursor; True."""
    if _SENDING not in conn.info:
        return False
    _pipeline(conn)
    cursor = _cursor(conn).connection.cursor()
    cursor.execute(statement, params, **options)
    transaction_note(conn, _AHEAD)[_ahead_key(statement, params)] = cursor
    return True


def _taken_ahead(conn: Connection, statement: str, params: Any) -> Any:
    """The cursor of this read, sent ahead, its answer in (None: read it now)."""
    if _AHEAD not in conn.info:
        return None
    cursor = transaction_note(conn, _AHEAD).pop(_ahead_key(statement, params), None)
    if cursor is not None and cursor.pgresult is None:
        open_ = conn.info.get(_PIPELINE)
        if open_ is not None:
            open_.pipeline.sync()
    return cursor


def _cursor(conn: Connection) -> Any:
    """The DB-API cursor of this connection, past SQLAlchemy's layers (the hot path only;
    everything else goes through SQLAlchemy). One per connection, kept on it: every use
    reads its results before the next statement (`Rows` fetches at once)."""
    cursor = conn.__dict__.get("_parcours_cursor")
    if cursor is None:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        conn.__dict__["_parcours_cursor"] = cursor
    return cursor


class Rows:
    """The result of `run`: rows as named tuples, with SQLAlchemy's accessor names, read
    at once (the connection's one cursor is free for the next statement)."""

    def __init__(self, cursor: Any, sql: str) -> None:
        description = cursor.description if cursor is not None else None
        self._rows: list[Any] = cursor.fetchall() if description else []
        self.rowcount: int = cursor.rowcount if cursor is not None else 0
        self._row = _row_type_of(sql, description) if description else None

    @classmethod
    def none(cls) -> Rows:
        """No rows (a read sent ahead: its rows come with the same read later)."""
        return cls(None, "")

    def all(self) -> list[Any]:
        if self._row is None:
            assert not self._rows
            return []
        make = self._row
        return [make(*row) for row in self._rows]

    def first(self) -> Any:
        if not self._rows or self._row is None:
            return None
        return self._row(*self._rows[0])

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        if not self._rows:
            raise LookupError("the query returned no row")
        return self._rows[0][0]

    def scalars(self) -> list[Any]:
        return [row[0] for row in self._rows]


def sql(conn: Connection, statement: str, params: dict[str, Any] | None = None) -> Rows:
    """Run SQL with `:name` parameters straight through the driver, in the connection's
    transaction: the engine's and the queue's per-step statements, where SQLAlchemy's own
    execution cost 40 times the database's (110 µs against 2.6 µs a query, measured)."""
    driver_sql = _driver_sql(statement, conn.dialect.name)
    options = (
        _ARRAYS_UNPREPARED if params and conn.dialect.name != "sqlite" and _has_list(params) else {}
    )
    if _sent_ahead(conn, driver_sql, params, options):
        return Rows.none()
    ahead = _taken_ahead(conn, driver_sql, params)
    if ahead is not None:
        return Rows(ahead, driver_sql)
    _execute(conn, driver_sql, params or {}, **options)
    return Rows(_cursor(conn), driver_sql)


def _has_list(params: dict[str, Any]) -> bool:
    return any(isinstance(value, list) for value in params.values())


def sql_write(conn: Connection, statement: str, params: dict[str, Any] | None = None) -> None:
    """As `sql`, for a statement whose answer nobody reads (an insert, a NOTIFY): held
    while the transaction holds its writes (`hold_writes`), else run at once."""
    if _HELD_WRITES not in conn.info:
        sql(conn, statement, params)
        return
    lists = params is not None and _has_list(params)
    _write(conn, _driver_sql(statement, conn.dialect.name), params or {}, one_plan=not lists)


def delete_rows(conn: Connection, table: Any, column: str, values: Sequence[Any]) -> None:
    """DELETE the rows of `table` whose `column` is one of `values`: one statement on
    PostgreSQL (an array, held while the transaction holds its writes), a statement per
    chunk of an IN list on SQLite."""
    if not values:
        return
    if conn.dialect.name == "sqlite":
        for part in chunks(list(values)):
            marks = ", ".join("?" for _ in part)
            _cursor(conn).execute(f"DELETE FROM {table.name} WHERE {column} IN ({marks})", part)
        return
    kind = _element_type(conn, table, column)
    _write(conn, f"DELETE FROM {table.name} WHERE {column} = ANY(%s::{kind}[])", [list(values)])


def sql_many(conn: Connection, statement: str, rows: Sequence[dict[str, Any]]) -> None:
    """Run one statement with `:name` parameters for each of `rows`: one executemany (one
    round trip on PostgreSQL, whose driver pipelines it)."""
    if rows:
        _end_pipeline(conn)  # an executemany cannot go down the pipeline
        _cursor(conn).executemany(_driver_sql(statement, conn.dialect.name), rows)


def in_list(prefix: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """`:p0, :p1, ...` and their values: an IN list of named parameters for `sql`."""
    names = ", ".join(f":{prefix}{i}" for i in range(len(values)))
    return names, {f"{prefix}{i}": value for i, value in enumerate(values)}


_NAMED = re.compile(r"(?<![:\w]):(\w+)")


@lru_cache(maxsize=1024)
def _driver_sql(statement: str, dialect: str) -> str:
    if dialect == "sqlite":
        return statement  # sqlite3 takes :name as it is
    return _NAMED.sub(r"%(\1)s", statement.replace("%", "%%"))


_ROW_TYPES: dict[tuple[str, int], Any] = {}


def _row_type_of(sql: str, description: Any) -> Any:
    """The named-tuple type of a statement's rows, made once per statement."""
    key = (sql, len(description))
    row = _ROW_TYPES.get(key)
    if row is None:
        row = _row_type(tuple(d[0] for d in description))
        if len(_ROW_TYPES) < 4096:
            _ROW_TYPES[key] = row
    return row


@lru_cache(maxsize=256)
def _row_type(names: tuple[str, ...]) -> Any:
    return namedtuple("Row", names, rename=True)
