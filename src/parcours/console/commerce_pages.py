"""Commerce in the console (issue 21, docs/console.md "Commerce"): an order's page, the
Shipments page (stalled, delayed and exceptions first), the Returns page, the Catalog and
stock page, the Back in stock page, the Reviews page, and the tracking page's preview per
stage and sector from sample data. Every signed-in user reads them; the one change made
on them is a review hidden or published again, by those who moderate reviews, audited.
Everything is read and changed through commerce's face."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery
from sqlalchemy import Connection

from parcours import accounts, commerce, journeys
from parcours.commerce import reviews, statuses
from parcours.console.access import ConsoleParts, Form, brand_of, changing, go, signed_in
from parcours.console.outbox_pages import words_for
from parcours.console.rendering import Viewer, not_found, page, render
from parcours.console.review_pages import PHOTO_HEADERS
from parcours.console.tracking_pages import HEADERS, Stage, Tracked, draw, timeline
from parcours.customers import profiles
from parcours.http import Injected
from parcours.messaging import SECTOR_PRESETS
from parcours.runtime.documents import JsonObject
from parcours.runtime.i18n import SHIPPED

HOUR_MS = 3_600_000
# the longest "stalled after" the page's field takes (by default the setting
# `shipment_stalled_after_hours`, after which commerce appends `Shipment Stalled`)
MAX_STALLED_AFTER_HOURS = 24 * 60
SHOWN = 50  # rows of each list
REQUESTS_SHOWN = 20  # back-in-stock requests listed under each variant
REQUEST_STATUSES = ("waiting", "notified")
RATINGS = (5, 4, 3, 2, 1)
RETURN_STAGES = ("requested", "label_sent", "received", "refunded")
# The tracking page's preview is drawn in a frame of the console's own pages.
FRAME_HEADERS = {
    **HEADERS,
    "Content-Security-Policy": HEADERS["Content-Security-Policy"].replace(
        "frame-ancestors 'none'", "frame-ancestors 'self'"
    ),
    "X-Frame-Options": "SAMEORIGIN",
}


# ---- orders (the customer's page, an order's page) ------------------------------------------


@dataclass(frozen=True)
class OrderView:
    """An order as the console shows it: its parcels with their stages, its returns, and
    its tracking page's link."""

    order: commerce.Order
    parcels: list[tuple[commerce.Shipment, list[Stage]]]
    returns: list[commerce.Return]
    tracking: str | None


def orders_of(
    conn: Connection, parts: ConsoleParts, customer_id: int, limit: int
) -> list[OrderView]:
    """A customer's `limit` latest orders with their parcels and returns (four queries for
    the orders, one for their parcels and one for their scans, one for their returns)."""
    found = commerce.orders_of(conn, customer_id, limit)
    ids = [o.order_id for o in found]
    parcels = commerce.shipments_of_orders(conn, ids)
    returns = commerce.returns_of_orders(conn, ids)
    return [
        _view(parts, o, parcels.get(o.order_id, []), returns.get(o.order_id, [])) for o in found
    ]


def _view(
    parts: ConsoleParts,
    order: commerce.Order,
    parcels: list[commerce.Shipment],
    returns: list[commerce.Return],
) -> OrderView:
    link = parts.links.tracking(order.order_id) if parts.links is not None else None
    return OrderView(order, [(s, timeline(s)) for s in parcels], returns, link)


@get("/console/orders/{order_id:str}", sync_to_thread=True)
def order_page(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], order_id: FromPath[str]
) -> Response[bytes]:
    viewer = signed_in(request, console)
    with console.db.read() as conn:
        found = commerce.order(conn, order_id)
        if found is None:
            return not_found(viewer, "commerce.order.unknown")
        view = _view(
            console,
            found,
            commerce.shipments_of_order(conn, order_id),
            commerce.returns_of_order(conn, order_id),
        )
    return page(viewer, "commerce_order.html", current="/console/shipments", view=view)


# ---- shipments ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ShipmentRow:
    line: commerce.ShipmentLine
    flags: tuple[str, ...]  # stalled, delayed, exception


