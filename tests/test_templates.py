"""The ready-made journeys: each one valid, and each one doing what SCENARIOS.md says."""

from __future__ import annotations

from pathlib import Path

import pytest

from parcours.journeys.definition import load_journey
from parcours.runtime.clock import SimulatedClock
from parcours.services import Services
from tests.test_journeys_engine import DAY, HOUR, MINUTE, advance, opt_in, publish, sent, track

TEMPLATES = Path(__file__).resolve().parents[1] / "src/parcours/journeys/templates"


def template(name: str) -> str:
    return (TEMPLATES / f"{name}.yaml").read_text()


@pytest.mark.parametrize("path", sorted(TEMPLATES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_template_is_valid(path: Path) -> None:
    assert load_journey(path.read_text()).id


def test_abandoned_cart_push_then_recap_then_a_last_call_for_a_high_value_cart(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, template("abandoned-cart"))
    # Commerce announces a cart once, after an hour without activity (test_post_purchase.py).
    track(services, "hi", "Cart Abandoned", cart_id="c1", total=240)
    opt_in(services, "sms-only", consent={"sms": {"marketing": True}})
    track(services, "sms-only", "Cart Abandoned", cart_id="c9", total=240)
    assert sent(services, "hi") == [("push", "abandoned-cart-push")]  # at abandonment
    advance(services, clock, 45 * MINUTE)
    advance(services, clock, HOUR)
    assert sent(services, "hi")[-1] == ("email", "abandoned-cart-recap")
    advance(services, clock, DAY, step=HOUR)
    assert sent(services, "hi")[-1] == ("whatsapp", "abandoned-cart-last-call")  # next day
    assert len(sent(services, "hi")) == 3
    # Without WhatsApp consent (and none for push or email), the last call goes by SMS.
    assert sent(services, "sms-only") == [("sms", "abandoned-cart-last-call")]


def test_abandoned_cart_sends_no_sms_for_a_small_cart(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, template("abandoned-cart"))
    track(services, "lo", "Cart Abandoned", cart_id="c2", total=35)
    advance(services, clock, 3 * DAY, step=HOUR)
    assert [channel for channel, _ in sent(services, "lo")] == ["push", "email"]


def test_abandoned_cart_sends_nothing_at_all_after_the_order(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, template("abandoned-cart"))
    track(services, "buy", "Cart Abandoned", cart_id="c3", total=240)
    advance(services, clock, 20 * MINUTE)
    track(services, "buy", "Order Completed", order_id="o3")
    advance(services, clock, 3 * DAY, step=HOUR)
    assert sent(services, "buy") == [("push", "abandoned-cart-push")]  # nothing after it


def test_post_purchase_delivery_sends_the_conditions_a_day_after_delivery(
    services: Services, clock: SimulatedClock
) -> None:
    """The stage messages are post-purchase-updates'; this one only sends the return
    conditions, once per order, a day after its first parcel is delivered."""
    publish(services, template("post-purchase-delivery"))
    track(services, "pp", "Order Completed", order_id="o-9")
    advance(services, clock, DAY, step=HOUR)
    track(services, "pp", "Shipment Out For Delivery", order_id="o-9", shipment_id="s-1")
    track(services, "pp", "Shipment Delivered", order_id="o-9", shipment_id="s-1")
    track(services, "pp", "Shipment Delivered", order_id="o-9", shipment_id="s-2")
    assert sent(services, "pp") == []
    advance(services, clock, DAY, step=HOUR)
    assert sent(services, "pp") == [("email", "returns-and-contact")]


def test_human_touches_create_a_task_for_a_first_order(
    services: Services, clock: SimulatedClock
) -> None:
    from sqlalchemy import text

    publish(services, template("human-touches"))
    opt_in(services, "new")
    track(services, "new", "Order Completed", order_id="o-1", total=40)
    with services.db.read() as conn:
        titles = conn.execute(text("SELECT payload FROM events WHERE name = 'Task Created'"))
        payloads = list(titles.scalars())
    assert len(payloads) == 1 and "Thank-you note for a first order" in payloads[0]
    assert sent(services, "new") == []


def test_browse_abandonment_after_three_views_in_a_day(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, template("browse-abandonment"))
    for _ in range(3):
        track(services, "vic", "Product Viewed", product_id="p-1")
        advance(services, clock, 2 * HOUR, step=HOUR)
    track(services, "two", "Product Viewed", product_id="p-2")
    advance(services, clock, HOUR)
    track(services, "two", "Product Viewed", product_id="p-2")
    advance(services, clock, 2 * DAY, step=HOUR)
    assert sent(services, "vic") == [("email", "browse-abandonment")]
    assert sent(services, "two") == []  # two views only


def test_browse_abandonment_stops_when_the_product_is_added(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, template("browse-abandonment"))
    for _ in range(3):
        track(services, "add", "Product Viewed", product_id="p-1")
    track(services, "add", "Product Added", product_id="p-1")
    advance(services, clock, DAY, step=HOUR)
    assert sent(services, "add") == []


def test_win_back_after_ninety_days_without_an_order(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, template("win-back"))
    track(services, "old", "Order Completed", order_id="o-1")
    track(services, "loyal", "Order Completed", order_id="o-2")
    advance(services, clock, 60 * DAY, step=DAY)
    track(services, "loyal", "Order Completed", order_id="o-3")  # the count starts again
    advance(services, clock, 31 * DAY, step=DAY)
    assert sent(services, "old") == [("email", "win-back-offer")]
    assert sent(services, "loyal") == []
    advance(services, clock, 15 * DAY, step=DAY)
    assert [t for _, t in sent(services, "old")] == ["win-back-offer", "win-back-last-chance"]


def test_referral_loop_invites_rewards_at_once_and_asks_again(
    services: Services, clock: SimulatedClock
) -> None:
    from parcours.customers import profiles as customers
    from parcours.loyalty.referrals import GATHER_MS
    from tests.test_channels import outbox
    from tests.test_referrals import events_of

    publish(services, template("referral-invitation"))
    publish(services, template("referral"))
    opt_in(services, "camille", first_name="Camille")
    opt_in(services, "lea", first_name="Léa", locale="fr")
    track(services, "camille", "Order Completed", order_id="c-1")
    advance(services, clock, GATHER_MS)  # her code is issued
    with services.db.read() as conn:
        camille = customers.resolve(conn, "camille", "FR")
        code = customers.profile(conn, camille).traits["referral_code"]
    advance(services, clock, 3 * DAY, step=HOUR)
    assert sent(services, "camille") == [("email", "referral-invitation")]
    # Léa orders with Camille's code: Camille is rewarded and told at once.
    track(services, "lea", "Order Completed", order_id="l-1", coupon=code)
    assert sent(services, "camille")[-1] == ("email", "referral-reward")
    advance(services, clock, 3 * DAY, step=HOUR)
    assert sent(services, "camille") == [
        ("email", "referral-invitation"),
        ("email", "referral-reward"),
        ("email", "referral-refer-again"),
    ]
    assert sent(services, "lea") == [("email", "referral-invitation")]  # her own code
    # The loop starts again: Hugo orders with the code two days later, Noé the day after;
    # each one is a reward, and only the last asks for another friend.
    track(services, "hugo", "Order Completed", order_id="h-1", coupon=code)
    advance(services, clock, 2 * DAY, step=HOUR)
    track(services, "noe", "Order Completed", order_id="n-1", referral_code=code)
    advance(services, clock, 4 * DAY, step=HOUR)
    assert [t for _, t in sent(services, "camille")][3:] == [
        "referral-reward",
        "referral-reward",
        "referral-refer-again",
    ]
    delivered = [m for m in outbox(services) if m["content"] is not None]
    to_camille = [m for m in delivered if m["customer"] == f"cus_{camille}"]
    assert [m["template"] for m in to_camille] == [t for _, t in sent(services, "camille")]
    assert f"Your referral code is {code}." in to_camille[0]["content"]["text"]
    rewards = [m["content"]["text"] for m in to_camille if m["template"] == "referral-reward"]
    granted = [e["reward_code"] for e in events_of(services, "camille", "Referral Converted")]
    assert len(set(granted)) == 3
    assert all(
        f"Your reward code: {reward}" in text for reward, text in zip(granted, rewards, strict=True)
    )
    [to_lea] = [m for m in delivered if m["to"] == "lea@example.com"]
    assert "Votre code de parrainage est LEA-" in to_lea["content"]["text"]
