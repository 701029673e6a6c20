"""Segments kept true by the worker: on events, on trait changes, when time passes, in batch,
across merges (SQLite and PostgreSQL, simulated clock)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from parcours.customers import profiles as customers
from parcours.runtime.clock import SimulatedClock
from parcours.segments import catalog as segments
from parcours.services import Services
from tests.conftest import make_event

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR

RECENT_BUYERS = """\
id: recent-buyers
name: Bought in the last 30 days
conditions:
  - events: {name: Order Completed, within: 30d, count: {gte: 1}}
"""

GOLD = """\
id: gold
name: Gold tier
conditions:
  - profile.traits.tier: {eq: gold}
"""


def define(services: Services, source: str, *, update: bool = False) -> None:
    """Save a segment as the admin API does and let the worker evaluate everyone."""
    segments.save(
        services.db,
        source,
        "ana",
        services.clock.now_ms(),
        mode="update" if update else "create",
    )
    services.worker.run_due()


def send(services: Services, *events: Any) -> None:
    services.writer.append_sync(list(events))
    services.worker.run_due()


def identify(services: Services, user: str, **traits: Any) -> None:
    send(services, make_event("identify", userId=user, at=services.clock.now_ms(), traits=traits))


def track(
    services: Services, user: str, name: str, at: int | None = None, **properties: Any
) -> None:
    moment = services.clock.now_ms() if at is None else at
    send(services, make_event("track", userId=user, event=name, at=moment, properties=properties))


def customer_of(services: Services, user: str) -> int:
    with services.db.read() as conn:
        return customers.resolve(conn, user, "FR")


def member_of(services: Services, user: str) -> list[str]:
    with services.db.read() as conn:
        return [m.segment for m in segments.segments_of(conn, customer_of(services, user))]


def segment_events(services: Services, user: str) -> list[tuple[str, str, bool]]:
    """(event, segment, backfill) of the customer's Segment Entered / Exited events."""
    with services.db.read() as conn:
        page = customers.event_page(conn, customer_of(services, user), limit=500).events
    return [
        (e["event"], e["properties"]["segment"], bool(e["properties"].get("backfill")))
        for e in reversed(page)
        if e.get("event") in (segments.SEGMENT_ENTERED, segments.SEGMENT_EXITED)
    ]


def jobs_of_kind(services: Services, kind: str) -> int:
    with services.db.read() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM jobs WHERE kind = :k"), {"k": kind}
            ).scalar_one()
        )


def test_an_order_enters_the_buyer_and_the_log_says_so(services: Services) -> None:
    define(services, RECENT_BUYERS)
    track(services, "ana", "Product Viewed", product_id="p-1")
    assert member_of(services, "ana") == []
    track(services, "ana", "Order Completed", order_id="o-1", total=30)
    assert member_of(services, "ana") == ["recent-buyers"]
    assert segment_events(services, "ana") == [("Segment Entered", "recent-buyers", False)]
    track(services, "ana", "Order Completed", order_id="o-2", total=30)
    assert segment_events(services, "ana") == [("Segment Entered", "recent-buyers", False)]


def test_a_trait_change_enters_and_exits(services: Services) -> None:
    define(services, GOLD)
    identify(services, "bo", tier="silver")
    assert member_of(services, "bo") == []
    identify(services, "bo", tier="gold")
    assert member_of(services, "bo") == ["gold"]
    identify(services, "bo", tier="silver")
    assert member_of(services, "bo") == []
    assert segment_events(services, "bo") == [
        ("Segment Entered", "gold", False),
        ("Segment Exited", "gold", False),
    ]
    with services.db.read() as conn:
        history = conn.execute(
            text("SELECT entered_at, exited_at, exit_reason FROM segment_memberships")
        ).all()
    assert len(history) == 1 and history[0].exited_at is not None
    assert history[0].exit_reason == "conditions no longer hold"


def test_a_trait_in_an_events_context_counts_too(services: Services) -> None:
    define(services, GOLD)
    event = make_event(
        "track",
        userId="cy",
        event="Page Viewed",
        at=services.clock.now_ms(),
        context={"traits": {"tier": "gold"}},
    )
    send(services, event)
    assert member_of(services, "cy") == ["gold"]


def test_only_segments_an_event_can_change_are_evaluated(services: Services) -> None:
    define(services, GOLD)
    define(services, RECENT_BUYERS)
    identify(services, "di", tier="bronze")
    services.writer.append_sync(
        [make_event("track", userId="di", event="Product Viewed", at=services.clock.now_ms())]
    )
    assert jobs_of_kind(services, segments.EVALUATE) == 0  # nothing to re-evaluate
    services.writer.append_sync(
        [make_event("identify", userId="di", at=services.clock.now_ms(), traits={"name": "Di"})]
    )
    assert jobs_of_kind(services, segments.EVALUATE) == 0  # a trait no segment reads
    services.writer.append_sync(
        [make_event("identify", userId="di", at=services.clock.now_ms(), traits={"tier": "gold"})]
    )
    assert jobs_of_kind(services, segments.EVALUATE) == 1
    services.worker.run_due()
    assert member_of(services, "di") == ["gold"]