def flags_of(line: commerce.ShipmentLine, now: int, silent_since: int) -> tuple[str, ...]:
    """Why a parcel needs attention: `stalled` (on its way, no report since
    `silent_since`), `delayed` (on its way, its estimate passed, moved later than the
    first, or a carrier said it is late), `exception` (a problem reported)."""
    found: list[str] = []
    if line.status not in statuses.FINAL:
        if line.last_report_at < silent_since:
            found.append("stalled")
        passed = line.estimated_to is not None and line.estimated_to < now
        if line.reported_late or line.slipped or passed:
            found.append("delayed")
    if line.status == statuses.EXCEPTION:
        found.append("exception")
    return tuple(found)


def _hours(value: str, default: int) -> int:
    try:
        hours = int(value)
    except ValueError:
        return default
    return min(max(hours, 1), MAX_STALLED_AFTER_HOURS)


@get("/console/shipments", sync_to_thread=True)
def shipments_page(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    status: FromQuery[str] = "",
    stalled_after: FromQuery[str] = "",
) -> Response[bytes]:
    """Parcels needing attention first (stalled, then delayed, then exceptions), then the
    others by their last report; of one status when asked."""
    viewer = signed_in(request, console)
    chosen = status if status in statuses.STATUSES else ""
    # The configured delay (`shipment_stalled_after_hours`, the one `Shipment Stalled`
    # waits for) unless the page asks for another.
    default = console.stalled_after_hours
    hours = _hours(stalled_after, default) if stalled_after else default
    now = console.clock.now_ms()
    silent_since = now - hours * HOUR_MS
    wanted = chosen or None
    with console.db.read() as conn:
        attention = commerce.shipments_stalled(conn, silent_since, wanted, SHOWN)
        attention += commerce.shipments_delayed(conn, now, wanted, SHOWN)
        if chosen in ("", statuses.EXCEPTION):
            attention += commerce.shipments_latest(conn, statuses.EXCEPTION, SHOWN)
        latest = commerce.shipments_latest(conn, wanted, SHOWN)
        counts = commerce.shipment_counts(conn)
    seen: set[str] = set()
    first: list[ShipmentRow] = []
    for line in attention:
        if line.shipment_id not in seen:
            seen.add(line.shipment_id)
            first.append(ShipmentRow(line, flags_of(line, now, silent_since)))
    others = [
        ShipmentRow(line, flags_of(line, now, silent_since))
        for line in latest
        if line.shipment_id not in seen
    ]
    return page(
        viewer,
        "commerce_shipments.html",
        current="/console/shipments",
        attention=first,
        others=others,
        counts=counts,
        total=sum(counts.values()),
        chosen=chosen,
        statuses=statuses.STATUSES,
        hours=hours,
        tracking=_tracking_links(console),
    )


def _tracking_links(parts: ConsoleParts) -> Any:
    def link(order_id: str | None) -> str | None:
        if order_id is None or parts.links is None:
            return None
        return parts.links.tracking(order_id)

    return link


# ---- returns ------------------------------------------------------------------------------


@get("/console/returns", sync_to_thread=True)
def returns_page(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    status: FromQuery[str] = "",
    window: FromQuery[str] = "",
    page_number: FromQuery[int] = 1,
) -> Response[bytes]:
    """Returns, the latest changed first; by stage, within the window or not."""
    viewer = signed_in(request, console)
    chosen = status if status in RETURN_STAGES else ""
    within = {"in": True, "out": False}.get(window)
    number = max(page_number, 1)
    with console.db.read() as conn:
        found = commerce.returns_list(conn, chosen or None, within, SHOWN + 1, (number - 1) * SHOWN)
        counts = commerce.return_counts(conn)
    return page(
        viewer,
        "commerce_returns.html",
        current="/console/returns",
        returns=found[:SHOWN],
        more=len(found) > SHOWN,
        page_number=number,
        counts=counts,
        chosen=chosen,
        window=window if within is not None else "",
        stages=RETURN_STAGES,
    )


# ---- the catalog --------------------------------------------------------------------------


@get("/console/catalog", sync_to_thread=True)
def catalog_page(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], after: FromQuery[str] = ""
) -> Response[bytes]:
    """Products with their variants, prices and stock, a page at a time."""
    viewer = signed_in(request, console)
    with console.db.read() as conn:
        found = commerce.products(conn, after=after or None, limit=SHOWN + 1)
    return page(
        viewer,
        "commerce_catalog.html",
        current="/console/catalog",
        products=found[:SHOWN],
        next_after=found[SHOWN - 1].product_id if len(found) > SHOWN else None,
        after=after,
    )


