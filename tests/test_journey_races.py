"""A journey stops the moment it should, under load and across workers: a step checks the
log itself for the run's goals before it makes a message, and delivery checks it again
before the message is handed over, so an order already stored stops the messages after
it, even when its own reaction has not run yet or the messaging queue is behind; two
PostgreSQL workers never deadlock. What is measured is when each message was sent
(`outbox.sent_at`), not when it was made."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from parcours.customers import profiles as customers_api
from parcours.journeys import versions as journeys
from parcours.log import Event
from parcours.runtime.clock import SimulatedClock, SystemClock, from_ms, iso
from parcours.runtime.db import Database
from parcours.runtime.queue import try_lock_customers
from parcours.runtime.settings import Settings
from parcours.services import Services
from parcours.tracking import parse_event
from tests.conftest import define_templates, make_event, truncate_all

# The abandoned cart of the issue, on a short clock: a message at once, one after a wait,
# a last one for big carts; the customer's order for that cart ends the run.
RACE_JOURNEY = """\
id: cart-race
name: Cart race
entry: {event: Checkout Started, key: properties.checkout_id}
goals:
  - {event: Order Completed, key: properties.checkout_id}
steps:
  - id: push
    send: {channel: email, template: race-push, purpose: transactional}
  - wait: 2s
  - id: email
    send: {channel: email, template: race-email, purpose: transactional}
  - wait: 2s
  - branch:
      - when: {entry.properties.total: {gte: 150}}
        steps:
          - id: sms
            send: {channel: sms, template: race-sms, purpose: transactional}
      - otherwise: []
