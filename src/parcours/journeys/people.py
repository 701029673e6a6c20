"""Journeys' part when two profiles merge or a person is erased (customers.people).

Merged: the runs of both go on, on the surviving profile; a keyed run both had is kept
once (the older run), so nothing is sent twice. Erased: their runs and refused entries go.
Their jobs and messages are the queue's and messaging's (their own hooks).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, delete

from parcours.journeys import store
from parcours.journeys.runner import Runner
from parcours.journeys.runs import Run
from parcours.journeys.tables import journey_refusals, journey_runs

TABLES = ("journey_runs", "journey_refusals")


def follow_merge(conn: Connection, merged: int, survivor: int, now: int, runner: Runner) -> None:
    """The customer `merged` became `survivor`: a run both had for one key ends on the
    newer side, then every run of `merged` is the survivor's."""
    kept: dict[tuple[str, str], Run] = {
        (run.journey_id, run.run_key): run for run in store.active_runs(conn, survivor)
    }
    for run in store.active_runs(conn, merged):
        twin = kept.get((run.journey_id, run.run_key))
        if twin is None:
            continue
        older, newer = sorted((run, twin), key=lambda r: r.id)
        runner.end(conn, newer, f"profiles merged: run {older.id} goes on", now)
        if newer is twin:
            kept[(run.journey_id, run.run_key)] = run
    store.move_runs(conn, merged, survivor)


def erase(conn: Connection, customer_ids: Sequence[int]) -> dict[str, int]:
    """A person erased: their journey runs, and the entries refused them. The per-step
    counts (`journey_step_visits`) name runs, not people, and stay."""
    ids = list(customer_ids)
    return {
        table.name: conn.execute(delete(table).where(table.c.customer_id.in_(ids))).rowcount
        for table in (journey_runs, journey_refusals)
    }
