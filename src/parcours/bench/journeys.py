"""`parcours bench journeys`: journey steps per second on a simulated clock, and the time
from an accepted event to its message intent with the real clock."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from parcours.bench import common as bench
from parcours.bench.common import Server, measured_database, percentile, psutil
from parcours.bench.counting import Counts, StatementCounter, describe, figures
from parcours.bench.latency import LatencyProxy
from parcours.runtime.queue import next_run_at

# Issue 19's target: statements per journey step, the engine's average over the abandoned
# cart (`--without-delivery`: the engine alone).
STATEMENTS_PER_STEP_TARGET = 4

# The shipped abandoned-cart journey: push, email recap, SMS for high-value carts.
CART = (Path(__file__).resolve().parents[1] / "journeys/templates/abandoned-cart.yaml").read_text(
    encoding="utf-8"
)

INSTANT = """\
id: instant
name: Order confirmation
entry: {event: Order Completed}
steps:
  - send: {channel: email, template: order-confirmation, purpose: transactional}
"""


def steps(
    database_url: str,
    data_dir: Path,
    customers: int,
    deliver: bool = True,
    wire: LatencyProxy | None = None,
    count: bool = True,
) -> dict[str, Any]:
    """Customers enter the abandoned-cart journey; the clock is advanced through every
    wait, jumping from one due job to the next; every step runs for real. With `deliver`
    every message is also rendered, handed to the sandbox and its feedback played back, in
    the same process; without, only the journey engine runs (intents stay in the outbox,
    as when delivery has workers of its own). With `count`, every statement is counted
    (bench/counting.py): those of the entry events' appends, and those of the worker's
    jobs; the benchmark's own reads of when the next job is due are left out."""
    from parcours.journeys import versions as journeys
    from parcours.runtime.clock import SimulatedClock, iso
    from parcours.runtime.settings import Settings
    from parcours.services import Services
    from parcours.tracking import parse_event

    start = int(datetime(2026, 11, 23, 9, 0, tzinfo=UTC).timestamp() * 1000)  # a Monday
    clock = SimulatedClock(start)
    services = Services.open(Settings(data_dir=data_dir, database_url=database_url), clock=clock)
    if not deliver:
        services.worker.queues = tuple(q for q in services.worker.queues if q != "messaging")
    if not services.db.is_sqlite:
        # Whole batches, as a lone worker may run them: the statements per step are then
        # the engine's, not the machine's speed's (a batch on PostgreSQL otherwise ends
        # after half a second, so that workers sharing a backlog take turns: what
        # `--mode workers` measures).
        services.worker.batch_seconds = float("inf")
    encoder = msgspec.json.Encoder()
    counter = StatementCounter(wire)
    if count:
        counter.attach(services.db.engine)
    try:
        journeys.publish(services.db, CART, "bench", "bench reviewer", start)
        consent = {ch: {"marketing": True} for ch in ("push", "email", "sms")}
        for offset in range(0, customers, 1000):
            chunk = range(offset, min(customers, offset + 1000))
            services.writer.append_sync(
                [
                    parse_event(
                        encoder.encode(
                            {
                                "type": "identify",
                                "userId": f"c-{n}",
                                "messageId": f"id-{n}",
                                "timestamp": iso(start - 1000),
                                "traits": {
                                    "consent": consent,
                                    "email": f"c-{n}@example.com",
                                    "phone": f"+336{n:08d}",
                                    "push_token": f"token-{n}",
                                },
                                "context": {"timezone": "Europe/Paris"},
                            }
                        ),
                        source="bench",
                        received_at=start,
                    )
                    for n in chunk
                ]
            )
        began = time.perf_counter()
        entering = counter.totals()
        for offset in range(0, customers, 1000):
            chunk = range(offset, min(customers, offset + 1000))
            services.writer.append_sync(
                [
                    parse_event(
                        encoder.encode(
                            {
                                "type": "track",
                                "userId": f"c-{n}",
                                "event": "Cart Abandoned",  # the journey's entry
                                "messageId": f"co-{n}",
                                "timestamp": iso(start),
                                "properties": {"cart_id": f"k-{n}", "total": 100 + n % 100},
                            }
                        ),
                        source="bench",
                        received_at=start,
                    )
                    for n in chunk
                ]
            )
        entered = counter.totals()
        own: list[Counts] = []
        jobs = _drain(services, clock, counter, own)
        elapsed = time.perf_counter() - began
        drained = counter.totals()
        with services.db.read() as conn:
            visits = bench.step_visits(conn)
            intents = bench.intents(conn)
            active = bench.active_runs(conn)
    finally:
        counter.detach()
        services.close()
    step_count = visits + customers  # every recorded step, plus each entry
    result: dict[str, Any] = {
        "customers": customers,
        "delivery": deliver,
        "steps": step_count,
        "jobs": jobs,
        "intents": intents,
        "still_active": active,
        "seconds": round(elapsed, 1),
        "steps_per_s": round(step_count / elapsed),
    }
    if count:
        worked = drained - entered
        for read in own:
            worked = worked - read
        result["cost"] = {
            "entry_events": figures(entered - entering, "event", customers),
            "steps": figures(worked, "step", step_count),
            "statements_per_step_target": STATEMENTS_PER_STEP_TARGET,
        }
    return result


