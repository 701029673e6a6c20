"""Export and erasure reach every table that holds something about the person, whichever
module wrote it: after erasure, no row anywhere names them or holds their data."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import inspect, text

from parcours.customers import profiles as customers
from parcours.messaging import passes, subscriptions
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.db import sql
from parcours.services import Services
from tests.test_journeys_engine import HOUR, advance, opt_in, publish, track

JOURNEY = """\
id: erasure-check
name: Erasure check
entry: {event: Go erasure}
steps:
  - send: {channel: email, template: erasure-hello, purpose: marketing}
  - wait: 3d
  - send: {channel: email, template: erasure-again, purpose: marketing}
"""
PERSON = "zoe-erase-me"
OTHER = "max-keeps-his"


def _give_everything(services: Services, user: str) -> int:
    """A journey run waiting with a message sent, an order (and the referral code issued
    for it), a push subscription, a Wallet pass and a suppressed address."""
    opt_in(services, user)
    track(services, user, "Go erasure")
    track(services, user, "Order Completed", order_id=f"order-of-{user}", total=42)
    advance(services, services.clock, HOUR)  # type: ignore[arg-type]
    now = services.clock.now_ms()
    with services.db.write() as conn:
        customer = customers.resolve(conn, user, "FR")
        subscriptions.save(
            conn,
            customer,
            {"endpoint": f"https://push.example/{user}", "keys": {"p256dh": "k", "auth": "a"}},
            f"browser of {user}",
            now,
        )
        passes.issue(conn, customer, "loyalty", {"member": user}, now)
        sql(
            conn,
            "INSERT INTO suppressions (channel, address, reason, customer_id, created_at) "
            "VALUES ('sms', :a, 'invalid number', :c, :now)",
            {"a": f"+33 {user}", "c": customer, "now": now},
        )
    return customer


def _every_row(services: Services) -> dict[str, list[dict[str, Any]]]:
    with services.db.read() as conn:
        tables = inspect(conn).get_table_names()
        return {
            table: [dict(row._mapping) for row in conn.execute(text(f"SELECT * FROM {table}"))]
            for table in tables
        }


def test_export_holds_and_erasure_leaves_no_row_about_the_person_in_any_table(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, JOURNEY)
    erased = _give_everything(services, PERSON)
    kept = _give_everything(services, OTHER)
    before = _every_row(services)
    holding = {
        table
        for table, rows in before.items()
        if any(PERSON in repr(row) or row.get("customer_id") == erased for row in rows)
    }
    # What the person left behind, in the tables of several modules.
    assert {
        "events",
        "identities",
        "consents",
        "commerce_orders",
        "journey_runs",
        "jobs",
        "outbox",
        "push_subscriptions",
        "wallet_passes",
        "referral_codes",
        "suppressions",
    } <= holding

    # The export holds the same rows (credentials left out), as JSON.
    exported = customers.export(services.db, services.people, PERSON, "FR")
    held = exported["held_elsewhere"]
    # The orders once, as the export shows them (money with its decimals), not again
    # among the other tables.
    assert [o["order_id"] for o in exported["orders"]] and "commerce_orders" not in held
    assert {"outbox", "journey_runs", "push_subscriptions", "wallet_passes"} <= set(held)
    assert "referral_codes" in held and "jobs" not in held
    assert held["push_subscriptions"][0]["endpoint"] == f"https://push.example/{PERSON}"
    assert "auth" not in held["push_subscriptions"][0]
    assert "auth_token" not in held["wallet_passes"][0]
    assert {row["template"] for row in held["outbox"]} == {"erasure-hello"}
    json.dumps(exported)

    erasure = customers.erase(services.db, services.people, PERSON, "FR", clock.now_ms(), "test")

    after = _every_row(services)
    for table, rows in after.items():
        for row in rows:
            if table == "events" and row["name"] == "Customer Erased":
                assert PERSON not in repr(row)
                continue
            assert PERSON not in repr(row), (table, row)
            if table != "customers":
                assert row.get("customer_id") != erased, (table, row)
    (profile,) = [row for row in after["customers"] if row["id"] == erased]
    assert profile["erased_at"] is not None and profile["traits"] == "{}"
    assert {"outbox", "journey_runs", "jobs", "push_subscriptions", "wallet_passes"} <= set(
        erasure.other
    )
    # The other customer keeps everything.
    for table in holding - {"events"}:
        assert sum(1 for row in after[table] if row.get("customer_id") == kept) == sum(
            1 for row in before[table] if row.get("customer_id") == kept
        ), table
    # Nothing more is sent to the erased person: their timer went with them.
    advance(services, clock, 4 * 24 * HOUR, step=HOUR)
    with services.db.read() as conn:
        sent_to = conn.execute(
            text("SELECT count(*) FROM outbox WHERE customer_id = :c"), {"c": erased}
        ).scalar_one()
    assert sent_to == 0