def test_computed_traits_and_event_aggregates_together(services: Services) -> None:
    define(
        services,
        """\
id: big-spenders
name: Spent 200 EUR or more this year, on at least two orders
conditions:
  - profile.computed.orders_count: {gte: 2}
  - events:
      name: Order Completed
      within: 365d
      where: [{properties.currency: {eq: EUR}}]
      sum: {of: properties.total, gte: 200}
""",
    )
    track(services, "ed", "Order Completed", order_id="e-1", total=150, currency="EUR")
    assert member_of(services, "ed") == []
    track(services, "ed", "Order Completed", order_id="e-2", total=40, currency="USD")
    assert member_of(services, "ed") == []  # two orders, but 150 EUR
    track(services, "ed", "Order Completed", order_id="e-3", total="60.50", currency="EUR")
    assert member_of(services, "ed") == ["big-spenders"]
    track(services, "ed", "Order Cancelled", order_id="e-2")
    assert member_of(services, "ed") == ["big-spenders"]  # still two orders


def test_a_recent_buyer_leaves_thirty_days_later_with_no_event(
    services: Services, clock: SimulatedClock
) -> None:
    define(services, RECENT_BUYERS)
    track(services, "fa", "Order Completed", order_id="f-1")
    clock.advance_ms(10 * DAY)
    track(services, "fa", "Order Completed", order_id="f-2")  # the 30 days start again
    assert jobs_of_kind(services, segments.RECHECK) == 1  # one re-check, at the right moment
    clock.advance_ms(30 * DAY - MINUTE)
    services.worker.run_due()
    assert member_of(services, "fa") == ["recent-buyers"]
    clock.advance_ms(MINUTE)
    services.worker.run_due()
    assert member_of(services, "fa") == []
    assert segment_events(services, "fa")[-1] == ("Segment Exited", "recent-buyers", False)
    assert jobs_of_kind(services, segments.RECHECK) == 0


def test_a_lapsed_buyer_enters_ninety_days_after_the_last_order(
    services: Services, clock: SimulatedClock
) -> None:
    define(
        services,
        """\
id: lapsed
name: Last order more than 90 days ago
conditions:
  - events: {name: Order Completed, since_last: {gt: 90d}}
""",
    )
    track(services, "gi", "Order Completed", order_id="g-1")
    identify(services, "never", email="never@example.com")
    clock.advance_ms(90 * DAY)
    services.worker.run_due()
    assert member_of(services, "gi") == []  # exactly 90 days: not more
    clock.advance_ms(1)
    services.worker.run_due()
    assert member_of(services, "gi") == ["lapsed"]
    assert member_of(services, "never") == []  # never ordered: not lapsed
    track(services, "gi", "Order Completed", order_id="g-2")
    assert member_of(services, "gi") == []