"""


def _identify(services: Services, customers: int) -> None:
    now = services.clock.now_ms()
    services.writer.append_sync(
        [
            make_event(
                "identify",
                userId=f"r-{n}",
                at=now - 1,
                traits={"email": f"r-{n}@example.com", "phone": f"+3361{n:07d}"},
            )
            for n in range(customers)
        ]
    )


def _carts_and_orders(services: Services, name: str, people: list[int]) -> None:
    """Append, at the clock's time, each person's cart (or their order for it)."""
    now = services.clock.now_ms()
    for first in range(0, len(people), 50):
        services.writer.append_sync(
            [
                make_event(
                    "track",
                    userId=f"r-{n}",
                    event=name,
                    at=now,
                    messageId=f"{name}-{n}",
                    properties={"checkout_id": f"k-{n}", "total": 100 + n % 100},
                )
                for n in people[first : first + 50]
            ]
        )


def _sends(services: Services) -> list[tuple[int, str, int]]:
    """(person, step, moment the message was handed to its provider) of every message
    sent."""
    with services.db.read() as conn:
        rows = conn.execute(
            text(
                "SELECT i.value, o.step_id, o.sent_at FROM outbox o JOIN identities i "
                "ON i.customer_id = o.customer_id AND i.kind = 'user_id' "
                "WHERE o.sent_at IS NOT NULL"
            )
        ).all()
    return [(int(user.split("-")[1]), step, int(at)) for user, step, at in rows]


def _not_sent(services: Services) -> list[tuple[int, str, str, str]]:
    """(person, step, state, why) of every message that was not sent."""
    with services.db.read() as conn:
        rows = conn.execute(
            text(
                "SELECT i.value, o.step_id, o.state, o.error FROM outbox o JOIN identities i "
                "ON i.customer_id = o.customer_id AND i.kind = 'user_id' "
                "WHERE o.sent_at IS NULL"
            )
        ).all()
    return sorted((int(user.split("-")[1]), step, state, why) for user, step, state, why in rows)


# The same on the simulated clock, with waits of two minutes.
SLOW_JOURNEY = RACE_JOURNEY.replace("wait: 2s", "wait: 2m")


def test_a_burst_sends_nothing_after_an_order_while_the_worker_is_behind(
    services: Services, clock: SimulatedClock
) -> None:
    """The worker is behind (nothing runs while carts and orders arrive): the message due
    at once, and the ones after a wait, check the log for the order when they are made, so
    none goes to a customer whose order was stored before it, reacted to or not."""
    customers = 200
    define_templates(services, SLOW_JOURNEY)
    journeys.publish(services.db, SLOW_JOURNEY, "ana", "ben", clock.now_ms())
    _identify(services, customers)
    start = clock.now_ms()
    _carts_and_orders(services, "Checkout Started", list(range(customers)))
    clock.advance_ms(1_000)
    ordered = {n: clock.now_ms() for n in range(1, customers, 4)}  # a second after the cart
    _carts_and_orders(services, "Order Completed", sorted(ordered))
    clock.advance_ms(9_000)
    services.worker.run_due()  # ten seconds behind: the carts' reactions come first
    clock.set(from_ms(start + 125_000))  # just after the second message fell due
    later = {n: clock.now_ms() for n in range(2, customers, 4)}
    _carts_and_orders(services, "Order Completed", sorted(later))
    clock.set(from_ms(start + 200_000))
    services.worker.run_due()  # behind again
    for _ in range(20):
        clock.advance_ms(30_000)
        services.worker.run_due()
    ordered |= later
    sends = _sends(services)
    assert [(n, step, at) for n, step, at in sends if n in ordered and at > ordered[n]] == []
    assert sorted((n, step) for n, step, _ in sends if n in ordered) == [
        (n, "push") for n in sorted(later)
    ]  # the push went out before they ordered; nothing after
    assert sorted((n, step) for n, step, _ in sends if n not in ordered) == sorted(
        (n, step)
        for n in range(customers)
        if n not in ordered
        for step in ("push", "email", "sms")
        if step != "sms" or n % 100 >= 50
    )  # who never ordered got every message, once
    with services.db.read() as conn:
        ended = dict(
            conn.execute(
                text("SELECT end_reason, count(*) FROM journey_runs GROUP BY end_reason")
            ).all()
        )
    assert ended == {"goal reached: Order Completed": customers // 2, "completed": customers // 2}
    assert _not_sent(services) == []  # every message made was sent


def test_a_message_made_before_an_order_and_delivered_after_it_is_not_sent(
    services: Services, clock: SimulatedClock
) -> None:
    """The messaging queue is behind the journeys queue: the messages are made, the
    customers order, and only then does delivery come. An order stored before delivery
    looked stops the message, whether its own reaction has run (the run ended, its
    messages not yet sent cancelled with it) or not (delivery reads the log itself); the
    others go."""
    customers = 12
    define_templates(services, SLOW_JOURNEY)
    journeys.publish(services.db, SLOW_JOURNEY, "ana", "ben", clock.now_ms())
    _identify(services, customers)
    every_queue = services.worker.queues
    services.worker.queues = ("journeys",)  # no delivery for now
    _carts_and_orders(services, "Checkout Started", list(range(customers)))
    services.worker.run_due()  # every cart entered, every push made, none sent
    assert [(n, step, state) for n, step, state, _ in _not_sent(services)] == [
        (n, "push", "pending") for n in range(customers)
    ]
    clock.advance_ms(5_000)
    reacted = [n for n in range(customers) if n % 3 == 1]
    _carts_and_orders(services, "Order Completed", reacted)
    services.worker.run_due()  # their orders' reactions end their runs, and cancel their push
    goal = "goal reached: Order Completed"
    assert _not_sent(services) == [
        (n, "push", "cancelled", goal) if n in reacted else (n, "push", "pending", None)
        for n in range(customers)
    ]
    clock.advance_ms(5_000)
    not_reacted = [n for n in range(customers) if n % 3 == 2]
    _carts_and_orders(services, "Order Completed", not_reacted)
    ordered = {n: clock.now_ms() - (5_000 if n in reacted else 0) for n in reacted + not_reacted}
    clock.advance_ms(5_000)
    services.worker.queues = ("messaging",)  # delivery comes; those reactions still wait
    services.worker.run_due()
    assert _not_sent(services) == [(n, "push", "cancelled", goal) for n in sorted(ordered)]
    assert sorted((n, step) for n, step, _ in _sends(services)) == [
        (n, "push") for n in range(customers) if n % 3 == 0
    ]
    with services.db.read() as conn:
        traces = [  # at delivery (r-2), and when the reaction ended the run (r-1)
            journeys.trace(conn, customers_api.resolve(conn, user, "FR")) for user in ("r-2", "r-1")
        ]
    for trace in traces:  # the customer's trace says why, either way
        lines = [line.properties for line in trace if line.event == "Message Held"]
        assert [(p["step"], p["reason"], p["outcome"]) for p in lines] == [
            ("push", goal, "cancelled")
        ]
    services.worker.queues = every_queue
    for _ in range(10):  # the rest of the journey, for everyone
        clock.advance_ms(60_000)
        services.worker.run_due()
    sends = _sends(services)
    assert [(n, step) for n, step, at in sends if n in ordered and at > ordered[n]] == []
    assert sorted((n, step) for n, step, _ in sends) == sorted(
        (n, step)
        for n in range(customers)
        if n % 3 == 0
        for step in ("push", "email", "sms")
        if step != "sms" or n % 100 >= 50
    )
    assert len(_not_sent(services)) == len(ordered)  # nothing else was made for them


def test_archiving_leaves_a_run_another_worker_is_deciding_about_until_it_is_done(
    postgres_url: str, tmp_path: Path, clock: SimulatedClock
) -> None:
    """Stopping a journey ends its runs under each customer's lock, taken without waiting:
    the run of a customer another worker holds is ended in a second pass, once that
    worker is done; the others at once."""
    truncate_all(postgres_url)
    services = Services.open(Settings(data_dir=tmp_path, database_url=postgres_url), clock=clock)
    try:
        define_templates(services, SLOW_JOURNEY)
        journeys.publish(services.db, SLOW_JOURNEY, "ana", "ben", clock.now_ms())
        _identify(services, 3)
        _carts_and_orders(services, "Checkout Started", [0, 1, 2])
        services.worker.run_due()
        with services.db.read() as conn:
            held = customers_api.resolve(conn, "r-1", "FR")
        journeys.change_status(services.db, "cart-race", 1, "archive", "ben", clock.now_ms())
        with services.db.write() as other:  # another worker, deciding about r-1
            assert try_lock_customers(other, [held]) == {held}
            services.worker.run_due()
            assert _states(services) == {0: "ended", 1: "active", 2: "ended"}
        clock.advance_ms(1_000)
        services.worker.run_due()
        assert _states(services) == {0: "ended", 1: "ended", 2: "ended"}
    finally:
        services.close()


def test_a_resume_leaves_the_runs_of_a_customer_another_worker_holds_to_a_second_pass(
    postgres_url: str, tmp_path: Path, clock: SimulatedClock
) -> None:
    """Resuming a journey releases the runs of the customers whose locks it can take at
    once; the second pass, a second later, names the runs it leaves (it reads those, not
    every run of the version again each second while another worker holds a customer)."""
    truncate_all(postgres_url)
    services = Services.open(Settings(data_dir=tmp_path, database_url=postgres_url), clock=clock)
    try:
        define_templates(services, SLOW_JOURNEY)
        journeys.publish(services.db, SLOW_JOURNEY, "ana", "ben", clock.now_ms())
        _identify(services, 3)
        _carts_and_orders(services, "Checkout Started", [0, 1, 2])
        services.worker.run_due()  # the pushes; the emails wait two minutes
        journeys.change_status(services.db, "cart-race", 1, "pause", "ben", clock.now_ms())
        clock.advance_ms(180_000)
        services.worker.run_due()  # the emails' steps come due and are held
        with services.db.read() as conn:
            held = customers_api.resolve(conn, "r-1", "FR")
            run_of_held = conn.execute(
                text("SELECT id FROM journey_runs WHERE customer_id = :c"), {"c": held}
            ).scalar_one()
        journeys.change_status(services.db, "cart-race", 1, "go_live", "ben", clock.now_ms())
        with services.db.write() as other:  # another worker, deciding about r-1
            assert try_lock_customers(other, [held]) == {held}
            services.worker.run_due()
            with services.db.read() as conn:
                second = conn.execute(
                    text("SELECT payload FROM jobs WHERE kind = :k"),
                    {"k": journeys.STATUS_JOB},
                ).scalar_one()
            assert json.loads(second) == {
                "journey_id": "cart-race",
                "version": 1,
                "from": "paused",
                "to": "live",
                "again": True,
                "runs": [run_of_held],
            }
            assert sorted((n, step) for n, step, _ in _sends(services) if step == "email") == [
                (0, "email"),
                (2, "email"),
            ]
        clock.advance_ms(1_000)
        services.worker.run_due()
        assert sorted((n, step) for n, step, _ in _sends(services) if step == "email") == [
            (0, "email"),
            (1, "email"),
            (2, "email"),
        ]
    finally:
        services.close()


def test_a_record_of_sends_chosen_as_a_deadlocks_victim_is_made_again(
    postgres_url: str, tmp_path: Path, clock: SimulatedClock
) -> None:
    """Recording a batch of sends locks their outbox rows, then (projecting `Message
    Sent`) their customers' rows; a merge locks the customers' rows, then (following the
    merge into the journeys) their outbox rows. PostgreSQL fails one of the two: here the
    record, which is tried again, whole. The send is recorded once and never made again
    (before, the record was lost and the lease made the send a second time)."""
    truncate_all(postgres_url)
    # PostgreSQL looks for a cycle once, `deadlock_timeout` after a backend starts to wait.
    # The record waits first; at the default (1 s) its one look could come before the
    # merge below has begun to wait on a loaded machine, and the merge (60 s) would then
    # be the one failed. Three seconds leave the merge ample time to close the cycle.
    record_side = postgres_url + "?options=-c%20deadlock_timeout%3D3s"
    services = Services.open(Settings(data_dir=tmp_path, database_url=record_side), clock=clock)
    merger = services.db.engine.connect()  # plays the writer merging this customer
    try:
        define_templates(services, SLOW_JOURNEY)
        journeys.publish(services.db, SLOW_JOURNEY, "ana", "ben", clock.now_ms())
        _identify(services, 1)
        queues = services.worker.queues
        services.worker.queues = ("journeys",)
        _carts_and_orders(services, "Checkout Started", [0])
        services.worker.run_due()  # the push made, not sent
        services.worker.queues = queues
        with services.db.read() as conn:
            customer = customers_api.resolve(conn, "r-0", "FR")
        transaction = merger.begin()
        merger.execute(text("SET LOCAL deadlock_timeout = '60s'"))  # the record finds it
        merger.execute(text("SELECT id FROM customers WHERE id = :c FOR UPDATE"), {"c": customer})
        worker = threading.Thread(target=services.worker.run_due)
        worker.start()
        _until_a_statement_waits(services, "FROM customers")  # the record, projecting
        merger.execute(  # as a merge moves the messages: waits for the record's row
            text("UPDATE outbox SET customer_id = customer_id WHERE customer_id = :c"),
            {"c": customer},
        )
        transaction.commit()
        worker.join(60)
        with services.db.read() as conn:
            rows = conn.execute(text("SELECT state, attempt FROM outbox")).all()
            recorded = conn.execute(
                text("SELECT count(*) FROM events WHERE name = 'Message Sent'")
            ).scalar_one()
            leases = conn.execute(
                text("SELECT count(*) FROM jobs WHERE kind = 'messaging.deliver'")
            ).scalar_one()
        assert [tuple(row) for row in rows] == [("sent", 1)]
        assert (recorded, leases) == (1, 0)
    finally:
        merger.close()
        services.close()


def _until_a_statement_waits(services: Services, fragment: str) -> None:
    """Wait until a backend waits for a lock in a statement containing `fragment`."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with services.db.read() as conn:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND position(:f in query) > 0"
                ),
                {"f": fragment},
            ).scalar_one()
        if waiting:
            return
        time.sleep(0.05)
    raise AssertionError(f"no statement with {fragment!r} came to wait")


