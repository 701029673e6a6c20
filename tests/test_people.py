"""Each package follows a merge and an erasure of a person in its own hook
(customers/people.py), and no table that names a person is left without one."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from sqlalchemy import Connection

from parcours.customers import profiles as customers
from parcours.customers.people import People
from parcours.journeys.engine import JourneyEngine
from parcours.messaging import passes, subscriptions
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.db import sql
from parcours.runtime.settings import Settings
from parcours.schema import load_all_tables
from parcours.services import Services, commerce_of, people_hooks
from tests.conftest import START, make_event

MINUTE = 60_000
KEYS = {"p256dh": "k", "auth": "a"}


def _registry() -> People:
    clock = SimulatedClock(START)
    return people_hooks(JourneyEngine(clock, "FR"), commerce_of(Settings(), clock))


def _person_tables() -> set[str]:
    """Every table with a column naming a person (the profile itself aside)."""
    found = set()
    for table in load_all_tables().tables.values():
        columns = {"customer_id", *customers.PERSON_COLUMNS.get(table.name, ())}
        if table.name != "customers" and columns & set(table.columns.keys()):
            found.add(table.name)
    return found


def test_every_table_naming_a_person_is_cleared_by_exactly_one_erase_hook() -> None:
    # A new table with a customer_id and no hook fails here: register one beside it
    # (docs/core.md, "Erasure").
    cleared = _registry().erased_tables
    assert set(cleared) == _person_tables()
    assert cleared["events"] == "log"
    assert cleared["referral_conversions"] == "loyalty"
    assert cleared["jobs"] == "queue"


def test_merge_hooks_run_the_events_first_then_the_journeys_twin_rule() -> None:
    assert _registry().merge_names == [
        "journeys",
        "log",
        "queue",
        "messaging",
        "loyalty",
        "commerce",
    ]


def _nothing(conn: Connection, customer_ids: Sequence[int]) -> dict[str, int]:
    return {"outbox": 0}


def test_a_table_is_cleared_by_one_hook_only_and_a_hook_deletes_only_what_it_named() -> None:
    people = People()
    people.on_erase("messaging", ["outbox"], _nothing)
    with pytest.raises(ValueError, match="'outbox' is already cleared by the 'messaging' hook"):
        people.on_erase("other", ["outbox"], _nothing)
    with pytest.raises(ValueError, match="already registered"):
        people.on_erase("messaging", ["suppressions"], _nothing)
    wrong = People()
    wrong.on_erase("segments", ["segment_memberships"], _nothing)
    with pytest.raises(RuntimeError, match="deleted from \\['outbox'\\], which it did not name"):
        wrong.erase(None, [1])  # type: ignore[arg-type]


def test_a_merged_profiles_rows_in_every_package_go_to_the_survivor(
    services: Services,
) -> None:
    services.writer.append_sync(
        [
            make_event("identify", anonymousId="tablet", traits={"plan": "a"}, at=START),
            make_event("identify", userId="u-max", traits={"vip": True}, at=START + MINUTE),
        ]
    )
    now = services.clock.now_ms()
    with services.db.write() as conn:
        older = customers.resolve(conn, "tablet", "FR")
        newer = customers.resolve(conn, "u-max", "FR")
        for customer in (older, newer):
            subscriptions.save(
                conn,
                customer,
                {"endpoint": f"https://push.example/{customer}", "keys": KEYS},
                "a browser",
                now,
            )
            passes.issue(conn, customer, "loyalty", {"member": str(customer)}, now)
        sql(
            conn,
            "INSERT INTO referral_codes (code, customer_id, issued_at) VALUES ('MAX-1', :c, :n)",
            {"c": newer, "n": now},
        )
    # Logging in on the tablet proves they are one person: the older profile survives.
    services.writer.append_sync(
        [make_event("identify", anonymousId="tablet", userId="u-max", at=START + 2 * MINUTE)]
    )
    with services.db.read() as conn:
        assert customers.resolve(conn, "u-max", "FR") == older
        held = {
            table: sorted(
                sql(
                    conn,
                    f"SELECT customer_id FROM {table} WHERE customer_id IN (:a, :b)",
                    {
                        "a": older,
                        "b": newer,
                    },
                ).scalars()
            )
            for table in ("events", "push_subscriptions", "wallet_passes", "referral_codes")
        }
    assert held["push_subscriptions"] == [older, older]
    assert held["wallet_passes"] == [older, older]
    assert held["referral_codes"] == [older]
    assert newer not in held["events"] and len(held["events"]) == 4  # 3 identifies, 1 merge
