"""The hosted review form of an order (docs/commerce.md, "Reviews"): public, at a link
signed for that order (`Links.review`), in the brand's look and the customer's language;
a rating from 1 to 5 per product, a text and an optional photo. The signed link is the
only credential; a submission is accepted only from the form's own page (its `Origin`),
so another site cannot post one even with the link. Without a valid link, or for an
order not known (or erased), a 404 that shows nothing of anyone."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from litestar import Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from litestar.response import Redirect

from parcours import brand, commerce
from parcours.brand import BrandSettings
from parcours.commerce import reviews
from parcours.console.access import ConsoleParts, brand_defaults
from parcours.console.rendering import Viewer, render
from parcours.console.tracking_pages import (
    HEADERS,
    Moments,
    customer_locale,
    customer_zone,
    safe_url,
)
from parcours.customers import CustomerNotFound, profiles
from parcours.http import Injected
from parcours.log import Reactions
from parcours.messaging import BadLink, ReviewLink
from parcours.runtime.i18n import SHIPPED

# The tracking page's headers, but the referrer stays within this site only: the token
# never leaves it, and the browser names this origin when the form is sent (under
# `no-referrer` it says `Origin: null`).
_HEADERS = {**HEADERS, "Referrer-Policy": "same-origin"}
# A phone's photo may be larger than the 5 MB kept: the form says so in the customer's
# language rather than the server refusing the body; beyond this, the server refuses it.
MAX_FORM_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Reviewed:
    """What the form shows: the order, its products to rate, the review so far."""

    order: commerce.Order
    products: list[tuple[str, str | None, str | None]]
    review: reviews.Review | None
    locale: str | None  # the customer's, as their traits say
    timezone: str | None


@dataclass
class Entered:
    """What the customer entered (shown again with the errors)."""

    ratings: dict[str, int] = field(default_factory=dict)
    text: str = ""


def _order_of(console: ConsoleParts, token: str) -> str | None:
    assert console.links is not None
    try:
        return console.links.signer.verify("review", token, ReviewLink).order
    except BadLink:
        return None


def _load(console: ConsoleParts, order_id: str | None) -> tuple[BrandSettings, Reviewed | None]:
    defaults = brand_defaults(console)
    with console.db.read() as conn:
        look = brand.current(conn, defaults)
        found = commerce.order(conn, order_id) if order_id is not None else None
        if found is None or found.customer_id is None:
            return look, None
        try:
            traits, computed = profiles.traits_view(conn, found.customer_id)
        except CustomerNotFound:  # erased: their order goes with them
            return look, None
        return look, Reviewed(
            found,
            reviews.products_to_rate(found),
            commerce.review_of_order(conn, found.order_id),
            traits.get("locale") or computed.get("locale"),
            traits.get("timezone") or computed.get("timezone"),
        )


def _draw(
    request: Request[Any, Any, Any],
    look: BrandSettings,
    reviewed: Reviewed | None,
    status: int = 200,
    **values: Any,
) -> Response[bytes]:
    locale = customer_locale(request, look, reviewed.locale if reviewed else None)
    zone = customer_zone(reviewed.timezone if reviewed else None, look.timezone)
    viewer = Viewer(locale=locale, timezone=zone.key, brand=look.name, look=look)
    if reviewed is None:
        html = render(viewer, "review.html", found=False)
        return Response(html.encode(), status_code=404, media_type=_HTML, headers=_HEADERS)
    review = reviewed.review
    entered: Entered = values.pop("entered", None) or Entered(
        {r.product_id: r.rating for r in review.ratings} if review else {},
        review.text if review else "",
    )
    html = render(
        viewer,
        "review.html",
        found=True,
        order=reviewed.order,
        number=reviewed.order.number or reviewed.order.order_id,
        products=[(key, name, safe_url(image)) for key, name, image in reviewed.products],
        review=review,
        entered=entered,
        moments=Moments(locale, zone),
        languages=[code for code in SHIPPED if code in look.languages],
        # the stored photo, from this page's own path (/r/<token>/photo)
        photo=f"{request.url.path}/photo" if review and review.photo_type else None,
        errors=values.pop("errors", {}),
        saved=values.pop("saved", False),
        refused=values.pop("refused", False),
        **values,
    )
    return Response(html.encode(), status_code=status, media_type=_HTML, headers=_HEADERS)


_HTML = "text/html; charset=utf-8"


@get("/r/{token:str}", sync_to_thread=True, include_in_schema=False)
def review_page(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], token: FromPath[str]
) -> Response[bytes]:
    look, reviewed = _load(console, _order_of(console, token))
    return _draw(request, look, reviewed, saved=request.query_params.get("saved") == "1")


@post(
    "/r/{token:str}",
    status_code=200,
    include_in_schema=False,
    request_max_body_size=MAX_FORM_BYTES,
)
async def submit_review(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    reactions: Injected[Reactions],
    token: FromPath[str],
) -> Response[Any]:
    """The form sent (multipart, for the photo): stored, then the page again with thanks
    (303); errors are shown on the form, in the customer's language, with what was entered."""
    order_id = _order_of(console, token)
    look, reviewed = await asyncio.to_thread(_load, console, order_id)
    if reviewed is None or order_id is None:
        return _draw(request, look, None)
    if not _same_origin(request):
        return _draw(request, look, reviewed, 403, refused=True)
    if reviewed.order.status == "cancelled":
        return _draw(request, look, reviewed, 409)
    form = await request.form()
    entered = Entered()
    for index, (key, _, _) in enumerate(reviewed.products, start=1):
        given = str(form.get(f"rating-{index}") or "").strip()
        if given:
            entered.ratings[key] = int(given) if given.isdigit() else 0
    entered.text = str(form.get("text") or "")
    upload = form.get("photo")
    photo: reviews.Photo | None = None
    errors: dict[str, str] = {}
    try:
        if isinstance(upload, UploadFile) and upload.filename:
            content = await upload.read()
            if content:
                photo = reviews.check_photo(content, upload.content_type)
    except reviews.ReviewRefused as exc:
        errors[exc.field] = exc.reason
    if not errors:
        locale = customer_locale(request, look, reviewed.locale)
        try:
            await asyncio.to_thread(_store, console, reactions, order_id, entered, photo, locale)
        except reviews.ReviewRefused as exc:
            errors[exc.field] = exc.reason
    if errors:
        return _draw(request, look, reviewed, 400, errors=errors, entered=entered)
    return Redirect(f"/r/{token}?saved=1", status_code=303)


