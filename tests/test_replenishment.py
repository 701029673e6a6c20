"""Replenishment (issue 21): the expected depletion of each consumable a customer bought,
from its usage days and quantity or from their own pace after two orders; `Replenishment
Due` a few days before, and the ready-made journey's reminder; none once they reordered.
On the simulated clock, SQLite and PostgreSQL (docs/commerce.md, "Replenishment")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parcours import commerce
from parcours.customers import profiles as customers
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.conftest import event_properties, make_event
from tests.test_journeys_engine import DAY, HOUR, advance, opt_in, publish, sent, track

TEMPLATES = Path(__file__).resolve().parents[1] / "src/parcours/journeys/templates"
REPLENISHMENT = (TEMPLATES / "replenishment.yaml").read_text(encoding="utf-8")


def stock_catalog(services: Services) -> None:
    """A serum that lasts 30 days, a cleanser with no usage days, a tee (not consumable)."""
    products = [
        {"product_id": "serum", "name": "Serum", "consumable": True, "usage_days": 30},
        {"product_id": "cleanser", "name": "Cleanser", "consumable": True},
        {"product_id": "tee", "name": "Tee", "consumable": False},
    ]
    services.writer.append_sync(
        [
            make_event(
                event="Product Updated",
                at=services.clock.now_ms(),
                identity_required=False,
                properties={**product, "price": 30, "currency": "EUR", "stock": 50},
            )
            for product in products
        ]
    )


def buy(services: Services, user: str, order_id: str, *items: tuple[str, int]) -> None:
    track(
        services,
        user,
        "Order Completed",
        order_id=order_id,
        currency="EUR",
        total=30 * sum(quantity for _, quantity in items),
        products=[{"product_id": p, "price": 30, "quantity": q} for p, q in items],
    )


def one_item_order(user: str, order_id: str, product: str, at: int) -> Any:
    """An `Order Completed` of one unit of `product` at 30 EUR, for a group of its own."""
    return make_event(
        event="Order Completed",
        userId=user,
        at=at,
        properties={
            "order_id": order_id,
            "currency": "EUR",
            "total": 30,
            "products": [{"product_id": product, "price": 30, "quantity": 1}],
        },
    )


def replenishments(services: Services, user: str) -> list[commerce.Replenishment]:
    with services.db.read() as conn:
        return commerce.replenishments_of(conn, customers.resolve(conn, user, "FR"))


def named(services: Services, user: str, name: str) -> list[dict[str, Any]]:
    return event_properties(services, user, name)


def test_the_reminder_lands_about_three_days_before_the_consumable_runs_out(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, REPLENISHMENT)
    stock_catalog(services)
    opt_in(services, "ana")
    ordered_at = clock.now_ms()
    buy(services, "ana", "o-1", ("serum", 1), ("tee", 2), ("cleanser", 1))
    [serum, cleanser] = replenishments(services, "ana")
    assert (serum.product_id, serum.basis, serum.depletes_at) == (
        "serum",
        "usage",
        ordered_at + 30 * DAY,
    )
    assert serum.due_at == ordered_at + 27 * DAY
    assert (cleanser.product_id, cleanser.basis, cleanser.depletes_at) == (
        "cleanser",
        "unknown",
        None,
    )
    advance(services, clock, 27 * DAY - HOUR, step=6 * HOUR)
    assert named(services, "ana", "Replenishment Due") == []
    assert sent(services, "ana") == []
    advance(services, clock, 25 * HOUR, step=HOUR)  # the next 10:00, in the customer's zone
    [due] = named(services, "ana", "Replenishment Due")
    assert {key: due[key] for key in ("product_id", "order_id", "name", "days_left")} == {
        "product_id": "serum",
        "order_id": "o-1",
        "name": "Serum",
        "days_left": 3,
    }
    assert sent(services, "ana") == [("email", "reorder-reminder")]
    advance(services, clock, 2 * DAY, step=HOUR)
    assert sent(services, "ana") == [("email", "reorder-reminder"), ("push", "reorder-last-call")]
    advance(services, clock, 40 * DAY, step=DAY)  # once per purchase
    assert len(named(services, "ana", "Replenishment Due")) == 1


def test_quantity_multiplies_the_usage_days(services: Services, clock: SimulatedClock) -> None:
    stock_catalog(services)
    ordered_at = clock.now_ms()
    buy(services, "bo", "o-1", ("serum", 2))
    [serum] = replenishments(services, "bo")
    assert serum.depletes_at == ordered_at + 60 * DAY


def test_no_reminder_when_they_reordered_before_it(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, REPLENISHMENT)
    stock_catalog(services)
    opt_in(services, "cy")
    buy(services, "cy", "o-1", ("serum", 1))
    advance(services, clock, 25 * DAY, step=12 * HOUR)
    buy(services, "cy", "o-2", ("serum", 1))  # before the reminder: the date moves
    advance(services, clock, 10 * DAY, step=12 * HOUR)  # past the first date
    assert named(services, "cy", "Replenishment Due") == []
    assert sent(services, "cy") == []
    [reordered] = named(services, "cy", "Product Reordered")
    assert reordered == {"product_id": "serum", "order_id": "o-2", "orders": 2}


def test_a_reorder_after_the_reminder_ends_the_run_before_the_last_call(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, REPLENISHMENT)
    stock_catalog(services)
    opt_in(services, "di")
    buy(services, "di", "o-1", ("serum", 1), ("cleanser", 1))
    advance(services, clock, 28 * DAY, step=6 * HOUR)
    assert sent(services, "di") == [("email", "reorder-reminder")]
    buy(services, "di", "o-2", ("cleanser", 1))  # another product: the run goes on
    advance(services, clock, HOUR)
    buy(services, "di", "o-3", ("serum", 1))  # that product: the run's goal
    advance(services, clock, 3 * DAY, step=HOUR)
    assert sent(services, "di") == [("email", "reorder-reminder")]


def test_the_customers_own_pace_counts_after_two_orders(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, REPLENISHMENT)
    stock_catalog(services)
    opt_in(services, "eve")
    first = clock.now_ms()
    buy(services, "eve", "o-1", ("serum", 1))
    advance(services, clock, 12 * DAY, step=12 * HOUR)
    buy(services, "eve", "o-2", ("serum", 1))  # one serum lasted her 12 days, not 30
    [serum] = replenishments(services, "eve")
    assert (serum.basis, serum.pace_days, serum.orders) == ("own_pace", 12.0, 2)
    assert serum.depletes_at == first + 24 * DAY
    advance(services, clock, 9 * DAY - HOUR, step=6 * HOUR)  # day 21 - 1h: three days before
    assert sent(services, "eve") == []
    advance(services, clock, 25 * HOUR, step=HOUR)
    assert sent(services, "eve") == [("email", "reorder-reminder")]
    # The cleanser has no usage days: its date comes from her pace alone.
    buy(services, "eve", "o-3", ("cleanser", 1))
    advance(services, clock, 20 * DAY, step=DAY)
    buy(services, "eve", "o-4", ("cleanser", 2))
    cleanser = next(r for r in replenishments(services, "eve") if r.product_id == "cleanser")
    assert (cleanser.basis, cleanser.pace_days) == ("own_pace", 20.0)
    assert cleanser.depletes_at == clock.now_ms() + 40 * DAY


def test_a_cancelled_order_takes_its_replenishment_back(
    services: Services, clock: SimulatedClock
) -> None:
    stock_catalog(services)
    first = clock.now_ms()
    buy(services, "fay", "o-1", ("serum", 1))
    advance(services, clock, 10 * DAY, step=DAY)
    buy(services, "fay", "o-2", ("serum", 1))
    assert replenishments(services, "fay")[0].basis == "own_pace"
    track(services, "fay", "Order Cancelled", order_id="o-2")
    [serum] = replenishments(services, "fay")
    assert (serum.last_order_id, serum.basis, serum.depletes_at) == (
        "o-1",
        "usage",
        first + 30 * DAY,
    )
    track(services, "fay", "Order Cancelled", order_id="o-1")
    assert replenishments(services, "fay") == []


def test_the_shipped_reminder_names_the_product_and_what_goes_with_it(
    services: Services, clock: SimulatedClock
) -> None:
    from parcours.messaging import templates as message_templates

    stock_catalog(services)
    buy(services, "bo", "b-1", ("serum", 1), ("tee", 1))  # bought together by someone else
    opt_in(services, "gil")
    buy(services, "gil", "g-1", ("serum", 1))
    advance(services, clock, 28 * DAY, step=DAY)
    [due] = named(services, "gil", "Replenishment Due")
    with services.db.read() as conn:
        customer = customers.resolve(conn, "gil", "FR")
        event = {"event": "Replenishment Due", "properties": due}
        context = services.delivery.renderer.context(
            conn,
            customer,
            "email",
            "marketing",
            event,
            {"unsubscribe": "https://u.example", "preferences": "https://p.example"},
        )
        template = message_templates.shipped()["reorder-reminder"]
        english = message_templates.render(template, "email", context, "en").fields
        french = message_templates.render(template, "email", context, "fr").fields
    assert english["subject"] == "Running low on Serum?"
    assert "You may also like:\n- Tee: " in english["text"]
    assert "- Serum" not in english["text"]  # the product itself is the reminder's
    assert french["subject"] == "Bientôt à court de Serum ?"
    assert "Vous aimerez aussi :\n- Tee : " in french["text"]


def test_a_merge_counts_both_profiles_purchases_and_an_erasure_takes_them(
    services: Services, clock: SimulatedClock
) -> None:
    stock_catalog(services)
    first = clock.now_ms()
    services.writer.append_sync(
        [
            make_event(
                anonymousId="phone-1",
                event="Order Completed",
                at=first,
                properties={
                    "order_id": "o-1",
                    "total": 30,
                    "currency": "EUR",
                    "products": [{"product_id": "serum", "price": 30, "quantity": 1}],
                },
            ),
            make_event(
                anonymousId="phone-1",
                event="Product Viewed",
                at=first,
                properties={"product_id": "mask"},
            ),
        ]
    )
    advance(services, clock, 10 * DAY, step=DAY)
    buy(services, "mo", "o-2", ("serum", 1))
    assert replenishments(services, "mo")[0].basis == "usage"  # one order of hers so far
    services.writer.append_sync(
        [make_event("identify", userId="mo", anonymousId="phone-1", at=clock.now_ms())]
    )
    services.worker.run_due()  # commerce counts the survivor again
    [serum] = replenishments(services, "mo")
    assert (serum.orders, serum.basis, serum.pace_days) == (2, "own_pace", 10.0)
    assert serum.depletes_at == first + 20 * DAY
    with services.db.read() as conn:
        mo = customers.resolve(conn, "mo", "FR")
        views = commerce.product_views(conn, mo, since=first)
    assert [(v.product_id, v.views) for v in views] == [("mask", 1)]
    erased = customers.erase(services.db, services.people, "mo", "FR", clock.now_ms(), "test")
    assert erased is not None
    with services.db.read() as conn:
        assert commerce.replenishments_of(conn, mo) == []
        assert commerce.product_views(conn, mo, since=0) == []


def test_the_brand_chooses_how_many_days_before(settings: Settings, clock: SimulatedClock) -> None:
    for lead, announced_on in ((7, 23), (0, 30)):
        services = Services.open(settings.with_overrides(replenishment_lead_days=lead), clock=clock)
        try:
            stock_catalog(services)
            user = f"lead-{lead}"
            ordered_at = clock.now_ms()
            buy(services, user, f"{user}-1", ("serum", 1))
            advance(services, clock, 31 * DAY, step=6 * HOUR)
            [due] = named(services, user, "Replenishment Due")
            with services.db.read() as conn:
                customer = customers.resolve(conn, user, "FR")
                [serum] = commerce.replenishments_of(conn, customer)
            assert serum.announced_at == ordered_at + announced_on * DAY
            assert due["days_left"] == lead
        finally:
            services.close()


def test_orders_placed_together_count_as_one_by_one(
    services: Services, clock: SimulatedClock
) -> None:
    """Several new orders in one group take the set path (commerce/projection.py,
    `_place_new`): a consumable's replenishment is made, a tee-only order leaves the
    customer's standing one as it was, and order traits count every order."""
    stock_catalog(services)
    first = clock.now_ms()
    buy(services, "gil", "o-1", ("serum", 1))
    [before] = replenishments(services, "gil")
    clock.advance_ms(DAY)
    at = clock.now_ms()
    services.writer.append_sync(
        [
            one_item_order("gil", "o-2", "tee", at),
            one_item_order("hal", "o-3", "serum", at),
            one_item_order("ivy", "o-4", "tee", at),
        ]
    )
    assert replenishments(services, "gil") == [before]  # the tee changed nothing
    assert before.depletes_at == first + 30 * DAY
    [hal] = replenishments(services, "hal")
    assert (hal.product_id, hal.depletes_at, hal.orders) == ("serum", at + 30 * DAY, 1)
    assert replenishments(services, "ivy") == []
    with services.db.read() as conn:
        gil = customers.profile(conn, customers.resolve(conn, "gil", "FR"))
    assert gil.computed["orders_count"] == 2


def test_a_group_that_makes_a_product_consumable_counts_its_orders_of_it(
    services: Services, clock: SimulatedClock
) -> None:
    """One group brings the catalog's word that a balm is a consumable and two orders of
    it: both buyers' replenishments are made (the consumables are read after the group's
    catalog events are applied, never before, as a read sent ahead would be)."""
    at = clock.now_ms()
    balm = {"product_id": "balm", "name": "Balm", "consumable": True, "usage_days": 20}
    services.writer.append_sync(
        [
            make_event(
                event="Product Updated",
                at=at,
                identity_required=False,
                properties={**balm, "price": 30, "currency": "EUR", "stock": 50},
            ),
            one_item_order("hal", "o-1", "balm", at),
            one_item_order("ivy", "o-2", "balm", at),
        ]
    )
    for user in ("hal", "ivy"):
        [made] = replenishments(services, user)
        assert (made.product_id, made.depletes_at) == ("balm", at + 20 * DAY)