def _drain(services: Any, clock: Any, counter: StatementCounter, own: list[Counts]) -> int:
    """Run every job, advancing the clock to the next one due; what the benchmark reads to
    find it is counted into `own`, apart from the worker's work."""
    from parcours.runtime.clock import from_ms

    ran = services.worker.run_due()
    while True:
        with counter.excluded(own), services.db.read() as conn:
            upcoming = next_run_at(conn, services.worker.queues)
        if upcoming is None:
            return int(ran)
        clock.set(from_ms(max(int(upcoming), clock.now_ms())))
        ran += services.worker.run_due()


async def _send_orders(url: str, rate: int, seconds: float) -> None:
    """Order events at `rate` per second, through `bench ingest`'s paced load client."""
    from parcours.bench.ingest import _request, paced_calls

    encoder = msgspec.json.Encoder()
    requests = [
        _request(
            "/v1/track",
            encoder.encode(
                {
                    "userId": f"buyer-{number}",
                    "event": "Order Completed",
                    "messageId": f"order-{number}",
                    "properties": {"order_id": f"o-{number}", "total": 20},
                    "context": {"traits": {"email": f"buyer-{number}@example.com"}},
                }
            ),
        )
        for number in range(int(rate * seconds))
    ]
    _, failures = await paced_calls(url, rate, requests)
    if failures:
        raise RuntimeError(f"{failures} of {len(requests)} order events were not stored")


def reaction(database_url: str, data_dir: Path, rate: int, seconds: float) -> dict[str, Any]:
    """With the real clock: how long from an event accepted to its message intent."""
    from parcours.journeys import versions as journeys
    from parcours.runtime.db import Database, migrate

    db = Database(database_url)
    migrate(db)
    journeys.publish(db, INSTANT, "bench", "bench reviewer", int(time.time() * 1000))
    db.dispose()
    with Server(database_url, data_dir) as server:
        asyncio.run(_send_orders(server.url, rate, seconds))
        time.sleep(3)  # let the last reactions land
    db = Database(database_url)
    with db.read() as conn:
        rows = bench.event_to_intent_delays(conn)
    db.dispose()
    delays = [float(value) for value in rows]
    return {
        "rate_per_s": rate,
        "events": int(rate * seconds),
        "intents": len(delays),
        "p50_ms": percentile(delays, 0.5),
        "p99_ms": percentile(delays, 0.99),
    }


def _customers_and_events(start: int, count: int, name: str) -> Iterator[list[Any]]:
    """Per chunk of 1,000: identify (with an email) then the event that enters (made as
    they are needed, so that the benchmark's own events do not weigh on its memory)."""
    from parcours.runtime.clock import iso
    from parcours.tracking import parse_event

    encoder = msgspec.json.Encoder()
    for offset in range(0, count, 1000):
        chunk = []
        for n in range(offset, min(count, offset + 1000)):
            for kind, body in (
                ("identify", {"traits": {"email": f"w-{n}@example.com"}}),
                ("track", {"event": name, "properties": {"order_id": f"o-{n}"}}),
            ):
                chunk.append(
                    parse_event(
                        encoder.encode(
                            {
                                "type": kind,
                                "userId": f"w-{n}",
                                "messageId": f"{kind}-{n}",
                                "timestamp": iso(start),
                                **body,
                            }
                        ),
                        source="bench",
                        received_at=start,
                    )
                )
        yield chunk


