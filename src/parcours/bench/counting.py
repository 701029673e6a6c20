"""Statements and round trips, counted exactly in the benchmark's process: a measured model
of what an event and a journey step cost the database.

`StatementCounter.attach(engine)` sees every statement of that engine's connections, by two
doors: SQLAlchemy's `before_cursor_execute` event for what SQLAlchemy executes
(`exec_driver_sql` included; an executemany is one statement carrying N parameter sets),
and the driver's own connection and cursor, of subclasses that count, for what goes
straight to the driver (`runtime/db.py`'s `sql`, `select_in`, `insert_rows` and `lock_keys`
take the connection's cursor through `_cursor`; SQLite's BEGIN is sent on the connection
itself). The subclasses only count and call the driver's methods: the code measured runs
as it does in production, the driver's checks of its own types included.

On PostgreSQL it also counts round trips: the times the client waited for the server's
answer to something it had sent. psycopg waits for the server in `Connection.wait`; each
wait to read is counted when the client has sent data since the last one it counted (the
kernel's count of data segments sent on the socket, `TCP_INFO`). A statement sent alone
costs one; psycopg's implicit BEGIN, a COMMIT, a pool ping, and the prepare of a
statement's sixth run on a connection one more each; an executemany, which psycopg
pipelines, one in all (counted so: its waits depend on the moment). SQLite runs in the
process: no round trip."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import struct
import threading
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, event

from parcours.bench.latency import LatencyProxy, WireCounts

# Where a statement goes when it is not one the code asked for.
_PING = re.compile(r"^[\s;]*$")  # SQLAlchemy's pool pings PostgreSQL with an empty query
_BEGIN = re.compile(r"^\s*BEGIN\b", re.IGNORECASE)

# psycopg's wait states (psycopg.waiting.Wait): a wait to read only.
_WAIT_READ = 1
# `struct tcp_info` (linux/tcp.h): tcpi_data_segs_out, since Linux 4.6.
_DATA_SEGS_OUT = 156


@dataclass(frozen=True)
class Counts:
    """What was sent to the database, from a start (`StatementCounter.totals`) or over a
    phase (the difference of two).

    `statements` are those the code asked for (through SQLAlchemy or straight to the
    driver, savepoints included); transactions' BEGIN, COMMIT and ROLLBACK, the pool's
    pings and the statements that set a new connection up are counted apart. An
    executemany is one statement; `parameter_sets` is how many sets its calls carried (for
    SQLAlchemy's multi-row INSERT, the rows)."""

    through_sqlalchemy: int = 0
    straight_to_driver: int = 0
    executemany: int = 0
    parameter_sets: int = 0
    copies: int = 0
    begins: int = 0
    commits: int = 0
    rollbacks: int = 0
    pings: int = 0
    connections: int = 0
    setup_statements: int = 0  # a new connection's, transactions included
    setup_round_trips: int = 0
    round_trips: int = 0  # PostgreSQL: the client's waits for an answer (none on SQLite)
    round_trips_counted: bool = False  # a PostgreSQL connection over TCP was counted
    wire: WireCounts | None = None  # what crossed the latency proxy, when there is one
    texts: Mapping[str, int] = field(default_factory=dict)  # each statement, times sent

    @property
    def statements(self) -> int:
        return self.through_sqlalchemy + self.straight_to_driver

    def __sub__(self, other: Counts) -> Counts:
        numbers = {
            f.name: getattr(self, f.name) - getattr(other, f.name)
            for f in fields(self)
            if f.name not in ("round_trips_counted", "wire", "texts")
        }
        texts = Counter(self.texts)
        texts.subtract(other.texts)
        wire = self.wire
        if self.wire is not None and other.wire is not None:
            wire = self.wire - other.wire
        return Counts(
            **numbers,
            round_trips_counted=self.round_trips_counted or other.round_trips_counted,
            wire=wire,
            texts={text: n for text, n in texts.items() if n},
        )


class _Tally:
    """One thread's counts: only that thread writes them, so no increment is lost."""

    __slots__ = ("counts", "texts")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.texts: dict[str, int] = {}

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def statement(self, name: str, text: str) -> None:
        counts, texts = self.counts, self.texts
        counts[name] = counts.get(name, 0) + 1
        texts[text] = texts.get(text, 0) + 1


class StatementCounter:
    """Counts every statement and round trip of the engines it is attached to, exactly,
    in every thread of this process (the writer's, the worker's)."""

    def __init__(self, wire: LatencyProxy | None = None) -> None:
        self.wire = wire
        self._local = threading.local()
        self._lock = threading.Lock()
        self._tallies: list[_Tally] = []
        self._round_trips_counted = False
        self._detach: list[Callable[[], None]] = []

    def tally(self) -> _Tally:
        """This thread's counts."""
        tally: _Tally | None = getattr(self._local, "tally", None)
        if tally is None:
            tally = self._local.tally = _Tally()
            with self._lock:
                self._tallies.append(tally)
        return tally

    def totals(self) -> Counts:
        """Everything counted so far. Each thread's counts are copied whole (a dict copy
        holds the interpreter lock), so a thread counting meanwhile loses nothing."""
        with self._lock:
            tallies = list(self._tallies)
        numbers: Counter[str] = Counter()
        texts: Counter[str] = Counter()
        for tally in tallies:
            numbers.update(dict(tally.counts))
            texts.update(dict(tally.texts))
        return Counts(
            **{f.name: numbers[f.name] for f in fields(Counts) if f.name in numbers},
            round_trips_counted=self._round_trips_counted,
            wire=self.wire.counts() if self.wire is not None else None,
            texts=dict(texts),
        )

    @contextmanager
    def excluded(self, into: list[Counts]) -> Iterator[None]:
        """What is sent inside the block (the benchmark's own reads) is added to `into`,
        for the caller to take off a phase's counts."""
        before = self.totals()
        try:
            yield
        finally:
            into.append(self.totals() - before)

    def attach(self, engine: Engine) -> None:
        """Count `engine`'s statements from now on. Its pooled connections are closed, so
        that every connection it opens from now on is one this counter wraps."""
        engine.dispose()
        listeners: list[tuple[Any, str, Callable[..., Any]]] = [
            (engine, "do_connect", self._connect),
            (engine, "before_cursor_execute", self._before_cursor_execute),
            (engine, "checkout", self._checkout),
        ]
        for target, name, listener in listeners:
            event.listen(target, name, listener)

        def remove() -> None:
            for target, name, listener in listeners:
                event.remove(target, name, listener)

        self._detach.append(remove)

    def detach(self) -> None:
        """Stop counting new connections (those open keep their wrapper, uncounted)."""
        while self._detach:
            self._detach.pop()()

    # ---- the doors ---------------------------------------------------------------------

    def _connect(self, dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        """The driver's own connection, of a subclass that counts (the driver's checks of
        its type still pass)."""
        self.tally().add("connections")
        if dialect.name == "sqlite":
            real = dialect.connect(*cargs, **{**cparams, "factory": _CountedSqlite})
        else:
            real = _counted_psycopg().connect(*cargs, **cparams)
            real.cursor_factory = _counted_psycopg_cursor()
            if real.count_round_trips():
                self._round_trips_counted = True
        real.parcours_counter = self
        return real

    def _checkout(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if hasattr(dbapi_connection, "parcours_counter"):
            dbapi_connection.parcours_ready = True

    def _before_cursor_execute(
        self,
        _conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        tally = self.tally()
        if hasattr(cursor, "parcours_announced"):
            cursor.parcours_announced = True  # the cursor counts it no more
            if not cursor.connection.parcours_ready:
                tally.add("setup_statements")
                return
        tally.statement("through_sqlalchemy", statement)
        if executemany:
            style = getattr(getattr(context, "execute_style", None), "name", "")
            if style == "INSERTMANYVALUES":
                # One multi-row INSERT per batch; its rows are the context's, once.
                if not getattr(context, "_parcours_counted", False):
                    context._parcours_counted = True
                    tally.add("parameter_sets", len(context.compiled_parameters))
            else:
                tally.add("executemany")
                tally.add("parameter_sets", len(parameters))


def _count_statement(
    cursor: Any, statement: Any, parameter_sets: int | None = None, *, copy: bool = False
) -> None:
    """A statement a counting cursor is about to send: counted here unless SQLAlchemy
    announced it (`before_cursor_execute` counted it then)."""
    if cursor.parcours_announced and not copy:
        cursor.parcours_announced = False
        return
    connection = cursor.connection
    tally = connection.parcours_counter.tally()
    if copy:
        tally.add("copies")
        if cursor.parcours_announced:
            cursor.parcours_announced = False
            return
    text = statement if isinstance(statement, str) else str(statement)
    if not connection.parcours_ready:
        tally.add("setup_statements")
    elif len(text) < 4 and _PING.match(text):
        tally.add("pings")
    else:
        tally.statement("straight_to_driver", text)
        if parameter_sets is not None:
            tally.add("executemany")
            tally.add("parameter_sets", parameter_sets)


def _sized(parameters: Any) -> Any:
    return parameters if hasattr(parameters, "__len__") else list(parameters)


# ---- SQLite ------------------------------------------------------------------------------


class _CountedSqliteCursor(sqlite3.Cursor):
    parcours_announced = False

    def execute(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        _count_statement(self, statement)
        return _sqlite_execute(self, statement, *args, **kwargs)

    def executemany(self, statement: Any, parameters: Any, *args: Any, **kwargs: Any) -> Any:
        parameters = _sized(parameters)
        _count_statement(self, statement, len(parameters))
        return super().executemany(statement, parameters, *args, **kwargs)


_sqlite_execute = sqlite3.Cursor.execute


class _CountedSqlite(sqlite3.Connection):
    """sqlite3's connection (`sqlite3.connect(factory=...)`), counting: its cursors, the
    BEGIN that runtime/db.py sends on the connection itself, COMMIT and ROLLBACK."""

    parcours_counter: StatementCounter
    parcours_ready = False  # until the pool first hands it out: setting it up

    def cursor(self, factory: Any = None) -> Any:
        return super().cursor(factory or _CountedSqliteCursor)

    def execute(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        tally = self.parcours_counter.tally()
        if not self.parcours_ready:
            tally.add("setup_statements")
        elif isinstance(statement, str) and _BEGIN.match(statement):
            tally.add("begins")
        else:
            tally.statement("straight_to_driver", str(statement))
        return super().execute(statement, *args, **kwargs)

    def commit(self) -> None:
        if self.in_transaction:
            self._transaction("commits")
        super().commit()

    def rollback(self) -> None:
        if self.in_transaction:
            self._transaction("rollbacks")
        super().rollback()

    def _transaction(self, name: str) -> None:
        tally = self.parcours_counter.tally()
        tally.add(name if self.parcours_ready else "setup_statements")


# ---- PostgreSQL (psycopg 3) ----------------------------------------------------------------


def _tcp_data_segments_sent(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    if len(info) < _DATA_SEGS_OUT + 4:
        raise OSError("TCP_INFO without tcpi_data_segs_out (Linux 4.6 or later)")
    segments: int = struct.unpack_from("I", info, _DATA_SEGS_OUT)[0]
    return segments


@lru_cache(maxsize=1)
def _counted_psycopg() -> Any:
    """psycopg's Connection, counting (made on first use: psycopg is not imported on
    SQLite): COMMIT, ROLLBACK, an implicit BEGIN, and the round trips of `wait`."""
    import psycopg

    class CountedConnection(psycopg.Connection[Any]):
        parcours_counter: StatementCounter
        parcours_ready = False
        parcours_socket: socket.socket | None = None
        parcours_last_sent = -1
        parcours_pipelined = False  # inside an executemany: counted as one round trip

        def count_round_trips(self) -> bool:
            """Count this connection's round trips: False if it is not over TCP (a socket
            directory), whose round trips go uncounted."""
            try:
                sock = socket.socket(fileno=os.dup(self.pgconn.socket))
            except OSError:
                return False
            try:
                _tcp_data_segments_sent(sock)
            except OSError:
                sock.close()
                return False
            self.parcours_socket = sock
            return True

        def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
            if self.parcours_socket is None:
                return super().wait(gen, *args, **kwargs)
            return super().wait(self._counted(gen), *args, **kwargs)

        def _counted(self, gen: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
            """`gen`'s waits passed on; a wait to read after data was sent (the kernel's
            count of data segments moved) is a round trip."""
            sock = self.parcours_socket
            assert sock is not None
            try:
                state = next(gen)
                while True:
                    if state == _WAIT_READ and not self.parcours_pipelined:
                        sent = _tcp_data_segments_sent(sock)
                        if sent != self.parcours_last_sent:
                            self.parcours_last_sent = sent
                            self.parcours_counter.tally().add(
                                "round_trips" if self.parcours_ready else "setup_round_trips"
                            )
                    ready = yield state
                    state = gen.send(ready)
            except StopIteration as stop:
                return stop.value

        def implicit_begin(self) -> None:
            """psycopg opens a transaction before a statement when none is open."""
            if self.pgconn.transaction_status == 0 and not self.autocommit:  # IDLE
                self._transaction("begins")

        def commit(self) -> None:
            if self.pgconn.transaction_status != 0:
                self._transaction("commits")
            super().commit()

        def rollback(self) -> None:
            if self.pgconn.transaction_status != 0:
                self._transaction("rollbacks")
            super().rollback()

        def _transaction(self, name: str) -> None:
            tally = self.parcours_counter.tally()
            tally.add(name if self.parcours_ready else "setup_statements")

        def close(self) -> None:
            super().close()
            if self.parcours_socket is not None:
                self.parcours_socket.close()

    return CountedConnection


@lru_cache(maxsize=1)
def _counted_psycopg_cursor() -> Any:
    import psycopg

    class CountedCursor(psycopg.Cursor[Any]):
        parcours_announced = False

        def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            connection: Any = self.connection  # a CountedConnection
            if query == "COMMIT" and connection.pgconn.transaction_status != 0:
                # The writer's, down its pipeline (runtime/db.py): a commit, as psycopg's.
                connection._transaction("commits")
                return super().execute(query, *args, **kwargs)
            connection.implicit_begin()
            _count_statement(self, query)
            return super().execute(query, *args, **kwargs)

        def executemany(self, query: Any, params_seq: Any, *args: Any, **kwargs: Any) -> None:
            """psycopg pipelines an executemany: its statements, and the BEGIN before them
            if one is due, are sent at once, then the answers read: one round trip (as the
            proxy sees it with a latency added). How often the client happens to wait
            while sending a large one, or whether the answers came back before it finished
            (no latency), depends on the moment: it is counted one round trip, always."""
            params_seq = _sized(params_seq)
            connection: Any = self.connection
            connection.implicit_begin()
            _count_statement(self, query, len(params_seq))
            connection.parcours_pipelined = True
            try:
                super().executemany(query, params_seq, *args, **kwargs)
            finally:
                connection.parcours_pipelined = False
            if connection.parcours_socket is not None and connection.parcours_ready:
                connection.parcours_counter.tally().add("round_trips")

        def copy(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
            """A COPY: one statement, its rows streamed in the same round trips."""
            connection: Any = self.connection
            connection.implicit_begin()
            _count_statement(self, statement, copy=True)
            return super().copy(statement, *args, **kwargs)

    return CountedCursor


# ---- what the benchmarks print -------------------------------------------------------------

# An IN list of placeholders, whatever its length (SQLite's `?`, psycopg's `%s`, `%(name)s`).
_IN_LIST = re.compile(r"\((?:\s*(?:\?|%s|%\(\w+\)s)\s*,)+\s*(?:\?|%s|%\(\w+\)s)\s*\)")
_SPACES = re.compile(r"\s+")


def _shown(statement: str) -> str:
    """A statement on one line, its IN lists of any length made one."""
    text = _IN_LIST.sub("(...)", _SPACES.sub(" ", statement).strip())
    return text if len(text) <= 200 else text[:197] + "..."


def _per(count: float, units: int) -> float | None:
    """count / units, to two decimals, or three significant digits below 1."""
    if not units:
        return None
    ratio = count / units
    return round(ratio, 2) if abs(ratio) >= 1 else float(f"{ratio:.3g}")


def figures(counts: Counts, unit: str, units: int, *, top: int = 12) -> dict[str, Any]:
    """A phase's counts, per `unit` (event, step) and per commit, for `--json`."""
    round_trips = counts.round_trips if counts.round_trips_counted else None
    kinds: Counter[str] = Counter()
    shown: Counter[str] = Counter()
    for text, n in counts.texts.items():
        words = text.split(None, 1)
        kinds[words[0].upper() if words else "?"] += n
        shown[_shown(text)] += n
    return {
        "unit": unit,
        "units": units,
        "commits": counts.commits,
        "statements": counts.statements,
        "through_sqlalchemy": counts.through_sqlalchemy,
        "straight_to_driver": counts.straight_to_driver,
        "executemany": counts.executemany,
        "parameter_sets": counts.parameter_sets,
        "copies": counts.copies,
        "round_trips": round_trips,
        "round_trips_on_the_wire": counts.wire.round_trips if counts.wire is not None else None,
        "proxy_mean_hold_ms": (
            round(counts.wire.mean_hold_ms, 3)
            if counts.wire is not None and counts.wire.mean_hold_ms is not None
            else None
        ),
        "begins": counts.begins,
        "rollbacks": counts.rollbacks,
        "pings": counts.pings,
        "connections_opened": counts.connections,
        "setup_statements": counts.setup_statements,
        "per_unit": {
            "statements": _per(counts.statements, units),
            "round_trips": None if round_trips is None else _per(round_trips, units),
            "parameter_sets": _per(counts.parameter_sets, units),
            "commits": _per(counts.commits, units),
        },
        "per_commit": {
            "statements": _per(counts.statements, counts.commits),
            "round_trips": None if round_trips is None else _per(round_trips, counts.commits),
            "units": _per(units, counts.commits),
        },
        "by_kind": dict(kinds.most_common()),
        "top_statements": [
            {"count": n, "per_unit": _per(n, units), "statement": text}
            for text, n in shown.most_common(top)
        ],
    }


def describe(f: dict[str, Any]) -> str:
    """One phase's figures in a sentence (the human report)."""
    unit, per_unit, per_commit = f["unit"], f["per_unit"], f["per_commit"]
    text = (
        f"{f['units']:,} {unit}s, {_plural(f['commits'], 'commit')}: "
        f"{per_unit['statements']} statements per {unit} "
        f"({_per(f['through_sqlalchemy'], f['units'])} through SQLAlchemy, "
        f"{_per(f['straight_to_driver'], f['units'])} straight to the driver), "
        f"{per_commit['statements']} per commit"
    )
    if f["executemany"]:
        text += (
            f"; {f['executemany']:,} of them executemany, carrying "
            f"{f['parameter_sets']:,} parameter sets"
        )
    if f["copies"]:
        text += f"; {f['copies']:,} of them by COPY"
    if f["round_trips"] is None:
        text += "; no round trips (SQLite runs in this process)"
    else:
        text += (
            f"; round trips: {per_unit['round_trips']} per {unit}, "
            f"{per_commit['round_trips']} per commit"
        )
        if f["round_trips_on_the_wire"] is not None:
            text += f" ({_per(f['round_trips_on_the_wire'], f['units'])} on the wire"
            if f["proxy_mean_hold_ms"] is not None:
                text += f", each way held {f['proxy_mean_hold_ms']} ms on average"
            text += ")"
    if f["connections_opened"]:
        opened = _plural(f["connections_opened"], "connection")
        text += f"; {opened} opened (setup counted apart)"
    return text


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"
