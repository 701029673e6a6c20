"""Where journey runs are kept: the SQL that reads and writes `journey_runs`, a job's log
lines (step visits and refused entries), the versions that may have runs, and the reads of
the event log a run's rules need (a reaction's events, a wait's, a goal's).

Every statement of the engine is here, so a reader of the engine sees what it decides and
this module shows what that costs in queries."""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import Connection

from parcours.journeys.runs import LoggedEvent, Run
from parcours.journeys.tables import journey_refusals, journey_step_visits
from parcours.log import queries as log_queries
from parcours.runtime.db import (
    chunks,
    forget_ahead,
    held,
    in_list,
    insert_rows,
    read_ahead,
    reading_ahead,
    release_held,
    sql,
    sql_many,
    take_ahead,
)

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def _for_update(conn: Connection, of: str = "") -> str:
    """Rows read to be changed are locked on PostgreSQL (SQLite has one writer)."""
    if conn.dialect.name == "sqlite":
        return ""
    return f" FOR UPDATE OF {of}" if of else " FOR UPDATE"


def run_of(row: Any) -> Run:
    return Run(
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


def _logged(row: Any) -> LoggedEvent:
    return LoggedEvent(
        int(row.seq),
        row.message_id,
        int(row.customer_id),
        row.name,
        int(row.occurred_at),
        row.payload,
    )


# ---- runs -------------------------------------------------------------------------------


def insert_run(
    conn: Connection,
    journey_id: str,
    version: int,
    customer: int,
    key: str,
    entered_at: int,
    message_id: str,
    event: dict[str, Any],
) -> int:
    """A new active run at the first instruction; its id. While a set of jobs holds its
    writes on PostgreSQL, the run is held too, its id taken from the sequence a block at
    a time (a round trip per block instead of one per entry)."""
    _changed(conn, customer)
    values: dict[str, Any] = {
        "j": journey_id,
        "v": version,
        "c": customer,
        "k": key,
        "at": entered_at,
        "m": message_id,
        "e": _encode(event).decode(),
    }
    later = held(conn, _HELD_RUNS, _HeldRuns)
    if later is not None and conn.dialect.name != "sqlite":
        values["id"] = later.next_id(conn)
        later.inserts.append(values)
        later.customers.add(customer)
        return int(values["id"])
    _written(conn, customers=(customer,))
    return int(sql(conn, _INSERT_RUN + " RETURNING id", values).scalar_one())


_INSERT_RUN = (
    "INSERT INTO journey_runs (journey_id, version, customer_id, run_key, state, pc, "
    "entered_at, entry_message_id, entry_event) VALUES (:j, :v, :c, :k, 'active', 0, :at, "
    ":m, :e)"
)
_INSERT_HELD_RUN = (
    "INSERT INTO journey_runs (id, journey_id, version, customer_id, run_key, state, pc, "
    "entered_at, entry_message_id, entry_event) VALUES (:id, :j, :v, :c, :k, 'active', 0, "
    ":at, :m, :e)"
)
RUN_IDS_BLOCK = 64  # run ids taken from PostgreSQL's sequence at once; unused ones are gaps


_SAVE_RUN = (
    "UPDATE journey_runs SET pc = :pc, waiting = :w, wait_event = :we, "
    "wait_key = :wk, due_at = :d, consumed_seq = :cs, race_pc = :rp, "
    "race_until = :ru WHERE id = :id"
)
_END_RUN = (
    "UPDATE journey_runs SET state = 'ended', ended_at = :now, end_reason = :r, "
    "converted = :c, waiting = NULL, pc = :pc, consumed_seq = :cs, control = :ctl "
    "WHERE id = :id"
)
_HELD_RUNS = "journeys.runs"
_RUN_IDS = "journeys.run_ids"  # ids taken from the sequence, not used yet (conn.info)


class _HeldRuns:
    """The runs a batch of steps saved and ended, written at its end: two statements for
    the whole batch. Every read of journey_runs in this module writes them first when it
    could see one of them (`_written`)."""

    def __init__(self) -> None:
        self.inserts: list[dict[str, Any]] = []
        self.saves: dict[int, dict[str, Any]] = {}
        self.ends: dict[int, dict[str, Any]] = {}
        self.customers: set[int] = set()

    def next_id(self, conn: Connection) -> int:
        """A new run's id, from the ids this connection took from the sequence ahead."""
        ids: list[int] = conn.info.setdefault(_RUN_IDS, [])
        if not ids:
            ids += sql(
                conn,
                "SELECT nextval('journey_runs_id_seq') FROM generate_series(1, :n)",
                {"n": RUN_IDS_BLOCK},
            ).scalars()
            ids.reverse()
        return ids.pop()

    def ids(self) -> set[int]:
        return {int(values["id"]) for values in self.inserts} | self.saves.keys() | self.ends.keys()

    def write(self, conn: Connection) -> None:
        sql_many(conn, _INSERT_HELD_RUN, self.inserts)
        sql_many(conn, _SAVE_RUN, list(self.saves.values()))
        sql_many(conn, _END_RUN, list(self.ends.values()))


_ACTIVE_AHEAD = "journeys.active_runs"
_ENTRIES_AHEAD = "journeys.entries"


def read_ahead_runs(conn: Connection, customers: list[int], journey_ids: list[str]) -> None:
    """For a reaction about these customers, while a set of jobs runs: their active runs
    (locked, as `active_runs` reads them) and their runs of these journeys (as re-entry
    rules read them, `entries_of`), two queries for all of them instead of two each."""
    if not customers or not reading_ahead(conn):
        return
    _written(conn, customers=customers)
    active: dict[int, list[Run]] = {customer: [] for customer in customers}
    entries: dict[int, dict[str, list[Any]]] = {c: {j: [] for j in journey_ids} for c in customers}
    for part in chunks(customers):
        names, params = in_list("c", part)
        rows = sql(
            conn,
            f"SELECT * FROM journey_runs WHERE customer_id IN ({names}) AND state = 'active' "
            f"ORDER BY customer_id, id{_for_update(conn)}",
            params,
        ).all()
        for row in rows:
            active[int(row.customer_id)].append(run_of(row))
        if not journey_ids:
            continue
        journeys, more = in_list("j", journey_ids)
        rows = sql(
            conn,
            "SELECT journey_id, customer_id, state, run_key, entered_at, entry_message_id "
            f"FROM journey_runs WHERE customer_id IN ({names}) AND journey_id IN ({journeys})",
            {**params, **more},
        ).all()
        for row in rows:
            entries[int(row.customer_id)][row.journey_id].append(row)
    read_ahead(conn, _ACTIVE_AHEAD, active)
    read_ahead(conn, _ENTRIES_AHEAD, entries)


def _changed(conn: Connection, customer: int) -> None:
    """A run of this customer written: what was read ahead of their runs is out of date."""
    forget_ahead(conn, _ACTIVE_AHEAD, customer)
    forget_ahead(conn, _ENTRIES_AHEAD, customer)


def _written(
    conn: Connection, customers: Any = None, run_ids: Any = None, *, every: bool = False
) -> None:
    """Before a read of journey_runs: the batch's held writes of runs that it could see
    (of these customers, these runs, or any with `every`) are written first."""
    later = held(conn, _HELD_RUNS, _HeldRuns)
    if later is None or not (later.inserts or later.saves or later.ends):
        return
    if (
        every
        or (customers is not None and not later.customers.isdisjoint(customers))
        or (run_ids is not None and not set(run_ids).isdisjoint(later.ids()))
    ):
        release_held(conn, _HELD_RUNS)


def save_run(conn: Connection, run: Run) -> None:
    """Write where the run stands (held to the end of a batch of steps, if it holds)."""
    run.dirty = False
    values = {
        "pc": run.pc,
        "w": run.waiting,
        "we": run.wait_event,
        "wk": run.wait_key,
        "d": run.due_at,
        "cs": run.consumed_seq,
        "rp": run.race_pc,
        "ru": run.race_until,
        "id": run.id,
    }
    _changed(conn, run.customer_id)
    later = held(conn, _HELD_RUNS, _HeldRuns)
    if later is None:
        sql(conn, _SAVE_RUN, values)
        return
    if run.id in later.ends:  # saved after it ended: in that order
        release_held(conn, _HELD_RUNS)
        later = held(conn, _HELD_RUNS, _HeldRuns)
        assert later is not None
    later.saves[run.id] = values
    later.customers.add(run.customer_id)


def end_run(conn: Connection, run: Run, reason: str, now: int, converted: bool) -> None:
    """Write the run as ended, with the reason (held as `save_run`)."""
    run.dirty = False
    values = {
        "now": now,
        "r": reason,
        "c": int(converted),
        "pc": run.pc,
        "cs": run.consumed_seq,
        "ctl": int(run.control),
        "id": run.id,
    }
    _changed(conn, run.customer_id)
    later = held(conn, _HELD_RUNS, _HeldRuns)
    if later is None:
        sql(conn, _END_RUN, values)
        return
    later.ends[run.id] = values
    later.customers.add(run.customer_id)


def mark_converted(conn: Connection, run_id: int) -> bool:
    """Count an ended run as converted; False if it already was."""
    _written(conn, run_ids=(run_id,))
    return bool(
        sql(
            conn,
            "UPDATE journey_runs SET converted = 1 WHERE id = :id AND converted = 0",
            {"id": run_id},
        ).rowcount
    )


def active_runs(conn: Connection, customer: int) -> list[Run]:
    """The customer's active runs, locked, oldest first."""
    _written(conn, customers=(customer,))
    ahead: list[Run] | None = take_ahead(conn, _ACTIVE_AHEAD, customer)
    if ahead is not None:
        return ahead
    rows = sql(
        conn,
        "SELECT * FROM journey_runs WHERE customer_id = :c AND state = 'active' "
        f"ORDER BY id{_for_update(conn)}",
        {"c": customer},
    ).all()
    return [run_of(row) for row in rows]


def load_run(conn: Connection, run_id: int) -> tuple[Run, str] | None:
    """An active run, locked, and its version's status (a paused journey holds it)."""
    _written(conn, run_ids=(run_id,))
    row = sql(
        conn,
        "SELECT r.*, v.status AS version_status FROM journey_runs r JOIN journey_versions v "
        "ON v.journey_id = r.journey_id AND v.version = r.version "
        f"WHERE r.id = :id AND r.state = 'active'{_for_update(conn, 'r')}",
        {"id": run_id},
    ).first()
    return (run_of(row), str(row.version_status)) if row is not None else None


def load_runs(conn: Connection, ids: list[int]) -> dict[int, tuple[Run, str]]:
    """These runs if active, locked, each with its version's status: one query."""
    _written(conn, run_ids=ids)
    names, params = in_list("r", ids)
    rows = sql(
        conn,
        "SELECT r.*, v.status AS version_status FROM journey_runs r JOIN journey_versions v "
        "ON v.journey_id = r.journey_id AND v.version = r.version "
        f"WHERE r.state = 'active' AND r.id IN ({names}) ORDER BY r.id{_for_update(conn, 'r')}",
        params,
    ).all()
    return {int(row.id): (run_of(row), str(row.version_status)) for row in rows}


def runs_by_id(conn: Connection, ids: list[int], *, active_only: bool = False) -> list[Run]:
    """These runs (only the active ones, with `active_only`), by id."""
    _written(conn, run_ids=ids)
    found: list[Run] = []
    state = " AND state = 'active'" if active_only else ""
    for part in chunks(ids):
        names, params = in_list("r", part)
        query = f"SELECT * FROM journey_runs WHERE id IN ({names}){state}"
        found += [run_of(row) for row in sql(conn, query, params).all()]
    found.sort(key=lambda run: run.id)
    return found


def active_runs_of_version(conn: Connection, journey_id: str, version: int) -> list[Run]:
    _written(conn, every=True)
    rows = sql(
        conn,
        "SELECT * FROM journey_runs WHERE journey_id = :j AND version = :v "
        "AND state = 'active' ORDER BY id",
        {"j": journey_id, "v": version},
    ).all()
    return [run_of(row) for row in rows]


def ended_runs_to_convert(
    conn: Connection, customer: int, occurred_at: int, longest_window: int
) -> list[tuple[Run, int]]:
    """The customer's ended runs, not converted, that an event at this time may convert
    (entered before it, and ended after it or within the longest goal window): each with
    the moment it ended."""
    _written(conn, customers=(customer,))
    rows = sql(
        conn,
        "SELECT * FROM journey_runs WHERE customer_id = :c AND state = 'ended' "
        "AND converted = 0 AND entered_at <= :t AND (ended_at > :t OR entered_at >= :w) "
        "ORDER BY id",
        {"c": customer, "t": occurred_at, "w": occurred_at - longest_window},
    ).all()
    return [(run_of(row), int(row.ended_at)) for row in rows]


def entries_of(conn: Connection, journey_id: str, customer: int) -> list[Any]:
    """The customer's runs of this journey, as re-entry rules read them."""
    _written(conn, customers=(customer,))
    ahead: dict[str, list[Any]] | None = take_ahead(conn, _ENTRIES_AHEAD, customer, keep=True)
    if ahead is not None and journey_id in ahead:
        return list(ahead[journey_id])
    return list(
        sql(
            conn,
            "SELECT state, run_key, entered_at, entry_message_id FROM journey_runs "
            "WHERE journey_id = :j AND customer_id = :c",
            {"j": journey_id, "c": customer},
        ).all()
    )


def move_runs(conn: Connection, merged: int, survivor: int) -> None:
    """Every run of a merged profile now belongs to the profile that survives."""
    _written(conn, every=True)
    _changed(conn, merged)
    _changed(conn, survivor)
    sql(
        conn,
        "UPDATE journey_runs SET customer_id = :new WHERE customer_id = :old",
        {"new": survivor, "old": merged},
    )


# ---- a job's log lines, and the versions that may have runs -----------------------------------


def insert_visits(conn: Connection, visits: list[tuple[str, int, str, str, int, int]]) -> None:
    """(journey, version, step, outcome, run, at) of the steps a job's runs reached."""
    insert_rows(
        conn,
        journey_step_visits,
        ("journey_id", "version", "step_id", "outcome", "run_id", "at"),
        visits,
    )


def insert_refusals(conn: Connection, refusals: list[tuple[str, int, int, str, int, int]]) -> None:
    """(journey, version, customer, reason, count, at) of the entries a job refused."""
    insert_rows(
        conn,
        journey_refusals,
        ("journey_id", "version", "customer_id", "reason", "count", "at"),
        refusals,
    )


def live_versions(conn: Connection) -> list[tuple[str, int, str]]:
    """(journey id, version, YAML) of every live journey. Read for every reaction."""
    rows = sql(
        conn,
        "SELECT journey_id, version, source FROM journey_versions WHERE status = 'live' "
        "ORDER BY journey_id",
    ).all()
    return [(r.journey_id, r.version, r.source) for r in rows]


RUNNING_VERSIONS = (
    "SELECT journey_id, version, status FROM journey_versions "
    "WHERE status IN ('live', 'paused', 'superseded') ORDER BY journey_id, version"
)


def running_versions(conn: Connection) -> list[tuple[str, int, str]]:
    """(journey id, version, status) of versions that are live or may still have runs.
    Read for every group of events ingested (sent ahead by the writer: the engine's
    `install`)."""
    rows = sql(conn, RUNNING_VERSIONS).all()
    return [(r.journey_id, r.version, r.status) for r in rows]


# ---- the event log, as runs read it ---------------------------------------------------------


def events_by_message_id(conn: Connection, ids: list[str]) -> list[LoggedEvent]:
    """These events, in the order they happened."""
    return [_logged(row) for row in log_queries.by_message_ids(conn, ids)]


def events_since(
    conn: Connection, customer: int, name: str, since: int, before: int, after_seq: int
) -> list[LoggedEvent]:
    """The customer's events named so, dated in [since, before), stored after `after_seq`."""
    rows = log_queries.named_between(conn, customer, name, since, before, after_seq)
    return [_logged(row) for row in rows]


def ending_events(
    conn: Connection, customers: set[int], names: frozenset[str], since: int
) -> dict[int, list[LoggedEvent]]:
    """These customers' events named so, dated from `since`, oldest first, in one query."""
    if not customers or not names:
        return {}
    found: dict[int, list[LoggedEvent]] = {}
    for row in log_queries.named_since(conn, sorted(customers), sorted(names), since):
        found.setdefault(int(row.customer_id), []).append(_logged(row))
    return found