def workers(database_url: str, data_dir: Path, customers: int, count: int) -> dict[str, Any]:
    """A backlog of customers entering the order-confirmation journey (entry, send with
    its policy checks, delivery to the sandbox) is worked through by `count` `parcours
    worker` processes (PostgreSQL with `--postgres`, else SQLite, whose one writer at a
    time makes one process its fair figure); steps and messages per second, from the
    processes' start to the last message, and in the steady middle (from a tenth of the
    messages delivered to nine tenths: what more workers add, without the processes'
    start, which the two of a pair pay at once on two cores)."""
    import os
    import subprocess
    import sys

    from parcours.journeys import versions as journeys
    from parcours.runtime.clock import SystemClock
    from parcours.runtime.settings import Settings
    from parcours.services import Services

    settings = Settings(data_dir=data_dir, database_url=database_url)
    services = Services.open(settings, clock=SystemClock())  # ingest only, no worker
    try:
        now = services.clock.now_ms()
        journeys.publish(services.db, INSTANT, "bench", "bench reviewer", now)
        for chunk in _customers_and_events(now, customers, "Order Completed"):
            services.writer.append_sync(chunk)
        env = {**os.environ, "PARCOURS_DATABASE_URL": database_url, "PARCOURS_LOG_LEVEL": "error"}
        command = [
            str(Path(sys.executable).parent / "parcours"),
            "worker",
            "--data-dir",
            str(data_dir),
        ]
        began = time.perf_counter()
        marks: dict[int, float] = {}  # a tenth, nine tenths of the messages -> when
        processes = [
            subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(count)
        ]
        try:
            while True:
                with services.db.read() as conn:
                    done = bench.messages_done(conn)
                for tenths in (1, 9):
                    if tenths not in marks and done * 10 >= customers * tenths:
                        marks[tenths] = time.perf_counter()
                if done >= customers:
                    break
                if all(process.poll() is not None for process in processes):
                    raise RuntimeError("every worker process exited")
                time.sleep(0.1)
            elapsed = time.perf_counter() - began
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(30)
        with services.db.read() as conn:
            visits = bench.step_visits(conn)
    finally:
        services.close()
    steps = visits + customers
    return {
        "workers": count,
        "customers": customers,
        "steps": steps,
        "seconds": round(elapsed, 1),
        "steps_per_s": round(steps / elapsed),
        "messages_per_s": round(customers / elapsed),
        "steady_messages_per_s": round(0.8 * customers / max(marks[9] - marks[1], 1e-3)),
    }


WAITING = """\
id: waiting
name: Thirty days after an order
entry: {event: Order Completed}
steps:
  - wait: 30d
  - send: {channel: email, template: review-request, purpose: marketing}
"""