def _states(services: Services) -> dict[int, str]:
    with services.db.read() as conn:
        rows = conn.execute(
            text(
                "SELECT i.value, r.state FROM journey_runs r JOIN identities i "
                "ON i.customer_id = r.customer_id AND i.kind = 'user_id'"
            )
        ).all()
    return {int(user.split("-")[1]): state for user, state in rows}


def test_a_batch_of_steps_or_sends_reads_the_goals_of_all_its_customers_in_one_query(
    tmp_path: Path, clock: SimulatedClock
) -> None:
    """The checks cost one query per batch, not one per message: the steps' before they
    make the messages, and delivery's before it hands them over (every statement the
    worker runs is traced, through SQLite's own hook)."""
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'p.db'}")
    services = Services.open(settings, clock=clock)
    try:
        define_templates(services, SLOW_JOURNEY)
        journeys.publish(services.db, SLOW_JOURNEY, "ana", "ben", clock.now_ms())
        _identify(services, 50)
        _carts_and_orders(services, "Checkout Started", list(range(50)))
        services.worker.run_due()  # entered; the first message of each at once
        statements: list[str] = []
        services.db.engine.dispose()  # the worker's next connections are traced
        event.listen(
            services.db.engine,
            "connect",
            lambda raw, _: raw.set_trace_callback(statements.append),
        )
        clock.advance_ms(120_000)
        services.worker.batch_seconds = math.inf  # one batch, however slow the machine
        queues = services.worker.queues
        services.worker.queues = ("journeys",)
        services.worker.run_due()  # the 50 second messages made
        assert len(_goal_reads(statements)) == 1
        # Delivery checks them again before they go: once for the batch too, reading
        # the runs and then their customers' goals.
        statements.clear()
        services.worker.queues = queues
        services.worker.batch = 1_000  # the 50 sends and the first messages' feedback
        services.worker.run_due()
        assert len(_goal_reads(statements)) == 1
        assert len([sql for sql in statements if "FROM journey_runs WHERE id IN" in sql]) == 1
        assert sorted(step for _, step, _ in _sends(services)).count("email") == 50
    finally:
        services.close()


