"""Post-purchase messages stage by stage (issue 21): commerce appends `Shipment Stage
Reached` once per parcel and stage, and the ready-made journey `post-purchase-updates`
sends one message for each; the ready-made abandoned cart enters on `Cart Abandoned`.
On the simulated clock, SQLite and PostgreSQL (docs/commerce.md, "Post-purchase
messages")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from parcours import brand
from parcours.customers import profiles as customers
from parcours.log import queries as log_queries
from parcours.messaging import templates as message_templates
from parcours.messaging.outbox import intents_for
from parcours.runtime.clock import SimulatedClock, iso
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.conftest import event_properties, make_event
from tests.test_journeys_engine import DAY, HOUR, MINUTE, advance, opt_in, publish, sent, track

TEMPLATES = Path(__file__).resolve().parents[1] / "src/parcours/journeys/templates"
UPDATES = (TEMPLATES / "post-purchase-updates.yaml").read_text(encoding="utf-8")
CART = (TEMPLATES / "abandoned-cart.yaml").read_text(encoding="utf-8")


def ship(services: Services, user: str, shipment: str, status: str, **more: Any) -> None:
    """A carrier's report of one parcel of order o-1 (unless told another)."""
    track(
        services,
        user,
        "Shipment Updated",
        **{"order_id": "o-1", "shipment_id": shipment, "status": status, **more},
    )


def reached(services: Services, user: str) -> list[dict[str, Any]]:
    """The properties of a customer's `Shipment Stage Reached` events, in their order."""
    return event_properties(services, user, "Shipment Stage Reached")


def stages(services: Services, user: str) -> list[tuple[str, str, bool]]:
    """Parcel, stage, first seen delivered: of each `Shipment Stage Reached`."""
    return [
        (str(p["shipment_id"]), str(p["stage"]), bool(p["first_seen_delivered"]))
        for p in reached(services, user)
    ]


def templates_sent(services: Services, user: str) -> list[str]:
    return [template for _, template in sent(services, user)]


def order(services: Services, user: str, order_id: str = "o-1") -> None:
    track(services, user, "Order Completed", order_id=order_id, total=80, currency="EUR")


# ---- the events ---------------------------------------------------------------------------


def test_each_stage_is_announced_once_the_first_time_it_is_reached(
    services: Services, clock: SimulatedClock
) -> None:
    opt_in(services, "ana")
    order(services, "ana")
    ship(services, "ana", "s-1", "label_created", carrier="Colissimo")
    ship(
        services,
        "ana",
        "s-1",
        "in_transit",
        tracking_url="https://carrier.example/s-1",
        estimated_delivery_from="2026-03-03T10:00:00Z",
        estimated_delivery_to="2026-03-03T14:00:00Z",
    )
    ship(services, "ana", "s-1", "in_transit")  # the same again: nothing
    ship(services, "ana", "s-1", "out_for_delivery")
    ship(services, "ana", "s-1", "delivery_attempted")
    ship(services, "ana", "s-1", "out_for_delivery")  # a second attempt: reached before
    ship(services, "ana", "s-1", "delivered", location="Lyon")
    ship(services, "ana", "s-1", "in_transit")  # late, after delivery: nothing
    assert stages(services, "ana") == [
        ("s-1", "info_received", False),
        ("s-1", "in_transit", False),
        ("s-1", "out_for_delivery", False),
        ("s-1", "failed_attempt", False),
        ("s-1", "delivered", False),
    ]
    with services.db.read() as conn:
        ids = log_queries.stored_message_ids(
            conn, ["commerce:shipment-stage:s-1:delivered", "commerce:shipment-stage:s-1:nope"]
        )
    assert ids == {"commerce:shipment-stage:s-1:delivered"}  # its message id
    assert reached(services, "ana")[-1] == {
        "shipment_id": "s-1",
        "stage": "delivered",
        "stage_key": "s-1:delivered",
        "first_seen_delivered": False,
        "order_id": "o-1",
        "carrier": "Colissimo",
        "tracking_url": "https://carrier.example/s-1",
        "estimated_delivery_from": "2026-03-03T10:00:00.000Z",
        "estimated_delivery_to": "2026-03-03T14:00:00.000Z",
        "location": "Lyon",
    }