def _store(
    console: ConsoleParts,
    reactions: Reactions,
    order_id: str,
    entered: Entered,
    photo: reviews.Photo | None,
    locale: str,
) -> None:
    with console.db.write() as conn:
        reviews.submit_review(
            conn,
            order_id,
            entered.ratings,
            entered.text,
            photo,
            locale,
            console.clock.now_ms(),
            reactions,
        )


def _same_origin(request: Request[Any, Any, Any]) -> bool:
    """A browser says where a form was sent from: `Origin` (this page's own host), or,
    when it hides it (`null`), `Sec-Fetch-Site`, which must not be another site's. A
    client that says neither (no browser) holds the link, which is the credential."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        return urlsplit(origin).netloc == request.headers.get("host", "")
    return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


@get("/r/{token:str}/photo", sync_to_thread=True, include_in_schema=False)
def review_photo(console: Injected[ConsoleParts], token: FromPath[str]) -> Response[bytes]:
    """The review's photo, for its page: its type is the one its bytes were checked to be,
    and it is served so that no browser reads it as anything but that image."""
    order_id = _order_of(console, token)
    photo = None
    if order_id is not None:
        with console.db.read() as conn:
            photo = commerce.review_photo(conn, order_id)
    if photo is None:
        return Response(b"", status_code=404, headers=PHOTO_HEADERS)
    return Response(photo.content, media_type=photo.content_type, headers=PHOTO_HEADERS)


# A review's photo, here and as the console's thumbnail: only ever read as that image.
PHOTO_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "X-Content-Type-Options": "nosniff",
    "Content-Disposition": "inline",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "private, no-store",
}


def review_routes() -> list[HTTPRouteHandler]:
    return [review_page, submit_review, review_photo]
