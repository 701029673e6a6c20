"""The computed traits read commerce (issue 21): orders counted once whatever reported
them, cancellations and refunds taken into account, VIP from spend; the views per product
and day; and what the ready-made welcome, VIP private sale, win-back and browse
abandonment journeys read of them, on the simulated clock. SQLite and PostgreSQL
(docs/commerce.md, "Traits from commerce")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parcours import commerce
from parcours.customers import profiles as customers
from parcours.journeys.versions import runs_of
from parcours.runtime.clock import SimulatedClock, iso
from parcours.services import Services
from tests.conftest import make_event
from tests.test_journeys_engine import DAY, HOUR, advance, opt_in, publish, sent, track

TEMPLATES = Path(__file__).resolve().parents[1] / "src/parcours/journeys/templates"


def template(name: str) -> str:
    return (TEMPLATES / f"{name}.yaml").read_text(encoding="utf-8")


def computed(services: Services, user: str) -> dict[str, Any]:
    with services.db.read() as conn:
        return dict(customers.profile(conn, customers.resolve(conn, user, "FR")).computed)


def order(services: Services, user: str, order_id: str, total: float, **more: Any) -> None:
    track(services, user, "Order Completed", order_id=order_id, total=total, **more)


def test_an_order_reported_twice_counts_once_and_cancellations_and_refunds_come_off(
    services: Services, clock: SimulatedClock
) -> None:
    first = clock.now_ms()
    order(services, "ana", "o-1", 100, currency="EUR")
    order(services, "ana", "o-1", 100, currency="EUR")  # Shopify after the site: one order
    advance(services, clock, DAY, step=DAY)
    order(services, "ana", "o-2", 60, currency="EUR")
    order(services, "ana", "o-3", 40, currency="EUR")
    track(services, "ana", "Order Refunded", order_id="o-2", total=20)  # in part
    track(services, "ana", "Order Refunded", order_id="o-3", total=40)  # in full: not an order
    seen = computed(services, "ana")
    assert seen["orders_count"] == 2
    assert seen["revenue"]["EUR"]["total_spent"] == "140.00"
    assert seen["revenue"]["EUR"]["orders"] == 2
    assert (seen["first_order_at"], seen["last_order_at"]) == (iso(first), iso(first + DAY))
    track(services, "ana", "Order Cancelled", order_id="o-2")
    seen = computed(services, "ana")
    assert (seen["orders_count"], seen["revenue"]["EUR"]["total_spent"]) == (1, "100.00")
    assert seen["last_order_at"] == iso(first)
    track(services, "ana", "Order Cancelled", order_id="o-1")
    seen = computed(services, "ana")
    assert (seen["orders_count"], seen["revenue"], seen["last_order_at"]) == (0, {}, None)


def test_a_vip_has_spent_the_threshold_in_one_currency(
    services: Services, clock: SimulatedClock
) -> None:
    order(services, "vi", "o-1", 300, currency="EUR")
    order(services, "vi", "o-2", 300, currency="GBP")
    assert computed(services, "vi")["vip"] is False  # 300 in each: neither reaches 500
    order(services, "vi", "o-3", 200, currency="EUR")
    assert computed(services, "vi")["vip"] is True
    track(services, "vi", "Order Refunded", order_id="o-3", total=1)
    assert computed(services, "vi")["vip"] is False  # 499 spent


def test_a_merge_counts_both_profiles_orders_on_the_survivor(
    services: Services, clock: SimulatedClock
) -> None:
    services.writer.append_sync(
        [
            make_event(
                anonymousId="phone-1",
                event="Order Completed",
                at=clock.now_ms(),
                properties={"order_id": "o-1", "total": 450, "currency": "EUR"},
            )
        ]
    )
    order(services, "mo", "o-2", 100, currency="EUR")
    assert computed(services, "mo")["vip"] is False
    services.writer.append_sync(
        [make_event("identify", userId="mo", anonymousId="phone-1", at=clock.now_ms())]
    )
    services.worker.run_due()  # commerce counts the survivor again
    seen = computed(services, "mo")
    assert (seen["orders_count"], seen["vip"]) == (2, True)
    assert seen["revenue"]["EUR"]["total_spent"] == "550.00"


def test_one_group_keeps_both_what_the_profile_and_the_orders_computed(
    services: Services, clock: SimulatedClock
) -> None:
    """A group that changes a known customer's profile and brings their order: the
    computed traits hold the profile's (last seen, country) and the order's, whichever
    wrote last in the transaction (on PostgreSQL the order traits start from what the
    projection wrote, not read again)."""
    order(services, "lu", "o-1", 30, currency="EUR")
    later = clock.now_ms() + DAY
    services.writer.append_sync(
        [
            make_event("identify", userId="lu", at=later, context={"location": {"country": "BE"}}),
            make_event(
                userId="lu",
                event="Order Completed",
                at=later,
                properties={"order_id": "o-2", "total": 20, "currency": "EUR"},
            ),
        ]
    )
    seen = computed(services, "lu")
    assert (seen["orders_count"], seen["revenue"]["EUR"]["total_spent"]) == (2, "50.00")
    assert seen["last_order_at"] == seen["last_seen_at"] == iso(later)
    assert seen["country"] == "BE"


def test_a_group_of_new_orders_counts_its_buyers_earlier_orders_and_its_own(
    services: Services, clock: SimulatedClock
) -> None:
    """A group whose only order events are new orders: each buyer's traits count the
    orders stored before (their refunds off) and the group's, once (on PostgreSQL the
    stored ones are read before the group's are written, and those come from the rows
    inserted). A group one of whose orders had a refund kept before it came counts that
    refund."""
    first = clock.now_ms()
    order(services, "ana", "o-1", 100, currency="EUR")
    track(services, "ana", "Order Refunded", order_id="o-1", total=30)
    track(services, "cy", "Order Refunded", order_id="o-6", total=15)  # before its order
    later = first + DAY

    def placed(user: str, order_id: str, total: float, currency: str) -> Any:
        properties = {"order_id": order_id, "total": total, "currency": currency}
        return make_event(userId=user, event="Order Completed", at=later, properties=properties)

    services.writer.append_sync(
        [
            placed("ana", "o-2", 50, "EUR"),
            placed("bo", "o-3", 20, "EUR"),
            placed("bo", "o-4", 10, "USD"),
        ]
    )
    ana = computed(services, "ana")
    assert (ana["orders_count"], ana["revenue"]["EUR"]["total_spent"]) == (2, "120.00")
    assert (ana["first_order_at"], ana["last_order_at"]) == (iso(first), iso(later))
    bo = computed(services, "bo")
    assert bo["orders_count"] == 2
    assert {c: r["total_spent"] for c, r in bo["revenue"].items()} == {
        "EUR": "20.00",
        "USD": "10.00",
    }
    services.writer.append_sync([placed("cy", "o-5", 30, "EUR"), placed("cy", "o-6", 40, "EUR")])
    cy = computed(services, "cy")
    assert (cy["orders_count"], cy["revenue"]["EUR"]["total_spent"]) == (2, "55.00")


def test_views_are_counted_per_product_and_day(services: Services, clock: SimulatedClock) -> None:
    for _ in range(3):
        track(services, "vic", "Product Viewed", product_id="p-1")
        advance(services, clock, HOUR, step=HOUR)
    track(services, "vic", "Product Viewed", product_id="p-2")
    advance(services, clock, DAY, step=HOUR)
    track(services, "vic", "Product Viewed", product_id="p-1")
    with services.db.read() as conn:
        vic = customers.resolve(conn, "vic", "FR")
        views = commerce.product_views(conn, vic, since=clock.now_ms() - 7 * DAY)
    today, yesterday = iso(clock.now_ms())[:10], iso(clock.now_ms() - DAY)[:10]
    assert [(v.product_id, v.day, v.views) for v in views] == [
        ("p-1", today, 1),
        ("p-1", yesterday, 3),
        ("p-2", yesterday, 1),
    ]


# ---- what the ready-made journeys read ------------------------------------------------------


def test_vip_private_sale_invites_a_vip_by_whatsapp_at_once_and_others_by_email_a_day_later(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, template("vip-private-sale"))
    opt_in(services, "big")
    opt_in(services, "small")
    order(services, "big", "o-1", 650, currency="EUR")
    for n in range(3):  # three small orders: not a VIP (spend decides, not the count)
        order(services, "small", f"s-{n}", 30, currency="EUR")
    track(services, "big", "Private Sale Announced", sale_id="winter")
    track(services, "small", "Private Sale Announced", sale_id="winter")
    assert sent(services, "big") == [("whatsapp", "private-sale-vip")]
    assert sent(services, "small") == []
    advance(services, clock, DAY, step=HOUR)
    assert sent(services, "small") == [("email", "private-sale-early-access")]


def test_welcome_series_stops_at_the_first_order(services: Services, clock: SimulatedClock) -> None:
    publish(services, template("welcome"))
    opt_in(services, "new")
    opt_in(services, "browsing")
    track(services, "new", "Signed Up")
    track(services, "browsing", "Signed Up")
    assert sent(services, "new") == [("email", "welcome")]
    advance(services, clock, DAY, step=HOUR)
    order(services, "new", "o-1", 40, currency="EUR")
    advance(services, clock, 10 * DAY, step=HOUR)
    assert sent(services, "new") == [("email", "welcome")]
    assert [t for _, t in sent(services, "browsing")] == [
        "welcome",
        "welcome-tutorial",
        "welcome-offer",
        "welcome-recommendation",
    ]


def test_win_back_waits_ninety_days_from_the_last_order_that_counts(
    services: Services, clock: SimulatedClock
) -> None:
    """The run waits from each order (the journey's own count of days since the last
    order); the trait `last_order_at` says the same for segments."""
    publish(services, template("win-back"))
    opt_in(services, "old")
    order(services, "old", "o-1", 80, currency="EUR")
    ordered_at = clock.now_ms()
    advance(services, clock, 89 * DAY, step=DAY)
    assert sent(services, "old") == []
    assert computed(services, "old")["last_order_at"] == iso(ordered_at)
    advance(services, clock, 2 * DAY, step=HOUR)
    assert sent(services, "old") == [("email", "win-back-offer")]


def test_browse_abandonment_after_three_views_of_one_product_in_a_day(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, template("browse-abandonment"))
    opt_in(services, "eye")
    for _ in range(3):
        track(services, "eye", "Product Viewed", product_id="p-7")
        advance(services, clock, 3 * HOUR, step=HOUR)
    with services.db.read() as conn:
        eye = customers.resolve(conn, "eye", "FR")
        [views] = commerce.product_views(conn, eye, since=clock.now_ms() - DAY)
    assert (views.product_id, views.views) == ("p-7", 3)
    assert sent(services, "eye") == [("email", "browse-abandonment")]


def test_a_vip_segment_follows_spend_and_refunds(services: Services) -> None:
    from tests.test_segments import define, member_of

    define(
        services,
        """\
