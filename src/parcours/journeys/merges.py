"""Following a merge of two customers: the runs of both go on, on the surviving profile;
a keyed run both had is kept once (the older run), so nothing is sent twice. Their step
jobs, message intents and subscriptions move with them."""

from __future__ import annotations

from sqlalchemy import Connection

from parcours.journeys import store
from parcours.journeys.runner import Runner
from parcours.journeys.runs import Run
from parcours.log import Event
from parcours.messaging import subscriptions
from parcours.messaging.outbox import reassign_intents
from parcours.runtime.queue import reassign_jobs


def follow_merge(conn: Connection, event: Event, now: int, runner: Runner) -> None:
    """The customer `merged_id` became `survivor_id` (the merge event's properties)."""
    survivor = int(event.properties["survivor_id"])
    merged = int(event.properties["merged_id"])
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
    reassign_jobs(conn, merged, survivor)
    reassign_intents(conn, merged, survivor)
    subscriptions.reassign(conn, merged, survivor)
