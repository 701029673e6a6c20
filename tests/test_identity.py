"""One profile per person, whatever id, email, phone or device they used."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from parcours.customers import profiles as customers
from parcours.customers.tables import customers as customers_table
from parcours.log import events as events_table
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.conftest import START, make_event

MINUTE = 60_000


def append(services: Services, *events: Any) -> None:
    services.writer.append_sync(list(events))


def profile_of(services: Services, ref: str) -> customers.CustomerProfile:
    with services.db.read() as conn:
        return customers.profile(conn, customers.resolve(conn, ref, "FR"))


def live_customers(services: Services) -> int:
    with services.db.read() as conn:
        return customers.count_customers(conn)


def test_anonymous_browsing_joins_the_profile_on_identify(services: Services) -> None:
    append(services, make_event("page", anonymousId="anon-1", name="Home", at=START))
    append(
        services,
        make_event("track", anonymousId="anon-1", event="Product Viewed", at=START + MINUTE),
    )
    append(
        services, make_event("identify", anonymousId="anon-1", userId="u-1", at=START + 2 * MINUTE)
    )
    profile = profile_of(services, "u-1")
    assert profile == profile_of(services, "anon-1")
    assert customers.KnownIdentity("anonymous_id", "anon-1") in profile.identities
    assert live_customers(services) == 1
    with services.db.read() as conn:
        page = customers.event_page(conn, customers.resolve(conn, "u-1", "FR")).events
    assert [e["type"] for e in page] == ["identify", "track", "page"]


def test_email_and_phone_are_normalised_identities(services: Services) -> None:
    append(
        services,
        make_event(
            "identify",
            userId="u-2",
            traits={"email": "  Marie@Example.COM ", "phone": "06 11 22 33 44"},
        ),
    )
    profile = profile_of(services, "marie@example.com")
    assert profile.id == profile_of(services, "+33611223344").id
    assert profile_of(services, "0611223344").id == profile.id
    kinds = {(i.kind, i.value) for i in profile.identities}
    assert ("email", "marie@example.com") in kinds
    assert ("phone", "+33611223344") in kinds
    # The trait keeps what the customer typed; the identity is normalised.
    assert profile.traits["email"] == "  Marie@Example.COM "


def test_a_person_may_have_several_emails(services: Services) -> None:
    append(services, make_event("identify", userId="u-3", traits={"email": "a@example.com"}))
    append(services, make_event("identify", userId="u-3", traits={"email": "b@example.com"}))
    profile = profile_of(services, "u-3")
    emails = {i.value for i in profile.identities if i.kind == "email"}
    assert emails == {"a@example.com", "b@example.com"}
    assert profile.traits["email"] == "b@example.com"


def test_two_profiles_proven_one_are_merged_with_all_their_history(services: Services) -> None:
    # A newsletter sign-up on one device, a purchase on another: two profiles.
    append(
        services,
        make_event(
            "identify",
            anonymousId="phone-app",
            traits={"email": "lea@example.com", "first_name": "Léa"},
            at=START,
        ),
        make_event(
            "track",
            userId="u-lea",
            event="Order Completed",
            at=START + MINUTE,
            properties={"order_id": "o-1", "total": 50, "currency": "EUR"},
        ),
        make_event("identify", userId="u-lea", traits={"last_name": "Martin"}, at=START + MINUTE),
    )
    assert live_customers(services) == 2
    older = profile_of(services, "phone-app").id
    # Logging in on the phone app proves they are one person.
    append(
        services,
        make_event("identify", anonymousId="phone-app", userId="u-lea", at=START + 2 * MINUTE),
    )
    assert live_customers(services) == 1
    merged = profile_of(services, "u-lea")
    assert merged.id == older
    assert merged.traits["first_name"] == "Léa"
    assert merged.traits["last_name"] == "Martin"
    assert merged.computed["orders_count"] == 1
    assert len(merged.merged_from) == 1
    # The merged id still resolves, to the survivor.
    assert profile_of(services, merged.merged_from[0]).id == older
    with services.db.read() as conn:
        survivor = customers.resolve(conn, "u-lea", "FR")
        names = [e.get("event") for e in customers.event_page(conn, survivor, limit=100).events]
        orphans = conn.execute(
            select(func.count())
            .select_from(events_table)
            .where(events_table.c.customer_id != survivor)
        ).scalar_one()
    assert "Customers Merged" in names
    assert "Order Completed" in names
    assert orphans == 0


def test_merge_event_says_why(services: Services) -> None:
    append(services, make_event("identify", userId="u-a", traits={"email": "same@example.com"}))
    append(
        services,
        make_event(
            "track",
            anonymousId="anon-z",
            event="Cart Viewed",
            context={"traits": {"email": "x@example.com"}},
        ),
    )
    append(
        services,
        make_event(
            "identify",
            anonymousId="anon-z",
            traits={"email": "same@example.com"},
            messageId="proof-1",
        ),
    )
    with services.db.read() as conn:
        survivor = customers.resolve(conn, "u-a", "FR")
        page = customers.event_page(conn, survivor).events
    merge = next(e for e in page if e.get("event") == "Customers Merged")
    assert merge["properties"]["identity"] == {"kind": "email", "value": "same@example.com"}
    assert "proof-1" in merge["properties"]["reason"]
    assert merge["properties"]["survivor_id"] == survivor


def test_two_logged_in_people_sharing_a_device_are_not_merged(services: Services) -> None:
    append(services, make_event("identify", anonymousId="family-ipad", userId="mum"))
    append(services, make_event("identify", anonymousId="family-ipad", userId="son"))
    assert live_customers(services) == 2
    assert profile_of(services, "mum").id != profile_of(services, "son").id
    son = {(i.kind, i.value) for i in profile_of(services, "son").identities}
    assert ("anonymous_id", "family-ipad") not in son


def test_a_shared_mailbox_does_not_merge_two_accounts(services: Services) -> None:
    append(services, make_event("identify", userId="alice", traits={"email": "home@example.com"}))
    append(services, make_event("identify", userId="bob", traits={"email": "home@example.com"}))
    assert profile_of(services, "alice").id != profile_of(services, "bob").id
    assert profile_of(services, "home@example.com").id == profile_of(services, "alice").id


def test_alias_merges_previous_id_into_user(services: Services) -> None:
    append(services, make_event("track", anonymousId="old-anon", event="Product Viewed"))
    append(services, make_event("identify", userId="new-user", traits={"plan": "gold"}))
    append(services, make_event("alias", previousId="old-anon", userId="new-user"))
    assert live_customers(services) == 1
    assert profile_of(services, "old-anon").traits["plan"] == "gold"


def test_merges_inside_one_batch_leave_one_profile(services: Services) -> None:
    append(
        services,
        make_event("track", anonymousId="d1", event="Product Viewed"),
        make_event("track", anonymousId="d2", event="Product Viewed"),
        make_event("identify", anonymousId="d1", userId="same"),
        make_event("identify", anonymousId="d2", userId="same"),
    )
    assert live_customers(services) == 1
    with services.db.read() as conn:
        total = conn.execute(select(func.count()).select_from(customers_table)).scalar_one()
    # Profiles created and merged within one group are never stored.
    assert total == 1


def test_external_ids_identify_a_customer(services: Services) -> None:
    append(services, make_event("identify", userId="web-7", traits={"email": "p@example.com"}))
    event = make_event(
        "track",
        event="Order Completed",
        source="shopify",
        identity_required=False,
        context={
            "externalIds": [{"id": 42, "type": "shopify_customer_id"}],
            "traits": {"email": "P@example.com"},
        },
        properties={"order_id": "s-1", "total": "10.50", "currency": "EUR"},
    )
    append(services, event)
    profile = profile_of(services, "shopify_customer_id:42")
    assert profile.id == profile_of(services, "web-7").id
    assert profile.computed["revenue"]["EUR"]["total_spent"] == "10.50"


# ---- looking a customer up: the id's own kind first ---------------------------------------


def decoy(services: Services, user_id: str) -> None:
    """What anyone holding the public write key can make: a profile whose user id is a
    text of their choosing."""
    append(services, make_event("identify", userId=user_id, traits={"first_name": "Decoy"}))


def test_an_id_that_reads_as_an_email_or_phone_is_looked_up_as_that_first(
    services: Services,
) -> None:
    append(
        services,
        make_event(
            "identify",
            userId="marie",
            traits={"email": "marie@example.com", "phone": "+33611223344"},
            context={"externalIds": [{"id": "s.myshopify.com:7", "type": "shopify_customer_id"}]},
        ),
    )
    for text in ("marie@example.com", "0611223344", "shopify_customer_id:s.myshopify.com:7"):
        decoy(services, text)
    marie = profile_of(services, "marie").id
    for ref in (
        "marie@example.com",
        " Marie@Example.com",
        "0611223344",
        "+33 6 11 22 33 44",
        "shopify_customer_id:s.myshopify.com:7",
        "shopify_customer_id:7",
        "email:MARIE@example.com",
        "phone:06 11 22 33 44",
    ):
        assert profile_of(services, ref).id == marie, ref
    # Written `user_id:...`, the decoy is what is asked for.
    assert profile_of(services, "user_id:marie@example.com").traits == {"first_name": "Decoy"}
    assert profile_of(services, "user_id:0611223344").id != marie
    # An erasure asked by email reaches Marie, not the decoy.
    erasure = customers.erase(
        services.db, services.people, "marie@example.com", "FR", START, "test"
    )
    assert customers.public_id(erasure.customer_id) == marie
    assert profile_of(services, "user_id:marie@example.com").erased is False


def test_a_kind_written_before_an_id_is_never_read_as_a_phone_number(services: Services) -> None:
    append(services, make_event("identify", userId="ana", traits={"phone": "+33612345678"}))
    with services.db.read() as conn:
        for ref in ("anonymous_id:0612345678", "user_id:0612345678"):
            try:
                found = customers.resolve(conn, ref, "FR")
            except customers.CustomerNotFound:
                found = None
            assert found is None, ref


def test_exact_lookups_take_an_identity_of_one_kind_and_follow_merges(
    services: Services,
) -> None:
    append(services, make_event("track", anonymousId="a-1", event="Product Viewed"))
    append(services, make_event("identify", userId="u-9", traits={"email": "nine@example.com"}))
    decoy(services, "nine@example.com")
    append(services, make_event("identify", userId="u-9", anonymousId="a-1"))  # a merge
    nine = int(profile_of(services, "u-9").id[4:])
    with services.db.read() as conn:
        found = {
            (kind, value): customers.customers_with_identity(conn, kind, value)
            for kind, value in (
                ("email", "nine@example.com"),
                ("anonymous_id", "a-1"),
                ("user_id", "u-9"),
                ("user_id", "a-1"),
                ("anonymous_id", "nine@example.com"),
            )
        }
    assert found == {
        ("email", "nine@example.com"): [nine],
        ("anonymous_id", "a-1"): [nine],
        ("user_id", "u-9"): [nine],
        ("user_id", "a-1"): [],
        ("anonymous_id", "nine@example.com"): [],
    }


def test_a_bounce_naming_only_an_address_finds_the_email_sent_to_it_not_a_decoy(
    settings: Settings, clock: SimulatedClock
) -> None:
    """The fallback of a bounce that names only the address: the emails sent to the
    customers holding that email, never a profile whose user id is the address."""
    from tests.test_channels import journey, open_services, outbox, publish
    from tests.test_journeys_engine import opt_in, track

    services = open_services(settings, clock)
    try:
        publish(services, journey("{channel: email, template: t}"))
        opt_in(services, "ana")
        track(services, "ana", "Go")
        [sent] = outbox(services)
        decoy(services, "ana@example.com")
        with services.db.read() as conn:
            last = services.delivery._last_email_to(conn, "ana@example.com", clock.now_ms())
    finally:
        services.close()
    assert last is not None and f"msg_{last.id}" == sent["id"]


def test_alias_never_merges_two_customers_who_each_have_a_user_id(services: Services) -> None:
    """As for identify: an alias from the public write key could otherwise make one person
    of a signed-in customer and whoever sent it, who would then read the other's chat."""
    append(services, make_event("identify", userId="victim", traits={"email": "v@example.com"}))
    append(services, make_event("identify", userId="mallory", traits={"email": "m@example.com"}))
    append(services, make_event("alias", previousId="mallory", userId="victim"))
    with services.db.read() as conn:
        victim = customers.resolve(conn, "user_id:victim", "FR")
        mallory = customers.resolve(conn, "user_id:mallory", "FR")
        merged = conn.execute(
            select(func.count()).where(customers_table.c.merged_into.is_not(None))
        ).scalar_one()
    assert victim != mallory and merged == 0
    # An id that no other signed-in customer holds still becomes this person's.
    append(services, make_event("alias", previousId="victim", userId="victim-2026"))
    with services.db.read() as conn:
        assert customers.resolve(conn, "user_id:victim-2026", "FR") == victim
