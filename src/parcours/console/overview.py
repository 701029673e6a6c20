"""The overview: what happened today and over 30 days (from the log's hourly counts,
parcours.analytics), and how the background work stands (runtime's queue health)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.response import Redirect

from parcours import analytics
from parcours.console.access import ConsoleParts, brand_of, signed_in
from parcours.console.counts import counted
from parcours.console.rendering import page
from parcours.customers import profiles
from parcours.http import Injected
from parcours.runtime.metrics import QueueHealth, queue_health

DAYS = 30
# The overview counts a queue's due and failed jobs up to this many ("10,000+"): counting a
# backlog of a million took 300 ms on PostgreSQL; /metrics counts them all.
QUEUE_COUNT_UP_TO = 10_000
DAY_MS = 24 * 3_600_000
MESSAGE_STAGES = (
    ("sent", "Message Sent"),
    ("delivered", "Message Delivered"),
    ("opened", "Message Opened"),
    ("clicked", "Message Clicked"),
)


@dataclass
class Figures:
    """What happened over a span of days."""

    events: int = 0
    new_customers: int = 0
    orders: int = 0
    revenue: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    messages: dict[str, dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )  # channel -> stage -> count
    held: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # reason -> count
    unsubscribes: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # channel


@dataclass(frozen=True)
class Day:
    day: date
    events: int
    sent: int


@dataclass(frozen=True)
class Overview:
    today: Figures
    month: Figures
    days: list[Day]
    health: QueueHealth


def _add(figures: Figures, count: analytics.HourCount) -> None:
    figures.events += count.count
    for stage, name in MESSAGE_STAGES:
        if count.name == name:
            figures.messages[count.channel or "?"][stage] += count.count
    if count.name == "Message Held":
        figures.held[count.detail or "?"] += count.count
    elif count.name == "Order Completed":
        figures.orders += count.count
        if count.currency:
            figures.revenue[count.currency] += count.amount
    elif count.name == "Consent Updated" and count.detail.endswith(":withdrawn"):
        figures.unsubscribes[count.channel or "?"] += count.count


def overview_of(parts: ConsoleParts) -> Overview:
    now = parts.clock.now_ms()
    analytics.catch_up(parts.db, limit=analytics.PAGE_LIMIT)  # the worker keeps up
    zone = brand_of(parts).timezone  # the brand's, as the Settings page set it
    today = analytics.local_day(now // analytics.HOUR_MS, zone)
    first = today - timedelta(days=DAYS - 1)
    with parts.db.read() as conn:
        counts = analytics.hourly(conn, now - (DAYS + 1) * DAY_MS, now)
        health = queue_health(
            conn, parts.queues, parts.clock, parts.stale_ms, count_up_to=QUEUE_COUNT_UP_TO
        )
        new_today = counted(conn, "new today", lambda c: profiles.new_since(c, now - DAY_MS))
        new_month = counted(
            conn, "new in 30 days", lambda c: profiles.new_since(c, now - DAYS * DAY_MS)
        )
    on_day: dict[date, Figures] = defaultdict(Figures)
    month = Figures(new_customers=new_month)
    for count in counts:
        day = analytics.local_day(count.hour, zone)
        if first <= day <= today:
            _add(on_day[day], count)
            _add(month, count)
    current = on_day.get(today, Figures())
    current.new_customers = new_today
    days = [
        Day(
            d,
            on_day[d].events if d in on_day else 0,
            sum(s.get("sent", 0) for s in on_day[d].messages.values()) if d in on_day else 0,
        )
        for d in (first + timedelta(days=i) for i in range(DAYS))
    ]
    return Overview(current, month, days, health)


@get("/console/", sync_to_thread=True)
def overview(request: Request[Any, Any, Any], console: Injected[ConsoleParts]) -> Response[bytes]:
    viewer = signed_in(request, console)
    figures = overview_of(console)
    peak = max([1, *(max(d.events, d.sent) for d in figures.days)])
    return page(viewer, "overview.html", o=figures, peak=peak, stages=MESSAGE_STAGES)


@get("/", include_in_schema=False, sync_to_thread=False)
def root() -> Redirect:
    return Redirect("/console/", status_code=302)


def overview_routes() -> list[HTTPRouteHandler]:
    return [overview, root]