def test_a_new_segment_is_evaluated_for_every_customer_in_chunks(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("parcours.segments.engine.BACKFILL_CHUNK", 2)
    for number in range(5):
        identify(services, f"c{number}", tier="gold" if number % 2 == 0 else "silver")
    define(services, GOLD)
    golds = ["c0", "c2", "c4"]
    assert [u for u in (f"c{n}" for n in range(5)) if member_of(services, u)] == golds
    assert segment_events(services, "c0") == [("Segment Entered", "gold", True)]
    with services.db.read() as conn:
        described = segments.describe(conn, "gold")
    assert described.members == 3 and described.evaluation == "done"
    # A changed definition: everyone again; those who no longer match leave (backfill too).
    define(services, GOLD.replace("eq: gold", "in: [gold, silver]"), update=True)
    assert all(member_of(services, f"c{n}") == ["gold"] for n in range(5))
    define(services, GOLD.replace("eq: gold", "eq: silver"), update=True)
    assert member_of(services, "c0") == []
    assert segment_events(services, "c0")[-1] == ("Segment Exited", "gold", True)
    with services.db.read() as conn:
        reason = conn.execute(
            text(
                "SELECT exit_reason FROM segment_memberships WHERE customer_id = :c "
                "ORDER BY id DESC"
            ),
            {"c": customer_of(services, "c0")},
        ).scalar()
    assert reason == "segment changed"


def test_saving_the_same_definition_again_evaluates_nobody(services: Services) -> None:
    define(services, GOLD)
    saved = segments.save(services.db, GOLD, "ana", services.clock.now_ms(), mode="update")
    assert saved.changed is False and saved.generation == 1
    assert jobs_of_kind(services, segments.BACKFILL) == 0


def test_a_merge_keeps_the_persons_memberships_and_recomputes_them(services: Services) -> None:
    define(services, GOLD)
    define(
        services,
        """\
id: repeat-buyers
name: Two orders or more
conditions:
  - events: {name: Order Completed, count: {gte: 2}}
""",
    )
    # A known customer with one order; later, a visitor with a gold tier and one order.
    track(services, "hu", "Order Completed", order_id="m-2")
    send(
        services,
        make_event(
            "identify", anonymousId="anon-1", at=services.clock.now_ms(), traits={"tier": "gold"}
        ),
    )
    send(
        services,
        make_event(
            "track",
            anonymousId="anon-1",
            event="Order Completed",
            at=services.clock.now_ms(),
            properties={"order_id": "m-1"},
        ),
    )
    visitor, known = customer_of(services, "anon-1"), customer_of(services, "hu")
    assert member_of(services, "anon-1") == ["gold"]
    assert member_of(services, "hu") == []
    # The visitor logs in: one person, two orders, and still gold.
    send(
        services,
        make_event("identify", userId="hu", anonymousId="anon-1", at=services.clock.now_ms()),
    )
    survivor = customer_of(services, "hu")
    assert customer_of(services, "anon-1") == survivor
    assert member_of(services, "hu") == ["gold", "repeat-buyers"]
    entered = [e for e in segment_events(services, "hu") if e[0] == "Segment Entered"]
    # Gold was entered once (by the visitor) and not again at the merge.
    assert [e[1] for e in entered].count("gold") == 1
    with services.db.read() as conn:
        left_behind = conn.execute(
            text("SELECT count(*) FROM segment_memberships WHERE customer_id = :c"),
            {"c": visitor},  # the profile merged away
        ).scalar_one()
        open_rows = conn.execute(
            text(
                "SELECT segment_id, count(*) FROM segment_memberships WHERE exited_at IS NULL "
                "GROUP BY segment_id ORDER BY segment_id"
            )
        ).all()
    assert [tuple(r) for r in open_rows] == [("gold", 1), ("repeat-buyers", 1)]
    assert survivor == known and left_behind == 0  # the visitor's stay in gold moved over


def test_both_profiles_in_a_segment_keep_one_membership_after_a_merge(services: Services) -> None:
    define(services, GOLD)
    send(
        services,
        make_event(
            "identify", anonymousId="anon-2", at=services.clock.now_ms(), traits={"tier": "gold"}
        ),
    )
    identify(services, "iv", tier="gold")
    send(
        services,
        make_event("identify", userId="iv", anonymousId="anon-2", at=services.clock.now_ms()),
    )
    assert member_of(services, "iv") == ["gold"]
    with services.db.read() as conn:
        rows = conn.execute(
            text("SELECT customer_id, exited_at, exit_reason FROM segment_memberships ORDER BY id")
        ).all()
    survivor = customer_of(services, "iv")
    assert {r.customer_id for r in rows} == {survivor}
    assert [r.exit_reason is None for r in rows] == [True, False]  # the earlier stay goes on
    assert not any(e[0] == "Segment Exited" for e in segment_events(services, "iv"))


def test_a_merge_while_an_evaluation_waits_does_not_make_the_person_leave(
    services: Services,
) -> None:
    define(services, GOLD)
    identify(services, "jo", email="jo@example.com")
    send(
        services,
        make_event(
            "identify", anonymousId="anon-3", at=services.clock.now_ms(), traits={"tier": "gold"}
        ),
    )
    # The visitor's next event and the login that merges them are stored before the worker
    # runs: the visitor's evaluation runs after the merge, on a profile merged away.
    now = services.clock.now_ms()
    services.writer.append_sync(
        [make_event("identify", anonymousId="anon-3", at=now, traits={"tier": "gold"})]
    )
    services.writer.append_sync([make_event("identify", userId="jo", anonymousId="anon-3", at=now)])
    services.worker.run_due()
    assert member_of(services, "jo") == ["gold"]
    assert segment_events(services, "jo") == [("Segment Entered", "gold", False)]
    with services.db.read() as conn:
        reasons = conn.execute(text("SELECT exit_reason FROM segment_memberships")).scalars().all()
    assert reasons == [None]


def test_a_count_and_the_time_since_the_last_in_one_condition(
    services: Services, clock: SimulatedClock
) -> None:
    define(
        services,
        """\
id: lapsed-regulars
name: Two orders or more, none in 60 days
conditions:
  - events: {name: Order Completed, count: {gte: 2}, since_last: {gte: 60d}}
""",
    )
    track(services, "ka", "Order Completed", order_id="k-1")
    track(services, "ka", "Order Completed", order_id="k-2")
    assert member_of(services, "ka") == []
    clock.advance_ms(60 * DAY)
    services.worker.run_due()
    assert member_of(services, "ka") == ["lapsed-regulars"]