id: vip
name: VIP by spend
conditions:
  - profile.computed.vip: {eq: true}
""",
    )
    order(services, "vera", "o-1", 600, currency="EUR")
    assert member_of(services, "vera") == ["vip"]
    track(services, "vera", "Order Refunded", order_id="o-1", total=200)
    services.worker.run_due()
    assert member_of(services, "vera") == []


def test_a_cancellation_reported_before_its_order_ends_the_journey_the_order_enters(
    services: Services, clock: SimulatedClock
) -> None:
    """Shops' webhooks come in any order: `Order Cancelled` first, then the `Order
    Completed` it cancels. Commerce keeps the order cancelled; the journey the order
    enters reads the cancellation by when it happened (after the order), so the
    confirmation is not sent, and another order's is."""
    publish(services, template("order-confirmation"))
    opt_in(services, "ana")
    now = clock.now_ms()
    services.writer.append_sync(
        [
            make_event(
                userId="ana",
                event="Order Cancelled",
                at=now - 60_000,
                properties={"order_id": "o-9", "reason": "customer"},
            )
        ]
    )
    services.writer.append_sync(
        [
            make_event(
                userId="ana",
                event="Order Completed",
                at=now - 120_000,
                properties={"order_id": "o-9", "total": 30, "currency": "EUR"},
            ),
            make_event(
                userId="ana",
                event="Order Completed",
                at=now - 120_000,
                properties={"order_id": "o-10", "total": 20, "currency": "EUR"},
            ),
        ]
    )
    advance(services, clock, HOUR, step=5 * 60_000)
    with services.db.read() as conn:
        cancelled = commerce.order(conn, "o-9")
        ana = customers.resolve(conn, "ana", "FR")
        ended = {run.key: run for run in runs_of(conn, ana)}
    assert cancelled is not None and cancelled.status == "cancelled"
    assert sent(services, "ana") == [("email", "order-confirmation")]  # o-10's alone
    assert (ended["o-9"].state, ended["o-9"].end_reason) == (
        "ended",
        "exit condition: Order Cancelled",
    )
    assert ended["o-10"].state == "ended" and ended["o-10"].end_reason == "completed"
