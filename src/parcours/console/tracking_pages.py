"""The tracking page of an order (docs/commerce.md, "The tracking page"): public, at a link
signed for that order (`Links.tracking`), in the brand's look and the customer's language
and time zone. It shows the order's items, each parcel's stages with their times and the
next one expected, the estimated delivery window, the carrier's link, the return
conditions and the brand's contact. Without a valid link, or for an order not known (or
erased with its customer), a 404 that shows nothing of anyone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_skeleton, format_time
from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from sqlalchemy import Connection

from parcours import brand, commerce
from parcours.brand import BrandSettings
from parcours.commerce import statuses
from parcours.console.access import ConsoleParts, brand_defaults
from parcours.console.rendering import SECURITY_HEADERS, Viewer, render
from parcours.customers import CustomerNotFound, profiles
from parcours.http import Injected
from parcours.messaging import BadLink, TrackingLink
from parcours.runtime.i18n import SHIPPED, accept_language

DAY_MS = 86_400_000
# The console's public pages' policy, but product images come from the shop's own hosts.
HEADERS = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": SECURITY_HEADERS["Content-Security-Policy"].replace(
        "img-src 'self' data:", "img-src 'self' data: https:"
    ),
}
# The way most parcels go; the other stages are shown where they happened.
MAIN_PATH = (
    statuses.INFO_RECEIVED,
    statuses.IN_TRANSIT,
    statuses.OUT_FOR_DELIVERY,
    statuses.DELIVERED,
)


@dataclass(frozen=True)
class Stage:
    """One line of a parcel's timeline: a stage reached (`at` its time), or the next one
    expected (`expected`, with no time)."""

    status: str
    at: int | None
    location: str | None = None
    current: bool = False
    expected: bool = False


def timeline(shipment: commerce.Shipment) -> list[Stage]:
    """The stages a parcel reached, in the order they happened (by the scans' own times,
    whatever order they arrived in, under the rule that never moves a parcel backwards),
    the last one current, then the next one expected while the parcel is on its way."""
    scans = sorted(
        (scan for scan in shipment.scans if scan.status is not None),
        key=lambda scan: scan.occurred_at,
    )
    reached: list[Stage] = []
    position: statuses.Position | None = None
    for scan in scans:
        assert scan.status is not None
        if position is None:
            position = statuses.first_position(scan.status, scan.occurred_at)
        else:
            moved = statuses.advance(position, scan.status, scan.occurred_at)
            if moved is None:
                continue
            position = moved
        reached.append(Stage(position.status, scan.occurred_at, scan.location))
    if not reached:  # reported with no stage yet: its information is received
        reached.append(Stage(statuses.INFO_RECEIVED, shipment.status_at))
    last = reached[-1]
    reached[-1] = Stage(last.status, last.at, last.location, current=True)
    following = next_stage(last.status, position.progress if position else 0)
    if following is not None:
        reached.append(Stage(following, None, expected=True))
    return reached


def next_stage(status: str, progress: int) -> str | None:
    """The stage expected after `status` (None: the parcel's journey is over)."""
    if status in statuses.FINAL:
        return None
    if status == statuses.EXPIRED:  # not collected in time: it goes back
        return statuses.RETURNED_TO_SENDER
    for stage in MAIN_PATH:
        if statuses.RANKS[stage] > progress:
            return stage
    return None


def safe_url(url: str | None) -> str | None:
    """A link or an image's address only when it is the web's (no `javascript:`)."""
    if url and url.lower().startswith(("https://", "http://")):
        return url
    return None


@dataclass(frozen=True)
class Moments:
    """Times said in the customer's language and time zone."""

    locale: str
    zone: ZoneInfo

    def _at(self, ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)

    def day(self, ms: int) -> str:
        return str(format_skeleton("MMMMEEEEd", self._at(ms), tzinfo=self.zone, locale=self.locale))

    def time(self, ms: int) -> str:
        return str(format_time(self._at(ms), format="short", tzinfo=self.zone, locale=self.locale))

    def when(self, ms: int) -> str:
        return f"{self.day(ms)}, {self.time(ms)}"

    def iso(self, ms: int) -> str:
        return self._at(ms).astimezone(self.zone).isoformat(timespec="minutes")

    def same_day(self, first: int, second: int) -> bool:
        return self._at(first).astimezone(self.zone).date() == (
            self._at(second).astimezone(self.zone).date()
        )


def customer_zone(name: Any, fallback: str) -> ZoneInfo:
    for candidate in (name, fallback):
        if isinstance(candidate, str) and candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def customer_locale(request: Request[Any, Any, Any], look: BrandSettings, customer: Any) -> str:
    """`?lang=` when we ship it, else the customer's language, else the browser's, when
    the brand offers it; else the brand's."""
    asked = request.query_params.get("lang")
    if isinstance(asked, str) and asked.lower() in SHIPPED:
        return asked.lower()
    candidates = (customer, accept_language(request.headers.get("accept-language")))
    offered = (str(c).replace("_", "-").split("-")[0].lower() for c in candidates if c)
    return next((x for x in offered if x in look.languages and x in SHIPPED), look.locale)


@dataclass(frozen=True)
class Tracked:
    order: commerce.Order
    shipments: list[commerce.Shipment]
    returns: list[commerce.Return]


def _tracked(conn: Connection, order_id: str) -> Tracked | None:
    """The order with its lines and refunds, its parcels with their scans, its returns
    (None when not known, or erased): seven queries, each by a primary key or an index
    on the order id."""
    found = commerce.order(conn, order_id)
    if found is None:
        return None
    return Tracked(
        found,
        commerce.shipments_of_order(conn, order_id),
        commerce.returns_of_order(conn, order_id),
    )


def _page(
    viewer: Viewer, status: int, headers: dict[str, str] = HEADERS, **values: Any
) -> Response[bytes]:
    html = render(viewer, "tracking.html", **values)
    return Response(
        html.encode("utf-8"),
        status_code=status,
        media_type="text/html; charset=utf-8",
        headers=headers,
    )


def _not_found(request: Request[Any, Any, Any], look: BrandSettings) -> Response[bytes]:
    """Nothing of any order: a link we did not sign, or an order no longer known."""
    viewer = Viewer(
        locale=customer_locale(request, look, None),
        timezone=look.timezone,
        brand=look.name,
        look=look,
    )
    return _page(viewer, 404, found=False)


@get("/o/{token:str}", sync_to_thread=True, include_in_schema=False)
def tracking_page(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], token: FromPath[str]
) -> Response[bytes]:
    assert console.links is not None
    defaults = brand_defaults(console)
    try:
        order_id = console.links.signer.verify("tracking", token, TrackingLink).order
    except BadLink:
        order_id = None
    with console.db.read() as conn:
        look = brand.current(conn, defaults)
        tracked = _tracked(conn, order_id) if order_id is not None else None
        traits: dict[str, Any] = {}
        computed: dict[str, Any] = {}
        if tracked is not None and tracked.order.customer_id is not None:
            try:
                traits, computed = profiles.traits_view(conn, tracked.order.customer_id)
            except CustomerNotFound:  # erased: their order goes with them
                tracked = None
        window = commerce.return_window(conn, console.return_window_days, look.sector)
        recommended = (
            commerce.recommendations(
                conn,
                tracked.order.customer_id,
                now=console.clock.now_ms(),
                for_order=order_id,
                weeks=console.recommendation_weeks,
            )
            if tracked is not None and tracked.order.customer_id is not None
            else []
        )
    if tracked is None:
        return _not_found(request, look)
    locale = customer_locale(request, look, traits.get("locale") or computed.get("locale"))
    zone = customer_zone(traits.get("timezone") or computed.get("timezone"), look.timezone)
    viewer = Viewer(locale=locale, timezone=zone.key, brand=look.name, look=look)
    contact = safe_url(console.delivery.brand.url if console.delivery else None)
    return draw(
        viewer, zone, tracked, window, console.clock.now_ms(), contact, recommended=recommended
    )