def waiting_runs(database_url: str, data_dir: Path, customers: int) -> dict[str, Any]:
    """Memory of a process (ingest and worker) while `customers` runs wait 30 days."""
    from parcours.journeys import versions as journeys
    from parcours.runtime.clock import SimulatedClock
    from parcours.runtime.settings import Settings
    from parcours.services import Services

    start = int(datetime(2026, 11, 23, 9, 0, tzinfo=UTC).timestamp() * 1000)
    process = psutil().Process()
    services = Services.open(
        Settings(data_dir=data_dir, database_url=database_url), clock=SimulatedClock(start)
    )
    samples: list[tuple[int, float]] = []
    try:
        journeys.publish(services.db, WAITING, "bench", "bench reviewer", start)
        began = time.perf_counter()
        for number, chunk in enumerate(_customers_and_events(start, customers, "Order Completed")):
            services.writer.append_sync(chunk)
            services.worker.run_due()
            if number % 50 == 0:
                samples.append((number * 1000, process.memory_info().rss / 2**20))
        services.worker.run_due()
        elapsed = time.perf_counter() - began
        samples.append((customers, process.memory_info().rss / 2**20))
        with services.db.read() as conn:
            waiting = bench.active_runs(conn)
            jobs = bench.queued_jobs(conn)
    finally:
        services.close()
    return {
        "customers": customers,
        "waiting_runs": waiting,
        "timer_jobs": jobs,
        "seconds": round(elapsed, 1),
        "rss_mb": [(n, round(mb, 1)) for n, mb in samples],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="parcours bench journeys", description=__doc__)
    parser.add_argument(
        "--mode", choices=["steps", "reaction", "workers", "waiting", "all"], default="all"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--postgres", metavar="URL")
    parser.add_argument(
        "--without-delivery",
        action="store_true",
        help="steps mode: the journey engine alone (no message rendered or handed over)",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        metavar="N",
        help="with --postgres: reach PostgreSQL through a proxy on loopback that adds N ms to "
        "each round trip (N/2 each way), as from another machine",
    )
    parser.add_argument(
        "--no-count",
        action="store_true",
        help="steps mode: do not count statements (counting costs about 1 µs a statement)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.latency_ms is not None and not args.postgres:
        parser.error("--latency-ms needs --postgres URL")
    psutil()  # before anything runs: a missing psutil is said at once
    results: dict[str, Any] = {
        "database": "postgresql" if args.postgres else "sqlite",
        "latency_ms": args.latency_ms,
    }

    if args.mode in ("steps", "all"):
        with measured_database(args.postgres, args.latency_ms) as (url, directory, wire):
            results["steps"] = steps(
                url,
                directory / "data",
                args.customers,
                deliver=not args.without_delivery,
                wire=wire,
                count=not args.no_count,
            )
    if args.mode in ("reaction", "all"):
        with measured_database(args.postgres, args.latency_ms) as (url, directory, _):
            results["reaction"] = reaction(url, directory / "data", args.rate, args.seconds)
    if args.mode == "workers":
        results["workers"] = []
        for count in args.workers:
            with measured_database(args.postgres, args.latency_ms) as (url, directory, _):
                results["workers"].append(workers(url, directory / "data", args.customers, count))
    if args.mode == "waiting":
        with measured_database(args.postgres, args.latency_ms) as (url, directory, _):
            results["waiting"] = waiting_runs(url, directory / "data", args.customers)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"database: {results['database']}{_added(args.latency_ms)}")
    if "steps" in results:
        s = results["steps"]
        print(
            f"steps ({'with' if s['delivery'] else 'without'} delivery): {s['customers']:,} "
            f"customers through the abandoned cart, {s['steps']:,}"
            f" steps in {s['seconds']} s: {s['steps_per_s']:,} steps/s (target >= 5,000 on "
            f"SQLite); {s['intents']:,} intents, {s['still_active']} runs left active"
        )
        if "cost" in s:
            print(_cost_report(s))
    for w in results.get("workers", []):
        print(
            f"{w['workers']} worker process(es): {w['steps']:,} steps in {w['seconds']} s: "
            f"{w['steps_per_s']:,} steps/s, {w['messages_per_s']:,} messages delivered/s "
            f"({w['steady_messages_per_s']:,}/s from a tenth to nine tenths)"
        )
    if "waiting" in results:
        r = results["waiting"]
        print(
            f"{r['waiting_runs']:,} runs waiting ({r['timer_jobs']:,} timer jobs) after "
            f"{r['seconds']} s; process memory (customers, MB): {r['rss_mb']}"
        )
    if "reaction" in results:
        r = results["reaction"]
        print(
            f"event to intent at {r['rate_per_s']} events/s: p50 {r['p50_ms']:.0f} ms, p99 "
            f"{r['p99_ms']:.0f} ms (target p99 < 200 ms); {r['intents']} of {r['events']} "
            "intents written"
        )
    return 0


def _added(latency_ms: float | None) -> str:
    if latency_ms is None:
        return ""
    return f", {latency_ms:g} ms added to each round trip (a proxy on loopback, half each way)"


def _cost_report(s: dict[str, Any]) -> str:
    """The statements and round trips of a steps run, with issue 19's target."""
    cost = s["cost"]
    engine = cost["steps"]
    per_step = engine["per_unit"]["statements"]
    target = cost["statements_per_step_target"]
    if s["delivery"]:
        verdict = "with delivery; the target is the engine's alone: --without-delivery"
    else:
        met = per_step is not None and per_step <= target
        verdict = f"the engine alone: {'met' if met else 'not met'}"
    return "\n".join(
        [
            "cost, counted in this process:",
            f"  entry events appended: {describe(cost['entry_events'])}",
            f"  journey steps: {describe(engine)}",
            f"  statements per journey step: {per_step} (target <= {target}; {verdict})",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