def test_a_parcel_first_seen_delivered_is_flagged_and_an_earlier_stage_after_it_says_nothing(
    services: Services, clock: SimulatedClock
) -> None:
    opt_in(services, "bo")
    order(services, "bo")
    ship(services, "bo", "s-9", "delivered")
    ship(services, "bo", "s-9", "out_for_delivery")
    ship(services, "bo", "s-9", "returned_to_sender")  # nothing moves a delivered parcel
    assert stages(services, "bo") == [("s-9", "delivered", True)]


def test_a_group_reaching_a_stage_twice_announces_it_once(
    services: Services, clock: SimulatedClock
) -> None:
    opt_in(services, "cy")
    order(services, "cy")
    now = clock.now_ms()
    reports = [
        make_event(
            "track",
            userId="cy",
            event="Shipment Updated",
            at=now + n,
            properties={"order_id": "o-1", "shipment_id": "s-2", "status": status},
        )
        for n, status in enumerate(
            ["in_transit", "out_for_delivery", "delivery_attempted", "out_for_delivery"]
        )
    ]
    services.writer.append_sync(reports)
    assert stages(services, "cy") == [
        ("s-2", "in_transit", False),
        ("s-2", "out_for_delivery", False),
        ("s-2", "failed_attempt", False),
    ]


# ---- the journey --------------------------------------------------------------------------


def test_one_message_per_stage_reached_on_the_stage_s_channel(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, UPDATES)
    opt_in(services, "ana")
    order(services, "ana")
    ship(services, "ana", "s-1", "label_created")  # info received: no message
    assert sent(services, "ana") == []
    ship(services, "ana", "s-1", "in_transit")
    assert sent(services, "ana") == [("sms", "shipment-in-transit")]
    advance(services, clock, DAY, step=HOUR)
    ship(services, "ana", "s-1", "out_for_delivery")
    ship(services, "ana", "s-1", "delivery_attempted")
    ship(services, "ana", "s-1", "out_for_delivery")  # the second attempt: no second message
    ship(services, "ana", "s-1", "delivered")
    ship(services, "ana", "s-1", "in_transit")  # a late scan: nothing after delivery
    advance(services, clock, DAY, step=HOUR)
    assert sent(services, "ana") == [
        ("sms", "shipment-in-transit"),
        ("sms", "shipment-out-for-delivery"),
        ("sms", "shipment-failed-attempt"),
        ("push", "shipment-delivered"),
    ]


def test_the_sector_preset_s_channel_comes_first_then_the_stage_s(
    settings: Settings, clock: SimulatedClock
) -> None:
    """SCENARIOS.md section 4: a beauty brand's parcel news goes by WhatsApp, an
    electronics brand's by email; a home brand's preset is Wallet, whose live status is
    the Wallet order's, so its messages take the stage's own channels; one set on the
    Settings page wins over the configured one."""
    for sector, expected in (
        ("beauty", ["whatsapp", "whatsapp", "whatsapp"]),
        ("electronics", ["email", "email", "email"]),
        ("home", ["sms", "sms", "push"]),
    ):
        # One database for the three brands: each its own customer, order and parcel.
        opened = Services.open(settings.with_overrides(sector=sector), clock=clock)
        user, parcel = f"eva-{sector}", {"order_id": f"o-{sector}"}
        try:
            publish(opened, UPDATES)
            opt_in(opened, user)
            order(opened, user, f"o-{sector}")
            for status in ("in_transit", "out_for_delivery", "delivered"):
                ship(opened, user, f"s-{sector}", status, **parcel)
            advance(opened, clock, HOUR)
            assert [channel for channel, _ in sent(opened, user)] == expected, sector
            if sector == "electronics":  # the Settings page's sector wins
                brand.save(
                    opened.db,
                    brand.Defaults("Maison", sector),
                    brand.Changes(sector="beauty"),
                    clock.now_ms(),
                    sectors=("beauty", "electronics"),
                )
                order(opened, user, "o-again")
                # (a template not sent to them yet: the same one again would be a duplicate)
                ship(opened, user, "s-again", "delivery_attempted", order_id="o-again")
                advance(opened, clock, HOUR)
                assert sent(opened, user)[-1] == ("whatsapp", "shipment-failed-attempt")
                brand.save(  # back to none set there, for the next brand of this database
                    opened.db,
                    brand.Defaults("Maison", sector),
                    brand.Changes(),
                    clock.now_ms(),
                    reset=("sector",),
                )
        finally:
            opened.close()


