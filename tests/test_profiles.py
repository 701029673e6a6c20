"""Profiles: traits that late events never overwrite, computed traits, the consent ledger."""

from __future__ import annotations

from typing import Any

import pytest

from parcours.customers import profiles as customers
from parcours.runtime.clock import iso
from parcours.services import Services
from parcours.tracking import EventError
from tests.conftest import START, make_event

HOUR = 3_600_000
DAY = 24 * HOUR


def append(services: Services, *events: Any) -> None:
    services.writer.append_sync(list(events))


def profile_of(services: Services, ref: str) -> customers.CustomerProfile:
    with services.db.read() as conn:
        return customers.profile(conn, customers.resolve(conn, ref, "FR"))


def order(user: str, order_id: str, total: Any, currency: str = "EUR", at: int = START) -> Any:
    return make_event(
        "track",
        userId=user,
        event="Order Completed",
        at=at,
        properties={"order_id": order_id, "total": total, "currency": currency},
    )


def test_a_late_identify_never_overwrites_a_newer_trait(services: Services) -> None:
    append(services, make_event("identify", userId="u", traits={"city": "Lyon"}, at=START + DAY))
    # Sent earlier by a client that was offline, received later.
    append(
        services,
        make_event("identify", userId="u", traits={"city": "Paris", "vip": True}, at=START),
    )
    profile = profile_of(services, "u")
    assert profile.traits["city"] == "Lyon"
    assert profile.traits["vip"] is True


def test_corrected_time_orders_traits_when_the_client_clock_is_off(services: Services) -> None:
    # The phone's clock is a day ahead: its timestamp says tomorrow, but sentAt shows the
    # offset, so the corrected time is the real one and a newer server-side value wins.
    append(
        services,
        make_event(
            "identify", userId="u", traits={"size": "M"}, at=START + HOUR, received_at=START + HOUR
        ),
    )
    skewed = make_event(
        "identify",
        userId="u",
        traits={"size": "S"},
        timestamp=iso(START + DAY),
        sentAt=iso(START + DAY + 1000),
        received_at=START + 1000,
    )
    assert skewed.occurred_at == START
    append(services, skewed)
    assert profile_of(services, "u").traits["size"] == "M"


def test_orders_count_once_per_order_id_and_sum_per_currency(services: Services) -> None:
    append(
        services,
        order("buyer", "o-1", 100, at=START),
        order("buyer", "o-1", 100, at=START + 1000),  # reported again by another source
        order("buyer", "o-2", "50.50", at=START + DAY),
        order("buyer", "o-3", 20, currency="usd", at=START + 2 * DAY),
    )
    computed = profile_of(services, "buyer").computed
    assert computed["orders_count"] == 3
    assert computed["revenue"]["EUR"] == {
        "orders": 2,
        "total_spent": "150.50",
        "average_order_value": "75.25",
    }
    assert computed["revenue"]["USD"]["total_spent"] == "20.00"
    assert computed["first_order_at"] == iso(START)
    assert computed["last_order_at"] == iso(START + 2 * DAY)


def test_cancelled_order_leaves_the_totals_and_refund_is_subtracted(services: Services) -> None:
    append(services, order("b", "o-1", 100), order("b", "o-2", 60, at=START + HOUR))
    append(
        services,
        make_event("track", userId="b", event="Order Cancelled", properties={"order_id": "o-2"}),
    )
    append(
        services,
        make_event(
            "track", userId="b", event="Order Refunded", properties={"order_id": "o-1", "total": 30}
        ),
    )
    computed = profile_of(services, "b").computed
    assert computed["orders_count"] == 1
    assert computed["revenue"]["EUR"]["total_spent"] == "70.00"
    assert computed["last_order_at"] == iso(START)


def test_order_total_falls_back_to_revenue_then_products(services: Services) -> None:
    append(
        services,
        make_event(
            "track",
            userId="c",
            event="Order Completed",
            properties={"order_id": "r", "revenue": 12, "currency": "EUR"},
        ),
        make_event(
            "track",
            userId="c",
            event="Order Completed",
            properties={
                "order_id": "p",
                "currency": "EUR",
                "products": [{"price": 10, "quantity": 2}, {"price": 5}],
            },
        ),
    )
    assert profile_of(services, "c").computed["revenue"]["EUR"]["total_spent"] == "37.00"