# ---- back in stock -------------------------------------------------------------------------


@get("/console/back-in-stock", sync_to_thread=True)
def back_in_stock_page(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    status: FromQuery[str] = "",
    page_number: FromQuery[int] = 1,
) -> Response[bytes]:
    """Per variant, the requests waiting and notified, its stock now, and its requests
    (waiting first); the variants with the most waiting first, 50 a page."""
    viewer = signed_in(request, console)
    chosen = status if status in REQUEST_STATUSES else ""
    number = max(page_number, 1)
    with console.db.read() as conn:
        found = commerce.stock_requests_by_variant(
            conn, chosen or None, SHOWN + 1, (number - 1) * SHOWN, REQUESTS_SHOWN
        )
        counts = commerce.stock_request_counts(conn)
        shown = found[:SHOWN]
        # Who asked, named as on the Carts page: read for the whole page at once (an
        # erased customer's traits are empty, so they are shown by their id alone).
        traits = profiles.traits_of(conn, [r.customer_id for v in shown for r in v.requests])
    names = {ident: _who(t) for ident, t in traits.items()}
    return page(
        viewer,
        "commerce_back_in_stock.html",
        current="/console/back-in-stock",
        variants=shown,
        more=len(found) > SHOWN,
        page_number=number,
        counts=counts,
        chosen=chosen,
        statuses=REQUEST_STATUSES,
        customer_ref=lambda ident: names.get(ident) or profiles.public_id(ident),
    )


# ---- carts --------------------------------------------------------------------------------

DAY_MS = 24 * HOUR_MS
CART_PERIODS = (1, 7, 30, 90)  # days of last activity the page may be limited to
SUMMARY_DAYS = 30  # the figures at the top: the carts abandoned over this many days


def _cursor(value: str) -> tuple[int, str] | None:
    """A page's cursor, `<last activity>:<cart key>` (the page before's last cart)."""
    at, _, key = value.partition(":")
    return (int(at), key) if at.isdigit() and key else None


def _who(traits: JsonObject) -> str | None:
    """How a customer is named on the commerce pages: the `name` trait, else first and
    last names, else the email the brand sent, else the phone (None: by their id alone)."""

    def text(key: str) -> str:
        value = traits.get(key)
        return value.strip() if isinstance(value, str) else ""

    full = " ".join(part for part in (text("first_name"), text("last_name")) if part)
    return text("name") or full or text("email") or text("phone") or None


def _period(value: str) -> int | None:
    return int(value) if value in {str(d) for d in CART_PERIODS} else None


@get("/console/carts", sync_to_thread=True)
def carts_page(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    status: FromQuery[str] = "",
    period: FromQuery[str] = "",
    after: FromQuery[str] = "",
) -> Response[bytes]:
    """Carts, the latest active first, 50 a page (by a cursor, however many carts), of a
    status and active within a period when asked, each with its items; above them, the
    carts abandoned over the last 30 days, those recovered, and their value. Read only."""
    viewer = signed_in(request, console)
    chosen = status if status in commerce.CART_STATUSES else ""
    days = _period(period)
    cursor = _cursor(after)
    now = console.clock.now_ms()
    with console.db.read() as conn:
        found = commerce.carts_list(
            conn,
            status=chosen or None,
            active_since=now - days * DAY_MS if days else None,
            before=cursor,
            limit=SHOWN + 1,
        )
        summary = commerce.cart_summary(conn, now - SUMMARY_DAYS * DAY_MS)
        shown = found[:SHOWN]
        traits = profiles.traits_of(
            conn, [c.customer_id for c in shown if c.customer_id is not None]
        )
        # What each abandoned cart's `Cart Abandoned` led to: the journeys it entered and
        # their messages, read for the whole page at once.
        recovery = journeys.follow_ups(
            conn,
            commerce.CART_ABANDONED,
            [
                (c.customer_id, commerce.abandoned_message_id(c.cart_key), c.abandoned_at)
                for c in shown
                if c.customer_id is not None and c.abandoned_at is not None
            ],
        )
    names = {ident: _who(t) for ident, t in traits.items()}
    last = shown[-1] if len(found) > SHOWN else None
    query = f"status={chosen}&period={days or ''}"
    html = render(
        viewer,
        "commerce_carts.html",
        current="/console/carts",
        carts=shown,
        summary=summary,
        summary_days=SUMMARY_DAYS,
        chosen=chosen,
        period=days,
        periods=CART_PERIODS,
        statuses=commerce.CART_STATUSES,
        first=f"/console/carts?{query}" if cursor is not None else None,
        next=f"/console/carts?{query}&after={last.last_activity_at}:{quote(last.cart_key)}"
        if last is not None
        else None,
        customer_ref=lambda ident: names.get(ident) or profiles.public_id(ident),
        recovery=lambda c: recovery.by_trigger.get(commerce.abandoned_message_id(c.cart_key), ()),
        recovery_live=recovery.live,
        public_id=profiles.public_id,
        **words_for(viewer),
    )
    # Product pictures come from the shop's own hosts (https), as on the tracking page.
    return Response(html.encode("utf-8"), media_type="text/html; charset=utf-8", headers=HEADERS)