def draw(
    viewer: Viewer,
    zone: ZoneInfo,
    tracked: Tracked,
    window: commerce.ReturnWindow,
    now: int,
    contact: str | None,
    headers: dict[str, str] = HEADERS,
    *,
    recommended: Sequence[commerce.Recommendation] = (),
) -> Response[bytes]:
    """The tracking page of `tracked` as its customer sees it (also drawn from sample data
    by the console's preview, console/commerce_pages.py)."""
    assert viewer.look is not None
    moments = Moments(viewer.locale, zone)
    order = tracked.order
    delivered = [s.delivered_at for s in tracked.shipments if s.delivered_at is not None]
    opened_at = max(delivered) if delivered else None
    closes_at = opened_at + window.days * DAY_MS if opened_at is not None else None
    return _page(
        viewer,
        200,
        headers,
        found=True,
        order=order,
        number=order.number or order.order_id,
        lines=[
            (
                line,
                safe_url(line.image_url),
                viewer.money(line.price * line.quantity, order.currency),
            )
            for line in order.lines
        ],
        total=viewer.money(order.total, order.currency),
        refunded=viewer.money(order.refunded, order.currency) if order.refunded > 0 else None,
        parcels=[
            (shipment, timeline(shipment), safe_url(shipment.tracking_url))
            for shipment in tracked.shipments
        ],
        returns=tracked.returns,
        window=window,
        closes_at=closes_at,
        window_open=closes_at is None or now <= closes_at,
        contact=contact,
        moments=moments,
        languages=[code for code in SHIPPED if code in viewer.look.languages],
        recommendations=[
            (
                product,
                safe_url(product.image_url),
                safe_url(product.url),
                viewer.money(product.price, product.currency)
                if product.price is not None and product.currency
                else None,
            )
            for product in recommended
        ],
    )


def tracking_routes() -> list[HTTPRouteHandler]:
    return [tracking_page]