def test_time_zone_locale_country_and_last_seen(services: Services) -> None:
    append(
        services,
        make_event(
            "page",
            userId="d",
            name="Home",
            at=START,
            context={"locale": "fr-FR", "location": {"country": "fr"}},
        ),
    )
    computed = profile_of(services, "d").computed
    # No time zone from the device: the country's.
    assert computed["timezone"] == "Europe/Paris"
    assert computed["timezone_source"] == "country"
    assert computed["country"] == "FR"
    assert computed["locale"] == "fr-FR"
    append(
        services,
        make_event(
            "track",
            userId="d",
            event="App Opened",
            at=START + DAY,
            context={"timezone": "America/Montreal"},
        ),
    )
    append(
        services,
        make_event(
            "track", userId="d", event="Old", at=START - DAY, context={"timezone": "Asia/Tokyo"}
        ),
    )
    computed = profile_of(services, "d").computed
    assert computed["timezone"] == "America/Montreal"
    assert computed["timezone_source"] == "context"
    assert computed["last_seen_at"] == iso(START + DAY)
    assert computed["first_seen_at"] == iso(START - DAY)


def test_an_unknown_time_zone_is_ignored(services: Services) -> None:
    append(services, make_event("page", userId="e", context={"timezone": "Mars/Olympus"}))
    assert profile_of(services, "e").computed["timezone"] is None


def test_consent_from_identify_traits_is_recorded_with_source_and_wording(
    services: Services,
) -> None:
    append(
        services,
        make_event(
            "identify",
            userId="f",
            at=START,
            traits={
                "email": "f@example.com",
                "consent": {
                    "email": {"marketing": True, "transactional": "granted"},
                    "sms": {"marketing": False},
                    "source": "checkout",
                    "wording": "Send me offers",
                    "wording_version": "v2",
                },
            },
        ),
    )
    profile = profile_of(services, "f")
    states = {(c.channel, c.purpose): c for c in profile.consents}
    assert states[("email", "marketing")].status == "granted"
    assert states[("email", "marketing")].wording == "Send me offers"
    assert states[("email", "marketing")].source == "checkout"
    assert states[("sms", "marketing")].status == "withdrawn"
    assert "consent" not in profile.traits


def test_withdrawal_wins_over_an_older_grant_that_arrives_later(services: Services) -> None:
    append(
        services,
        make_event(
            "identify",
            userId="g",
            at=START + HOUR,
            traits={"consent": {"email": {"marketing": False}}},
        ),
    )
    append(
        services,
        make_event(
            "identify", userId="g", at=START, traits={"consent": {"email": {"marketing": True}}}
        ),
    )
    append(
        services,
        make_event(
            "identify",
            userId="g",
            at=START + HOUR,
            traits={"consent": {"sms": {"marketing": True}}},
        ),
    )
    append(
        services,
        make_event(
            "identify",
            userId="g",
            at=START + HOUR,
            traits={"consent": {"sms": {"marketing": False}}},
        ),
    )
    states = {(c.channel, c.purpose): c.status for c in profile_of(services, "g").consents}
    assert states[("email", "marketing")] == "withdrawn"
    # Grant and withdrawal at the same instant: the withdrawal wins.
    assert states[("sms", "marketing")] == "withdrawn"


def test_a_newer_grant_after_a_withdrawal_is_in_force(services: Services) -> None:
    append(
        services,
        make_event(
            "identify", userId="h", at=START, traits={"consent": {"push": {"marketing": False}}}
        ),
    )
    append(
        services,
        make_event(
            "identify",
            userId="h",
            at=START + DAY,
            traits={"consent": {"push": {"marketing": True}}},
        ),
    )
    states = {(c.channel, c.purpose): c.status for c in profile_of(services, "h").consents}
    assert states[("push", "marketing")] == "granted"