# ---- reviews ------------------------------------------------------------------------------


def _rating(value: str) -> int | None:
    return int(value) if value in {str(r) for r in RATINGS} else None


@get("/console/reviews", sync_to_thread=True)
def reviews_page(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    status: FromQuery[str] = "",
    rating: FromQuery[str] = "",
    page_number: FromQuery[int] = 1,
) -> Response[bytes]:
    """Reviews, the latest first, 50 a page; by status and by a product's rating. Those
    who moderate reviews may hide or publish each."""
    viewer = signed_in(request, console)
    chosen = status if status in reviews.STATUSES else ""
    stars = _rating(rating)
    number = max(page_number, 1)
    with console.db.read() as conn:
        found = commerce.reviews_list(
            conn,
            status=chosen or None,
            rating=stars,
            limit=SHOWN + 1,
            offset=(number - 1) * SHOWN,
        )
        counts = commerce.review_counts(conn)
    query = f"status={chosen}&rating={stars or ''}&page_number={number}"
    return page(
        viewer,
        "commerce_reviews.html",
        current="/console/reviews",
        reviews=found[:SHOWN],
        more=len(found) > SHOWN,
        page_number=number,
        counts=counts,
        chosen=chosen,
        rating=stars,
        ratings=RATINGS,
        statuses=reviews.STATUSES,
        moderates=viewer.may("reviews.moderate"),
        customer_ref=profiles.public_id,
        back=f"/console/reviews?{query}",
    )


@get("/console/reviews/{order_id:str}/photo", sync_to_thread=True)
def review_photo_page(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], order_id: FromPath[str]
) -> Response[bytes]:
    """A review's photo, to signed-in users only, served as the image its bytes were
    checked to be and nothing else."""
    signed_in(request, console)
    with console.db.read() as conn:
        photo = commerce.review_photo(conn, order_id)
    if photo is None:
        return Response(b"", status_code=404, headers=PHOTO_HEADERS)
    return Response(photo.content, media_type=photo.content_type, headers=PHOTO_HEADERS)


@post("/console/reviews/{order_id:str}/status", status_code=200, sync_to_thread=True)
def moderate_page(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    order_id: FromPath[str],
    data: Form,
) -> Response[Any]:
    """Hide a review or publish it again (`reviews.moderate`: owners and marketers),
    audited in the change's transaction with the status before and after. The customer
    is told nothing."""
    viewer = changing(request, console, "reviews.moderate", data)
    assert viewer.session is not None
    actor, now = viewer.session.user, console.clock.now_ms()
    status = data.get("status", "")
    if status not in reviews.STATUSES:
        return not_found(viewer, "commerce.reviews.unknown")

    def audited(conn: Connection, before: commerce.Review, after: commerce.Review) -> None:
        accounts.record(
            conn,
            actor.actor,
            "review.moderated",
            order_id,
            now,
            before={"status": before.status},
            after={"status": after.status},
        )

    found = commerce.moderate_review(console.db, order_id, status, actor.email, now, also=audited)
    if found is None:
        return not_found(viewer, "commerce.reviews.unknown")
    back = data.get("back", "")
    return go(back if back.startswith("/console/reviews?") else "/console/reviews")


# ---- the tracking page's preview ------------------------------------------------------------

