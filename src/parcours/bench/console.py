"""`parcours bench console`: the console's server time with a brand's worth of data.

Loads `--customers` customers and `--events` events through the log's own door (the
writer, in this process: every profile, identity and count is what the API would have
made), one customer with a long timeline, a live journey and a segment; then asks each
main page, customer search (by the start of an email, and by a part of a name) and the
long customer's page `--repeat` times through the application in this process (no
network: what is measured is the server's time), and prints each one's p50 and p95
against the target (p95 < 200 ms; issue 20)."""

from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any

import msgspec

from parcours.bench.common import percentile, scratch_database

TARGET_MS = 200.0
LONG_TIMELINE = 5_000
FIRST_NAMES = ("Léa", "Hugo", "Chloé", "Louis", "Emma", "Jules", "Inès", "Gabriel", "Jade")
LAST_NAMES = ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit")
EVENT_NAMES = ("Product Viewed", "Product Added", "Cart Viewed", "Order Completed")


def _load(services: Any, customers: int, events: int, long_timeline: int, seed: int = 11) -> int:
    """Customers (identify), their events, and one customer with a long timeline; the
    long customer's id."""
    from parcours.tracking import parse_event

    rng = random.Random(seed)
    now = services.clock.now_ms()
    encode = msgspec.json.Encoder().encode
    batch: list[Any] = []
    made = 0

    def add(document: dict[str, Any]) -> None:
        nonlocal made
        made += 1
        document["messageId"] = f"bench-{made}"
        batch.append(parse_event(encode(document), source="api", received_at=now))
        if len(batch) >= 2_000:
            services.writer.append_sync(batch)
            batch.clear()

    for number in range(customers):
        add(
            {
                "type": "identify",
                "userId": f"u{number}",
                "traits": {
                    "email": f"customer{number}@example.com",
                    "first_name": rng.choice(FIRST_NAMES),
                    "last_name": f"{rng.choice(LAST_NAMES)}{number}",
                },
            }
        )
    for _ in range(max(0, events - customers - long_timeline)):
        name = rng.choice(EVENT_NAMES)
        properties: dict[str, Any] = {"sku": f"SKU-{rng.randrange(500)}"}
        if name == "Order Completed":
            properties |= {
                "order_id": f"o{made}",
                "total": rng.randrange(20, 300),
                "currency": "EUR",
            }
        at = now - rng.randrange(30 * 86_400_000)
        add(
            {
                "type": "track",
                "userId": f"u{rng.randrange(customers)}",
                "event": name,
                "properties": properties,
                "timestamp": _iso(at),
            }
        )
    for number in range(long_timeline):
        add(
            {
                "type": "track",
                "userId": "u0",
                "event": "Product Viewed",
                "properties": {"sku": f"SKU-{number}"},
                "timestamp": _iso(now - number * 60_000),
            }
        )
    if batch:
        services.writer.append_sync(batch)
    with services.db.read() as conn:
        from parcours.customers import profiles

        return profiles.resolve(conn, "u0", "FR")


def _iso(ms: int) -> str:
    from parcours.runtime.clock import iso

    shown = iso(ms)
    assert shown is not None
    return shown


def run(
    database_url: str,
    data_dir: Any,
    customers: int,
    events: int,
    repeat: int,
    long_timeline: int = LONG_TIMELINE,
) -> dict[str, Any]:
    from litestar.testing import TestClient

    from parcours import accounts, analytics
    from parcours.app import create_app
    from parcours.console import warm_templates
    from parcours.console.access import COOKIE
    from parcours.journeys import ready_made_source
    from parcours.journeys import versions as journeys
    from parcours.runtime.secrets import instance_secret
    from parcours.runtime.settings import Settings
    from parcours.segments import catalog
    from parcours.services import Services

    settings = Settings(data_dir=data_dir, database_url=database_url)
    services = Services.open(settings)
    try:
        source = ready_made_source("order-confirmation")
        assert source is not None
        journeys.publish(services.db, source, "bench", "bench reviewer", services.clock.now_ms())
        started = time.perf_counter()
        long_customer = _load(services, customers, events, long_timeline)
        loaded_s = time.perf_counter() - started
        # What a running worker's `analytics.KeepUp` does while the events come in: the
        # overview's counts are current when a person opens it.
        analytics.catch_up(services.db, limit=events + customers * 10)
        catalog.save(
            services.db,
            "id: repeat-buyers\nname: Repeat buyers\nconditions:\n"
            "  - events: {name: Order Completed, count: {gte: 2}}\n",
            "bench",
            services.clock.now_ms(),
            mode="create",
        )
        now = services.clock.now_ms()
        token = accounts.setup_link_token(services.db, now)
        assert token is not None
        accounts.accept_invitation(
            services.db,
            token,
            email="owner@bench.example",
            name="Owner",
            password="a bench passphrase",
            now=now,
        )
        signed = accounts.sign_in(
            services.db,
            email="owner@bench.example",
            password="a bench passphrase",
            client="bench",
            now=now,
        )
        pages = {
            "overview": "/console/",
            "customers: search by the start of an email": "/console/customers?q=customer4242",
            "customers: search by a part of a name": "/console/customers?q=Dubois42",
            f"a customer with {long_timeline:,} events": f"/console/customers/{long_customer}",
            "journeys": "/console/journeys",
            "a journey": "/console/journeys/order-confirmation",
            "segments": "/console/segments",
            "messages": "/console/outbox",
            "templates": "/console/templates",
            "audit log": "/console/audit",
        }
        timings: dict[str, dict[str, float]] = {}
        warm_templates()  # as `parcours serve` does when it starts
        with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
            secret = instance_secret(services.db, "console-cookie", now)  # the app's own
            client.cookies.set(COOKIE, accounts.sign_cookie(secret, signed.token))
            client.get("/console/")  # the first overview counts the whole log once
            for label, path in pages.items():
                taken: list[float] = []
                for _ in range(repeat):
                    begun = time.perf_counter()
                    answer = client.get(path)
                    taken.append((time.perf_counter() - begun) * 1000)
                    if answer.status_code != 200:
                        raise RuntimeError(f"{path} answered {answer.status_code}")
                timings[label] = {
                    "p50_ms": round(percentile(taken, 0.5), 1),
                    "p95_ms": round(percentile(taken, 0.95), 1),
                }
    finally:
        services.close()
    return {
        "customers": customers,
        "events": events,
        "load_s": round(loaded_s, 1),
        "repeat": repeat,
        "pages": timings,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="parcours bench console", description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--postgres", metavar="URL")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with scratch_database(args.postgres) as (url, directory):
        results = run(url, directory, args.customers, args.events, args.repeat)
    results["database"] = "postgresql" if args.postgres else "sqlite"
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"console ({results['database']}): {results['customers']:,} customers, "
        f"{results['events']:,} events loaded in {results['load_s']} s; "
        f"each page {results['repeat']} times, server time in this process"
    )
    worst = 0.0
    for label, figures in results["pages"].items():
        worst = max(worst, figures["p95_ms"])
        print(f"  {label}: p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms")
    verdict = "met" if worst < TARGET_MS else "NOT met"
    print(f"worst p95 {worst} ms (target < {TARGET_MS:.0f} ms): {verdict}")
    return 0