def _goal_reads(statements: list[str]) -> list[str]:
    """The reads of the goal events of a group of customers (`_read_ending`)."""
    flat = [" ".join(sql.split()) for sql in statements]
    return [
        sql
        for sql in flat
        if "FROM events WHERE" in sql and "customer_id IN" in sql and "name IN" in sql
    ]


def _start_worker(
    url: str, data_dir: Path, log: Path, pg_options: str = ""
) -> subprocess.Popen[bytes]:
    """A `parcours worker` process; `pg_options` are PostgreSQL settings for its sessions
    (libpq's PGOPTIONS)."""
    env = {
        **os.environ,
        "PARCOURS_DATABASE_URL": url,
        "PARCOURS_LOG_LEVEL": "warning",
        "PGOPTIONS": pg_options,
    }
    command = [str(Path(sys.executable).parent / "parcours"), "worker", "--data-dir", str(data_dir)]
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=out)


def _deadlocks(conn: object) -> int:
    value = conn.execute(  # type: ignore[attr-defined]
        text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
    ).scalar_one()
    return int(value)


def _until_nothing_left(
    db: Database,
    workers: list[subprocess.Popen[bytes]],
    query: str,
    params: dict[str, Any] | None = None,
) -> None:
    """Wait (two minutes at most) until `query`, a count of the work still to do, says
    none is left; every worker must stay up meanwhile."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with db.read() as conn:
            if conn.execute(text(query), params or {}).scalar_one() == 0:
                return
        assert all(w.poll() is None for w in workers), "a worker exited"
        time.sleep(0.2)


def _stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.wait(30)


def _deadlocks_since(db: Database, before: int) -> int:
    """Deadlocks PostgreSQL counted since `before`, once the stopped workers' backends have
    reported their statistics (they may take a moment)."""
    deadline = time.monotonic() + 10
    while True:
        with db.read() as conn:
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            deadlocks = _deadlocks(conn) - before
        if deadlocks or time.monotonic() > deadline:
            return deadlocks
        time.sleep(0.5)


@pytest.mark.slow
def test_two_postgresql_workers_send_nothing_after_an_order_and_never_deadlock(
    postgres_url: str, tmp_path: Path
) -> None:
    truncate_all(postgres_url)
    customers = 1500
    services = Services.open(
        Settings(data_dir=tmp_path, database_url=postgres_url), clock=SystemClock()
    )  # ingest only: the work is the worker processes'
    db = Database(postgres_url)
    committed: dict[int, int] = {}  # customer -> wall time by which their order was stored
    logs = [tmp_path / f"worker-{n}.log" for n in range(2)]
    try:
        define_templates(services, RACE_JOURNEY)
        journeys.publish(services.db, RACE_JOURNEY, "ana", "ben", services.clock.now_ms())
        now = services.clock.now_ms()
        services.writer.append_sync(
            [
                parse_event(
                    (
                        f'{{"type": "identify", "userId": "r-{n}", "messageId": "ri-{n}", '
                        f'"timestamp": "{iso(now - 1)}", "traits": {{"email": '
                        f'"r-{n}@example.com", "phone": "+3361{n:07d}"}}}}'
                    ).encode(),
                    source="api",
                    received_at=now,
                )
                for n in range(customers)
            ]
        )
        with db.read() as conn:
            deadlocks_before = _deadlocks(conn)
        workers = [_start_worker(postgres_url, tmp_path, log) for log in logs]

        def cart(n: int, stamp: int) -> bytes:
            return (
                f'{{"type": "track", "userId": "r-{n}", "event": "Checkout Started", '
                f'"messageId": "cart-{n}", "timestamp": "{iso(stamp)}", '
                f'"properties": {{"checkout_id": "k-{n}", "total": {100 + n % 100}}}}}'
            ).encode()

        # Carts in groups of 30 every 100 ms; each customer's order, for three in four,
        # comes at once, one second or three seconds after their cart (around the steps'
        # due times), interleaved with the next carts.
        delays = [None, 0.0, 1.0, 3.0]
        started = time.monotonic()
        due_orders: list[tuple[float, int]] = []
        group = 30
        for first in range(0, customers, group):
            cart_at = time.monotonic()
            stamp = int(time.time() * 1000)
            people = range(first, min(customers, first + group))
            services.writer.append_sync(
                [parse_event(cart(n, stamp), source="api", received_at=stamp) for n in people]
            )
            due_orders += [(cart_at + d, n) for n in people if (d := delays[n % 4]) is not None]
            _orders_due(services, due_orders, committed)
            time.sleep(0.1)
        while due_orders:
            _orders_due(services, due_orders, committed)
            time.sleep(0.05)
        # Every cart entered, every run ended (by its order or at its end), every
        # message handed over.
        _until_nothing_left(
            db,
            workers,
            "SELECT (SELECT count(*) FROM jobs WHERE queue = 'journeys') + "
            "(SELECT count(*) FROM journey_runs WHERE state = 'active') + "
            "(SELECT count(*) FROM outbox WHERE state IN ('pending', 'sending')) + "
            ":customers - (SELECT count(*) FROM journey_runs)",
            {"customers": customers},
        )
        _stop(workers)
        with db.read() as conn:
            messages = conn.execute(
                text(
                    "SELECT i.value, o.step_id, o.checked_at, o.sent_at FROM outbox o "
                    "JOIN identities i ON i.customer_id = o.customer_id AND i.kind = 'user_id'"
                )
            ).all()
            reasons = conn.execute(
                text("SELECT end_reason, count(*) FROM journey_runs GROUP BY end_reason")
            ).all()
        deadlocks = _deadlocks_since(db, deadlocks_before)
        elapsed = time.monotonic() - started
    finally:
        db.dispose()
        services.close()
    logged = sum(log.read_text(errors="replace").count("deadlock detected") for log in logs)
    sends = [(user, step, checked, sent) for user, step, checked, sent in messages if sent]
    # Delivery checks the log just before a message is handed over (`checked_at`, read
    # before the check's query): an order stored before then stops it. One stored after
    # the check cannot take it back, though the send is recorded after it (`sent_at`).
    after_order = [
        (user, step, checked, sent)
        for user, step, checked, sent in sends
        if (n := int(user.split("-")[1])) in committed and checked > committed[n]
    ]
    in_flight = [
        sent - committed[n]
        for user, _, _, sent in sends
        if (n := int(user.split("-")[1])) in committed and sent > committed[n]
    ]
    print(
        f"{len(sends)} sends ({len(messages) - len(sends)} cancelled or not sent), "
        f"{len(after_order)} checked after an order, {len(in_flight)} checked before it and "
        f"recorded after it (by {sorted(in_flight)} ms), {deadlocks} deadlocks "
        f"({logged} logged), runs {sorted(reasons)}, {elapsed:.1f} s"
    )
    assert after_order == []
    assert (deadlocks, logged) == (0, 0)
    # Those who never ordered got every message of their cart, once.
    never_ordered = sorted(
        (user, step) for user, step, _, _ in sends if int(user.split("-")[1]) not in committed
    )
    assert never_ordered == sorted(
        (f"r-{n}", step)
        for n in range(0, customers, 4)
        for step in ("push", "email", "sms")
        if step != "sms" or n % 100 >= 50
    )


def _orders_due(
    services: Services, due_orders: list[tuple[float, int]], committed: dict[int, int]
) -> None:
    """Append the orders whose moment has come; note when each was surely stored."""
    now = time.monotonic()
    ready = [n for at, n in due_orders if at <= now]
    if not ready:
        return
    due_orders[:] = [(at, n) for at, n in due_orders if at > now]
    stamp = int(time.time() * 1000)
    services.writer.append_sync(
        [
            parse_event(
                (
                    f'{{"type": "track", "userId": "r-{n}", "event": "Order Completed", '
                    f'"messageId": "order-{n}", "timestamp": "{iso(stamp)}", '
                    f'"properties": {{"checkout_id": "k-{n}"}}}}'
                ).encode(),
                source="api",
                received_at=stamp,
            )
            for n in ready
        ]
    )
    stored = int(time.time() * 1000)
    for n in ready:
        committed[n] = stored


def _json_event(document: dict[str, Any], stamp: int) -> Event:
    return parse_event(json.dumps(document).encode(), source="api", received_at=stamp)


@pytest.mark.processes
@pytest.mark.parametrize(
    ("count", "victims"), [(2, "either side"), (4, "the workers")], ids=["2-either", "4-workers"]
)
def test_workers_over_carts_orders_merges_and_withdrawals_decide_exactly_once(
    postgres_url: str, tmp_path: Path, count: int, victims: str
) -> None:
    """Two, then four worker processes over interleaved traffic (issue 19): carts; orders
    at once, a second or three after their cart; anonymous carts whose person signs in half
    a second later (a merge); people who withdraw email half a second after their cart. The
    steps run in sets (their writes held, their reads made ahead) by workers that share
    customers: each person gets each step's message at most once, never one checked after
    their order, never an email after their withdrawal (delivery checks the consent in force
    again before the hand-over); a merged cart's email is made for its person; nothing is
    left. A merge meeting a worker that holds the merged customer's runs is a deadlock
    (docs/architecture.md, "Merges") that PostgreSQL breaks on either side, whichever looks
    first: with four workers, theirs look first (`deadlock_timeout` 10 ms in their sessions),
    so a worker is the one failed and its jobs are tried again; the outcomes are exact
    either way. (CI once saw four worker victims among five deadlocks on a loaded machine,
    where this test asserted there would be none.)"""
    truncate_all(postgres_url)
    people = 600
    services = Services.open(
        Settings(data_dir=tmp_path, database_url=postgres_url), clock=SystemClock()
    )  # ingest only: the work is the worker processes'
    db = Database(postgres_url)
    logs = [tmp_path / f"worker-{n}.log" for n in range(count)]
    committed: dict[int, int] = {}  # person -> wall time by which their order was stored
    withdrawn: dict[int, int] = {}  # person -> wall time by which their withdrawal was stored
    merged: dict[int, int] = {}  # person -> wall time by which their sign-in was stored
    carted: dict[int, int] = {}  # person -> their cart's time (the email is due 2 s after)
    kind = {
        n: ("never", "withdraws", "merges", "order-0", "order-1", "order-3")[n % 6]
        for n in range(people)
    }
    try:
        define_templates(services, RACE_JOURNEY)
        journeys.publish(services.db, RACE_JOURNEY, "ana", "ben", services.clock.now_ms())
        _identify(services, people)
        with db.read() as conn:
            deadlocks_before = _deadlocks(conn)
        pg_options = "-c deadlock_timeout=10ms" if victims == "the workers" else ""
        workers = [_start_worker(postgres_url, tmp_path, log, pg_options) for log in logs]
        later: list[tuple[float, int]] = []  # (moment, person) of what follows a cart
        started = time.monotonic()
        for first in range(0, people, 30):
            stamp = int(time.time() * 1000)
            group = range(first, min(people, first + 30))
            carts = []
            for n in group:
                who = {"anonymousId": f"anon-{n}"} if kind[n] == "merges" else {"userId": f"r-{n}"}
                carts.append(
                    _json_event(
                        {
                            "type": "track",
                            **who,
                            "event": "Checkout Started",
                            "messageId": f"cart-{n}",
                            "timestamp": iso(stamp),
                            "properties": {"checkout_id": f"k-{n}", "total": 100 + n % 100},
                        },
                        stamp,
                    )
                )
            services.writer.append_sync(carts)
            carted.update((n, stamp) for n in group)
            now = time.monotonic()
            for n in group:
                delay = {"withdraws": 0.5, "merges": 0.5, "order-0": 0.0, "order-1": 1.0}.get(
                    kind[n], 3.0 if kind[n] == "order-3" else None
                )
                if delay is not None:
                    later.append((now + delay, n))
            _what_follows(services, later, kind, committed, withdrawn, merged)
            time.sleep(0.1)
        while later:
            _what_follows(services, later, kind, committed, withdrawn, merged)
            time.sleep(0.05)
        _until_nothing_left(
            db,
            workers,
            "SELECT (SELECT count(*) FROM jobs WHERE queue = 'journeys' OR kind = "
            "'messaging.deliver') + (SELECT count(*) FROM journey_runs WHERE state = "
            "'active') + (SELECT count(*) FROM outbox WHERE state IN ('pending', 'sending'))",
        )
        _stop(workers)
        with db.read() as conn:
            messages = conn.execute(
                text(
                    "SELECT i.value, o.step_id, o.channel, o.checked_at, o.sent_at, o.state, "
                    "o.error FROM outbox o "
                    "JOIN identities i ON i.customer_id = o.customer_id AND i.kind = 'user_id'"
                )
            ).all()
            runs = conn.execute(
                text("SELECT count(*), count(*) FILTER (WHERE state = 'active') FROM journey_runs")
            ).one()
        deadlocks = _deadlocks_since(db, deadlocks_before)
        print(f"{count} workers: {len(messages)} messages in {time.monotonic() - started:.1f} s")

    finally:
        db.dispose()
        services.close()
    logged = sum(log.read_text(errors="replace").count("deadlock detected") for log in logs)
    print(f"{deadlocks} deadlocks, {logged} of them failed in a worker")
    assert tuple(runs) == (people, 0)  # one run a cart, merged ones included; none left
    sent = [
        (int(u.split("-")[1]), step, ch, checked, at)
        for u, step, ch, checked, at, *_ in messages
        if at
    ]
    steps = [(n, step) for n, step, *_ in sent]
    assert len(steps) == len(set(steps)), "a step's message was sent twice"
    assert [s for s in sent if s[0] in committed and s[3] > committed[s[0]]] == []
    assert [
        s for s in sent if s[0] in withdrawn and s[2] == "email" and s[3] > withdrawn[s[0]]
    ] == []
    expected = {
        n: {"push", "email", *(("sms",) if n % 100 >= 50 else ())}
        for n in range(people)
        if kind[n] == "never"
    }
    got: dict[int, set[str]] = {}
    for n, step, *_ in sent:
        got.setdefault(n, set()).add(step)
    assert {n: got.get(n, set()) for n in expected} == expected
    # A merged cart's email is made for the person it merged into, even when its run was
    # entered while the merge was being stored (the step follows the merge then). The
    # sandbox fails a few addresses on purpose: made, not necessarily sent.
    made = {(int(user.split("-")[1]), step) for user, step, *_ in messages}
    # Those whose sign-in was stored before their email was due (on a busy machine this
    # test's own appends may come later than planned: then the email went before it).
    lost = [
        n
        for n in range(people)
        if kind[n] == "merges" and merged[n] < carted[n] + 2000 and (n, "email") not in made
    ]
    assert lost == []


def _what_follows(
    services: Services,
    later: list[tuple[float, int]],
    kind: dict[int, str],
    committed: dict[int, int],
    withdrawn: dict[int, int],
    merged: dict[int, int],
) -> None:
    """Append what follows each cart whose moment has come: an order, a withdrawal of email
    (transactional included: the journey's messages are), or the sign-in that merges an
    anonymous cart into its person. Notes when orders and withdrawals were surely stored."""
    now = time.monotonic()
    ready = [n for at, n in later if at <= now]
    if not ready:
        return
    later[:] = [(at, n) for at, n in later if at > now]
    stamp = int(time.time() * 1000)
    events = []
    for n in ready:
        document: dict[str, Any]
        if kind[n] == "withdraws":
            consent = {"email": {"transactional": False, "marketing": False}}
            document = {"type": "identify", "userId": f"r-{n}", "traits": {"consent": consent}}
        elif kind[n] == "merges":
            document = {"type": "identify", "userId": f"r-{n}", "anonymousId": f"anon-{n}"}
        else:
            document = {
                "type": "track",
                "userId": f"r-{n}",
                "event": "Order Completed",
                "properties": {"checkout_id": f"k-{n}"},
            }
        document |= {"messageId": f"after-{n}", "timestamp": iso(stamp)}
        events.append(_json_event(document, stamp))
    services.writer.append_sync(events)
    stored = int(time.time() * 1000)
    for n in ready:
        if kind[n] == "withdraws":
            withdrawn[n] = stored
        elif kind[n] == "merges":
            merged[n] = stored
        else:
            committed[n] = stored