# How a parcel came to each stage, in the preview's sample.
PATHS: dict[str, tuple[str, ...]] = {
    statuses.INFO_RECEIVED: (statuses.INFO_RECEIVED,),
    statuses.IN_TRANSIT: (statuses.INFO_RECEIVED, statuses.IN_TRANSIT),
    statuses.OUT_FOR_DELIVERY: (
        statuses.INFO_RECEIVED,
        statuses.IN_TRANSIT,
        statuses.OUT_FOR_DELIVERY,
    ),
    statuses.FAILED_ATTEMPT: (
        statuses.INFO_RECEIVED,
        statuses.IN_TRANSIT,
        statuses.OUT_FOR_DELIVERY,
        statuses.FAILED_ATTEMPT,
    ),
    statuses.AVAILABLE_FOR_PICKUP: (
        statuses.INFO_RECEIVED,
        statuses.IN_TRANSIT,
        statuses.AVAILABLE_FOR_PICKUP,
    ),
    statuses.DELIVERED: (
        statuses.INFO_RECEIVED,
        statuses.IN_TRANSIT,
        statuses.OUT_FOR_DELIVERY,
        statuses.DELIVERED,
    ),
    statuses.EXCEPTION: (statuses.INFO_RECEIVED, statuses.IN_TRANSIT, statuses.EXCEPTION),
    statuses.EXPIRED: (
        statuses.INFO_RECEIVED,
        statuses.IN_TRANSIT,
        statuses.AVAILABLE_FOR_PICKUP,
        statuses.EXPIRED,
    ),
    statuses.RETURNED_TO_SENDER: (
        statuses.INFO_RECEIVED,
        statuses.IN_TRANSIT,
        statuses.AVAILABLE_FOR_PICKUP,
        statuses.EXPIRED,
        statuses.RETURNED_TO_SENDER,
    ),
}
PLACES = ("Lyon", "Mâcon", "Dijon", "Paris 11e", "Paris 11e")
# Each sector's sample items: (its key in console_commerce.json, unit price, quantity).
SAMPLES: dict[str, tuple[tuple[str, str, int], ...]] = {
    "fashion": (("linen_shirt", "59.00", 1), ("canvas_sneakers", "85.00", 1)),
    "beauty": (("face_serum", "34.00", 1), ("lip_balm", "9.50", 2)),
    "electronics": (("headphones", "129.00", 1), ("usb_cable", "15.00", 2)),
    "home": (("linen_sheets", "119.00", 1), ("candle", "24.00", 2)),
    "food": (("coffee_beans", "14.50", 3), ("olive_oil", "19.00", 1)),
    "luxury": (("leather_bag", "890.00", 1),),
    "children": (("baby_bodysuit", "22.00", 3), ("plush_toy", "29.00", 1)),
    "subscription": (("monthly_box", "39.00", 1),),
    "": (("sample_item", "45.00", 1), ("gift_card", "25.00", 1)),
}


def _stage(value: str) -> str:
    return value if value in PATHS else statuses.IN_TRANSIT