def test_the_other_stages_each_have_their_message(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, UPDATES)
    opt_in(services, "di")
    order(services, "di")
    ship(services, "di", "s-1", "ready_for_pickup")
    ship(services, "di", "s-1", "failure")
    ship(services, "di", "s-1", "expired")  # no message for an expiry
    ship(services, "di", "s-1", "returned_to_sender")
    advance(services, clock, HOUR)
    assert templates_sent(services, "di") == [
        "shipment-available-for-pickup",
        "shipment-exception",
        "shipment-returned-to-sender",
    ]
    assert sent(services, "di")[-1] == ("email", "shipment-returned-to-sender")


def test_no_message_for_a_parcel_first_seen_delivered(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, UPDATES)
    opt_in(services, "bo")
    order(services, "bo")
    ship(services, "bo", "s-9", "delivered")
    ship(services, "bo", "s-9", "in_transit")
    advance(services, clock, DAY, step=HOUR)
    assert sent(services, "bo") == []


def test_several_parcels_each_with_their_own_messages(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, UPDATES)
    opt_in(services, "eve")
    order(services, "eve")
    ship(services, "eve", "s-1", "in_transit")
    ship(services, "eve", "s-2", "in_transit")
    ship(services, "eve", "s-1", "delivered")
    ship(services, "eve", "s-2", "out_for_delivery")
    ship(services, "eve", "s-2", "delivered")
    ship(services, "eve", "s-3", "delivered")  # a third parcel first seen delivered
    advance(services, clock, HOUR)
    assert templates_sent(services, "eve") == [
        "shipment-in-transit",
        "shipment-in-transit",
        "shipment-delivered",
        "shipment-out-for-delivery",
        "shipment-delivered",
    ]
    with services.db.read() as conn:
        customer = customers.resolve(conn, "eve", "FR")
        purposes = {row["purpose"] for row in intents_for(conn, customer)}
    assert purposes == {"transactional"}


def test_the_messages_carry_the_tracking_link_in_english_and_french(
    services: Services, clock: SimulatedClock
) -> None:
    context = {
        "customer": {"first_name": "Ana"},
        "event": {
            "event": "Shipment Stage Reached",
            "properties": {
                "order_id": "o-1",
                "carrier": "Colissimo",
                "estimated_delivery_to": iso(clock.now_ms() + DAY),
            },
        },
        "brand": {"name": "Maison", "url": "https://shop.example"},
        "links": {"shop": "https://shop.example", "tracking": "https://p.example/o/TOKEN"},
        "message": {"channel": "sms", "purpose": "transactional"},
        "cart": None,
        "order": None,
    }
    shipped = message_templates.shipped()
    for stage in (
        "in-transit",
        "out-for-delivery",
        "failed-attempt",
        "available-for-pickup",
        "delivered",
        "exception",
        "returned-to-sender",
    ):
        template = shipped[f"shipment-{stage}"]
        for locale in ("en", "fr"):
            for channel in sorted(template.channels() - {"whatsapp"}):
                rendered = message_templates.render(template, channel, context, locale, "en")
                words = " ".join(str(value) for value in rendered.fields.values())
                assert "https://p.example/o/TOKEN" in words, (stage, locale, channel)
    sms = message_templates.render(shipped["shipment-in-transit"], "sms", context, "fr", "en")
    assert "commande o-1 est en route (Colissimo)" in sms.fields["text"]