@pytest.mark.parametrize(
    ("consent", "field"),
    [
        ({"fax": {"marketing": True}}, "traits.consent.fax"),
        ({"email": {"spam": True}}, "traits.consent.email.spam"),
        ({"email": {"marketing": "maybe"}}, "traits.consent.email.marketing"),
        ({"email": True}, "traits.consent.email"),
        ("yes", "traits.consent"),
    ],
)
def test_malformed_consent_is_refused_naming_the_field(consent: Any, field: str) -> None:
    with pytest.raises(EventError) as caught:
        make_event("identify", userId="i", traits={"consent": consent})
    assert caught.value.field == field


def test_consent_updated_event_needs_a_known_channel() -> None:
    with pytest.raises(EventError) as caught:
        make_event(
            "track",
            userId="j",
            event="Consent Updated",
            properties={"channel": "pigeon", "purpose": "marketing", "status": True},
        )
    assert caught.value.field == "properties.channel"


def test_two_transactions_on_one_customer_take_turns_and_lose_nothing(
    postgres_url: str, tmp_path: Any
) -> None:
    """PostgreSQL: a worker records a message opened (moving last seen) in a transaction
    still open while the writer stores an identify for the same person. The writer waits
    for it and reads the profile after: both changes are kept."""
    import threading

    from parcours.customers.projection import identity_resolver
    from parcours.log import Reactions, append_events, internal_event
    from parcours.runtime.clock import SimulatedClock
    from parcours.runtime.settings import Settings
    from tests.conftest import truncate_all

    truncate_all(postgres_url)
    opened = Services.open(
        Settings(data_dir=tmp_path, database_url=postgres_url), clock=SimulatedClock(START)
    )
    try:
        append(opened, make_event("identify", userId="ines", at=START, traits={"plan": "a"}))
        with opened.db.read() as conn:
            customer = customers.resolve(conn, "ines", "FR")
        identify = make_event("identify", userId="ines", at=START + 1000, traits={"vip": True})
        with opened.db.write() as conn:
            seen = internal_event(
                customer, "Message Opened", {"channel": "email"}, START + 5000, "m-1", "channel"
            )
            reactions = Reactions(identity_resolver("FR"), merges=opened.people.follow_merges)
            append_events(conn, [[seen]], START + 5000, reactions)
            writer = threading.Thread(target=append, args=(opened, identify))
            writer.start()
            writer.join(0.5)  # the writer reaches the customer's row and waits
        writer.join(30)
        profile = profile_of(opened, "ines")
    finally:
        opened.close()
    assert profile.traits["vip"] is True
    assert profile.computed["last_seen_at"] == iso(START + 5000)


def test_two_writers_about_different_people_do_not_wait_for_each_other(
    postgres_url: str, tmp_path: Any
) -> None:
    """PostgreSQL: a transaction holds the locks of a group of 200 people (as a second
    writer would while it projects them); a writer's group about 200 others is stored at
    once, not after that transaction ends. With 4,096 buckets the two groups' keys shared
    some (about ten), and the second writer waited."""
    import threading

    from parcours.customers.projection import Projector
    from parcours.log.append import _lock_keys
    from parcours.runtime.clock import SimulatedClock
    from parcours.runtime.db import lock_keys
    from parcours.runtime.settings import Settings
    from tests.conftest import truncate_all

    def group(prefix: str) -> list[Any]:
        return [
            make_event(
                "identify",
                userId=f"{prefix}-{n}",
                at=START,
                traits={"email": f"{prefix}-{n}@example.com"},
            )
            for n in range(200)
        ]

    truncate_all(postgres_url)
    opened = Services.open(
        Settings(data_dir=tmp_path, database_url=postgres_url), clock=SimulatedClock(START)
    )
    try:
        held, written = group("held"), group("written")
        done = threading.Event()

        def write() -> None:
            opened.writer.append_sync(written)
            done.set()

        with opened.db.write() as holder:
            lock_keys(
                holder, _lock_keys(Projector(holder, now_ms=START, default_region="FR"), held)
            )
            writer = threading.Thread(target=write)
            writer.start()
            stored_while_held = done.wait(20)
        writer.join(30)
        assert stored_while_held, "the writer waited for locks of people it is not about"
        assert profile_of(opened, "written-199").traits["email"] == "written-199@example.com"
    finally:
        opened.close()