def sample(viewer: Viewer, stage: str, sector: str, now: int) -> Tracked:
    """An order of `sector`'s sample items, with one parcel that reached `stage` (its
    stages six hours apart, the last an hour ago), no real customer's."""
    path = PATHS[_stage(stage)]
    placed = now - (len(path) * 6 + 12) * HOUR_MS
    lines = tuple(
        commerce.OrderLine(
            line=number,
            product_id=f"sample-{key}",
            variant_id=None,
            sku=None,
            name=viewer.t(f"commerce.sample.{key}"),
            image_url=None,
            price=Decimal(price),
            quantity=quantity,
            refunded_quantity=0,
            refunded_amount=Decimal(0),
        )
        for number, (key, price, quantity) in enumerate(SAMPLES.get(sector, SAMPLES[""]), 1)
    )
    total = sum((line.price * line.quantity for line in lines), Decimal(0))
    order = commerce.Order(
        order_id="preview",
        customer_id=None,
        source="site",
        number="#1042",
        status="placed",
        currency="EUR",
        subtotal=total,
        discount=None,
        coupon=None,
        shipping=Decimal(0),
        tax=None,
        total=total,
        refunded=Decimal(0),
        placed_at=placed,
        cancelled_at=None,
        cancel_reason=None,
        lines=lines,
        refunds=(),
    )
    times = [now - HOUR_MS - (len(path) - 1 - n) * 6 * HOUR_MS for n in range(len(path))]
    scans = tuple(
        commerce.Scan(
            reported=status,
            status=status,
            location=PLACES[min(n, len(PLACES) - 1)] if n else None,
            source="preview",
            applied=True,
            occurred_at=at,
            recorded_at=at,
        )
        for n, (status, at) in enumerate(zip(path, times, strict=True))
    )
    final = path[-1]
    tomorrow = _tomorrow_morning(now, viewer.timezone)
    parcel = commerce.Shipment(
        shipment_id="preview-1",
        order_id=order.order_id,
        order_known=True,
        customer_id=None,
        carrier="Colissimo",
        tracking_number="6A00000000000",
        tracking_url="https://carrier.example/track/6A00000000000",
        status=final,
        status_at=times[-1],
        first_status=path[0],
        estimated_from=tomorrow,
        estimated_to=tomorrow + 4 * HOUR_MS,
        delivered_at=times[-1] if final == statuses.DELIVERED else None,
        scans=scans,
    )
    return Tracked(order, [parcel], [])


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _tomorrow_morning(now: int, timezone: str) -> int:
    """9:00 tomorrow in the brand's time zone: the sample's estimated delivery."""
    zone = _zone(timezone)
    moment = datetime.fromtimestamp(now / 1000, tz=UTC).astimezone(zone) + timedelta(days=1)
    morning = moment.replace(hour=9, minute=0, second=0, microsecond=0)
    return int(morning.timestamp() * 1000)


@get("/console/tracking-preview", sync_to_thread=True)
def preview_page(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    stage: FromQuery[str] = statuses.IN_TRANSIT,
    sector: FromQuery[str | None] = None,
    lang: FromQuery[str] = "",
) -> Response[bytes]:
    """A stage and a sector picked, the tracking page drawn as a customer would see it
    (in a frame at a phone's width), from sample data: no real order is read."""
    viewer = signed_in(request, console)
    look = brand_of(console)
    chosen_sector = sector if sector is not None and sector in SECTOR_PRESETS else look.sector
    chosen_stage = _stage(stage)
    language = lang if lang in SHIPPED else viewer.locale
    window = commerce.return_window_of(console.return_window_days, chosen_sector)
    query = f"stage={chosen_stage}&sector={chosen_sector}&lang={language}"
    return page(
        viewer,
        "commerce_preview.html",
        current="/console/tracking-preview",
        stages=tuple(PATHS),
        sectors=tuple(SECTOR_PRESETS),
        stage=chosen_stage,
        sector=chosen_sector,
        language=language,
        languages=SHIPPED,
        channel=SECTOR_PRESETS.get(chosen_sector),
        window=window,
        frame=f"/console/tracking-preview/page?{query}",
    )


@get("/console/tracking-preview/page", sync_to_thread=True)
def preview_frame(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    stage: FromQuery[str] = statuses.IN_TRANSIT,
    sector: FromQuery[str | None] = None,
    lang: FromQuery[str] = "",
) -> Response[bytes]:
    """The tracking page itself, from the sample of a stage and a sector, in the brand's
    look (the frame of the preview, or a page of its own)."""
    viewer = signed_in(request, console)
    look = brand_of(console)
    chosen_sector = sector if sector is not None and sector in SECTOR_PRESETS else look.sector
    locale = lang if lang in SHIPPED else viewer.locale
    customer = Viewer(locale=locale, timezone=look.timezone, brand=look.name, look=look)
    now = console.clock.now_ms()
    tracked = sample(customer, stage, chosen_sector, now)
    window = commerce.return_window_of(console.return_window_days, chosen_sector)
    url = console.delivery.brand.url if console.delivery else None
    contact = url if url and url.startswith(("https://", "http://")) else None
    return draw(customer, _zone(look.timezone), tracked, window, now, contact, FRAME_HEADERS)


def commerce_routes() -> list[HTTPRouteHandler]:
    return [
        order_page,
        shipments_page,
        returns_page,
        catalog_page,
        back_in_stock_page,
        carts_page,
        reviews_page,
        review_photo_page,
        moderate_page,
        preview_page,
        preview_frame,
    ]