# ---- the abandoned cart -------------------------------------------------------------------


def add_to_cart(services: Services, user: str, cart: str, price: float) -> None:
    """A scarf added to the cart (`track` cannot pass a property called `name`)."""
    properties = {"cart_id": cart, "product_id": "p-1", "name": "Scarf", "price": price}
    event = make_event(
        "track",
        userId=user,
        event="Product Added",
        at=services.clock.now_ms(),
        properties={**properties, "quantity": 1, "currency": "EUR"},
    )
    services.writer.append_sync([event])
    services.worker.run_due()


def test_the_abandoned_cart_enters_on_cart_abandoned_after_inactivity(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, CART)
    opt_in(services, "fay")
    add_to_cart(services, "fay", "k-1", 200)
    advance(services, clock, 30 * MINUTE)
    add_to_cart(services, "fay", "k-1", 200)  # still active: the hour starts again
    advance(services, clock, HOUR - MINUTE)
    assert sent(services, "fay") == []
    advance(services, clock, MINUTE)  # an hour without activity: Cart Abandoned, the push
    assert sent(services, "fay") == [("push", "abandoned-cart-push")]
    advance(services, clock, HOUR)
    assert sent(services, "fay")[-1] == ("email", "abandoned-cart-recap")
    advance(services, clock, DAY, step=HOUR)
    assert sent(services, "fay")[-1] == ("whatsapp", "abandoned-cart-last-call")  # 400 EUR
    assert len(sent(services, "fay")) == 3


def test_the_order_stops_the_abandoned_cart(services: Services, clock: SimulatedClock) -> None:
    publish(services, CART)
    opt_in(services, "gus")
    add_to_cart(services, "gus", "k-2", 300)
    advance(services, clock, HOUR)
    assert sent(services, "gus") == [("push", "abandoned-cart-push")]
    advance(services, clock, 20 * MINUTE)
    order(services, "gus", "o-2")
    advance(services, clock, 3 * DAY, step=HOUR)
    assert sent(services, "gus") == [("push", "abandoned-cart-push")]
    # Ordered before the hour was up: no Cart Abandoned, nothing at all.
    opt_in(services, "hal")
    add_to_cart(services, "hal", "k-3", 300)
    advance(services, clock, 30 * MINUTE)
    order(services, "hal", "o-3")
    advance(services, clock, 3 * DAY, step=HOUR)
    assert sent(services, "hal") == []


def test_the_recap_reads_the_cart_of_cart_abandoned(
    services: Services, clock: SimulatedClock
) -> None:
    from parcours.messaging.rendering import CART_EVENTS

    assert "Cart Abandoned" in CART_EVENTS
    publish(services, CART)
    opt_in(services, "ivy")
    add_to_cart(services, "ivy", "k-4", 120)
    advance(services, clock, 2 * HOUR)
    with services.db.read() as conn:
        customer = customers.resolve(conn, "ivy", "FR")
        rows = intents_for(conn, customer)
        recap = next(row for row in rows if row["template"] == "abandoned-cart-recap")
        renderer = services.delivery.renderer
        row = _row(recap)
        rendered = renderer.render(conn, row, _detail(recap), renderer.links_of(row))
    assert "Scarf × 1" in rendered.fields["text"]  # the cart's items, from Cart Abandoned
    assert "120" in rendered.fields["text"]


def _row(found: dict[str, Any]) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(**found)


def _detail(found: dict[str, Any]) -> dict[str, Any]:

    detail = found.get("detail")
    return json.loads(detail) if isinstance(detail, str) else dict(detail or {})