def test_a_writer_chosen_as_a_deadlock_victim_tries_again_and_stores_the_batch(
    postgres_url: str, tmp_path: Any
) -> None:
    """PostgreSQL: another transaction holds the lock of one of an identify's keys and
    then waits for a lock the writer took first. PostgreSQL breaks the deadlock by failing
    the writer's statement (the other side waits longer before it checks); the writer
    tries the transaction again and the event is stored, with no error for the client."""
    import threading

    import psycopg

    from parcours.customers.projection import Projector
    from parcours.log.append import _lock_keys
    from parcours.runtime.clock import SimulatedClock
    from parcours.runtime.db import _bucket
    from parcours.runtime.settings import Settings
    from tests.conftest import truncate_all

    truncate_all(postgres_url)
    opened = Services.open(
        Settings(data_dir=tmp_path, database_url=postgres_url), clock=SimulatedClock(START)
    )
    try:
        identify = make_event(
            "identify", userId="noor", at=START, traits={"email": "noor@example.com"}
        )
        with opened.db.read() as conn:
            keys = _lock_keys(Projector(conn, now_ms=START, default_region="FR"), [identify])
        buckets = sorted({_bucket(key) for key in keys})
        assert len(buckets) >= 2, keys  # the writer takes the lower one, then the higher
        low, high = buckets[0], buckets[-1]
        failure: list[BaseException] = []

        def write() -> None:
            try:
                append(opened, identify)
            except BaseException as exc:  # reported to the test
                failure.append(exc)

        with psycopg.connect(postgres_url) as other:
            other.execute("SET deadlock_timeout = '60s'")  # the writer's backend checks first
            other.execute("SELECT pg_advisory_xact_lock(%s)", (high,))
            writer = threading.Thread(target=write)
            writer.start()
            writer.join(0.5)  # the writer holds `low` and waits for `high`
            other.execute("SELECT pg_advisory_xact_lock(%s)", (low,))  # granted after the abort
            other.rollback()
        writer.join(30)
        assert not writer.is_alive()
        assert failure == []
        profile = profile_of(opened, "noor")
    finally:
        opened.close()
    assert {"kind": "email", "value": "noor@example.com"} in [
        {"kind": i.kind, "value": i.value} for i in profile.identities
    ]


def test_a_group_of_new_people_takes_as_many_customer_ids_as_it_makes(
    postgres_url: str, tmp_path: Any
) -> None:
    """PostgreSQL: a group's new customers take as many ids as it makes people it does not
    know (an identify and an order each, two events sharing an anonymous id, an event
    naming nobody), from a block the process takes from the sequence in one call and
    keeps for its next groups: the next group's new people continue where it stopped,
    without asking the sequence again."""
    from parcours.customers.projection import RESERVE_BLOCK
    from parcours.runtime.clock import SimulatedClock
    from parcours.runtime.settings import Settings
    from tests.conftest import truncate_all

    truncate_all(postgres_url)
    opened = Services.open(
        Settings(data_dir=tmp_path, database_url=postgres_url), clock=SimulatedClock(START)
    )

    def stored() -> tuple[list[int], int]:
        with opened.db.read() as conn:
            ids = sorted(conn.exec_driver_sql("SELECT id FROM customers").scalars())
            last = conn.exec_driver_sql(
                "SELECT last_value FROM "
                "pg_catalog.pg_sequences WHERE sequencename = 'customers_id_seq'"
            ).scalar_one()
        return ids, int(last)

    try:
        events = []
        for n in range(5):
            events.append(
                make_event("identify", userId=f"new-{n}", at=START, traits={"email": f"n{n}@x.fr"})
            )
            events.append(make_event(userId=f"new-{n}", event="Order Completed", at=START))
        events.append(make_event(anonymousId="phone-9", event="Viewed", at=START))
        events.append(make_event(anonymousId="phone-9", event="Viewed", at=START))
        opened.writer.append_sync(events)
        ids, last = stored()
        assert len(ids) == 6
        assert ids == list(range(ids[0], ids[0] + 6))
        assert last == ids[0] + RESERVE_BLOCK - 1
        opened.writer.append_sync([make_event(userId="new-6", event="Viewed", at=START)])
        assert stored() == ([*ids, ids[-1] + 1], last)
    finally:
        opened.close()
