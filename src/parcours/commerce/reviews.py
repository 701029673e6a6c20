"""Reviews (docs/commerce.md, "Reviews"): when an order's review is due (its last delivery
plus the brand's sector's delay), `Review Due` is appended once per order unless it was
returned, cancelled or reviewed; the hosted form's submission is the action
`submit_review`, which stores one review per order (a rating per product, a text, an
optional photo checked by its bytes) and appends `Review Submitted`; a review is
published until someone in the console hides it (`moderate_review`), which tells no one."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import Connection, delete, exists, func, insert, select, update

from parcours import brand
from parcours.commerce.queries import Order, order
from parcours.commerce.tables import (
    commerce_order_lines,
    commerce_returns,
    commerce_review_photos,
    commerce_review_ratings,
    commerce_reviews,
)
from parcours.log import Event, Reactions, append_events, internal_event
from parcours.runtime.clock import iso
from parcours.runtime.db import Database, chunks
from parcours.runtime.queue import Job, enqueue

DUE = "Review Due"  # appended by commerce, once per order
SUBMITTED = "Review Submitted"  # the customer's review, through the hosted form
JOB = "commerce.review_due"
DAY_MS = 86_400_000
# Days after the last delivery before the review is asked for, by sector (the names of the
# sector presets): long enough to have used the thing, soon enough to remember it. Food is
# eaten within days; clothes are worn in a week; electronics and children's things are set
# up and used for a while; cosmetics and furniture show what they are worth in two weeks;
# a subscription after its first cycle.
SECTOR_REVIEW_DAYS = {
    "fashion": 7,
    "beauty": 14,
    "electronics": 10,
    "home": 14,
    "food": 3,
    "luxury": 10,
    "children": 10,
    "subscription": 21,
}
DEFAULT_REVIEW_DAYS = 7
MAX_TEXT = 5000
MAX_PHOTO_BYTES = 5 * 1024 * 1024
# The photo's type is read from its first bytes, whatever the browser said it was.
PHOTO_TYPES = ("image/jpeg", "image/png", "image/webp")
WHOLE_ORDER = "*"  # what is rated when the order named no product (no product id is "*")
PUBLISHED = "published"  # a new review's status: nothing holds it back
HIDDEN = "hidden"  # hidden by someone in the console
STATUSES = (PUBLISHED, HIDDEN)


class ReviewRefused(ValueError):
    """A submission that cannot be kept: `field` (`rating`, `text`, `photo`, `order`) and
    `reason`, a word the form says in the customer's language."""

    def __init__(self, field: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Photo:
    content: bytes
    content_type: str


class Rating(msgspec.Struct, frozen=True):
    product_id: str
    rating: int  # 1 to 5
    name: str | None = None  # the product's name on the order's line


class Review(msgspec.Struct, frozen=True):
    order_id: str
    customer_id: int
    ratings: tuple[Rating, ...]
    text: str
    locale: str
    photo_type: str | None
    photo_size: int | None
    submissions: int
    submitted_at: int
    updated_at: int
    status: str  # published | hidden
    moderated_by: str | None  # who last published or hid it, in the console
    moderated_at: int | None


def review_days(conn: Connection, configured_sector: str, setting_days: int = 0) -> int:
    """Days after delivery before the review is due: the brand's `review_after_days` (the
    one set on the Settings page, else the setting) when not 0, else the sector's custom
    (the sector set on the Settings page, else configured), else 7."""
    stored = brand.send_time(conn)
    if stored is not None and stored.review_after_days is not None:
        setting_days = stored.review_after_days
    if setting_days:
        return setting_days
    sector = (
        stored.sector if stored is not None and stored.sector is not None else configured_sector
    )
    return sector_review_days(sector)


def sector_review_days(sector: str) -> int:
    """The sector's custom: days after delivery before a review is asked for."""
    return SECTOR_REVIEW_DAYS.get(sector, DEFAULT_REVIEW_DAYS)


# ---- when a review is due -----------------------------------------------------------------


def schedule(
    conn: Connection,
    delivered: Sequence[Event],
    now: int,
    configured_sector: str,
    setting_days: int = 0,
) -> None:
    """Parcels delivered (their `Shipment Stage Reached`): each order's review falls due
    `review_days` after its last delivery (a later parcel moves the job)."""
    latest: dict[str, tuple[int, int]] = {}
    for event in delivered:
        order_id = event.properties.get("order_id")
        if not isinstance(order_id, str) or event.customer_id is None:
            continue
        at = max(event.occurred_at, latest.get(order_id, (0, 0))[0])
        latest[order_id] = (at, int(event.customer_id))
    if not latest:
        return
    delay = review_days(conn, configured_sector, setting_days) * DAY_MS
    for order_id, (at, customer) in sorted(latest.items()):
        enqueue(
            conn,
            JOB,
            {"order": order_id, "delivered_at": at},
            run_at=at + delay,
            now=now,
            unique_key=f"commerce:review-due:{order_id}",
            customer_id=customer,
        )


def announce_due(
    conn: Connection,
    job: Job,
    now: int,
    configured_sector: str,
    setting_days: int,
    reactions: Reactions,
) -> None:
    """The job: `Review Due` for the order, dated when it fell due, once (its message id
    is the order's), unless the order was cancelled, returned or already reviewed."""
    order_id = str(job.payload.get("order", ""))
    delivered_at = int(job.payload.get("delivered_at", 0))
    found = order(conn, order_id)
    if found is None or found.customer_id is None or found.status != "placed":
        return
    returned = conn.execute(
        select(commerce_returns.c.return_id).where(commerce_returns.c.order_id == order_id).limit(1)
    ).first()
    reviewed = conn.execute(
        select(commerce_reviews.c.order_id).where(commerce_reviews.c.order_id == order_id)
    ).first()
    if returned is not None or reviewed is not None:
        return
    days = review_days(conn, configured_sector, setting_days)
    event = internal_event(
        found.customer_id,
        DUE,
        _due_properties(found, delivered_at, days),
        min(delivered_at + days * DAY_MS, now),
        f"commerce:review-due:{order_id}",
        "system",
        received_at=now,
    )
    append_events(conn, [[event]], now, reactions)


def _due_properties(found: Order, delivered_at: int, days: int) -> dict[str, Any]:
    products: dict[str, dict[str, Any]] = {}
    for line in found.lines:
        key = line.product_id or line.sku or line.variant_id
        if key is None or key in products:
            continue
        item: dict[str, Any] = {"product_id": key}
        if line.name:
            item["name"] = line.name
        if line.image_url:
            item["image_url"] = line.image_url
        products[key] = item
    props: dict[str, Any] = {
        "order_id": found.order_id,
        "delivered_at": iso(delivered_at),
        "review_after_days": days,
        "products": list(products.values()),
    }
    if found.number:
        props["order_number"] = found.number
    return props


# ---- the form's action --------------------------------------------------------------------


def products_to_rate(found: Order) -> list[tuple[str, str | None, str | None]]:
    """The order's products, each once, in the order's order: (id, name, image); an
    order reported without its lines is rated as a whole (`WHOLE_ORDER`)."""
    seen: dict[str, tuple[str, str | None, str | None]] = {}
    for line in found.lines:
        key = line.product_id or line.sku or line.variant_id
        if key is not None and key not in seen:
            seen[key] = (key, line.name, line.image_url)
    return list(seen.values()) or [(WHOLE_ORDER, None, None)]


def check_photo(content: bytes, declared: str | None) -> Photo:
    """A photo of at most 5 MB whose bytes are a JPEG, PNG or WebP image (what the browser
    declared is not trusted, and must not contradict them)."""
    if len(content) > MAX_PHOTO_BYTES:
        raise ReviewRefused(
            "photo", "too_large", f"the photo is {len(content)} bytes, more than 5 MB"
        )
    kind = _image_type(content)
    if kind is None:
        raise ReviewRefused("photo", "type", "the photo is not a JPEG, PNG or WebP image")
    if declared and declared.split(";")[0].strip().lower() not in (
        kind,
        "application/octet-stream",
    ):
        raise ReviewRefused(
            "photo", "type", f"the photo was declared {declared!r} but its bytes are {kind}"
        )
    return Photo(content, kind)


def _image_type(content: bytes) -> str | None:
    if content[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if content[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if len(content) >= 12 and content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp"
    return None


def submit_review(
    conn: Connection,
    order_id: str,
    ratings: Mapping[str, int],
    text: str,
    photo: Photo | None,
    locale: str,
    now: int,
    reactions: Reactions,
) -> Review:
    """Store the order's review (one per order: a second submission replaces the ratings
    and text, and the photo when it brings one) and append `Review Submitted` through the
    log's door, in one transaction. ReviewRefused names what is wrong."""
    found = order(conn, order_id)
    if found is None or found.customer_id is None:
        raise ReviewRefused("order", "unknown", f"no order {order_id!r}")
    products = {key: name for key, name, _ in products_to_rate(found)}
    for product_id, rating in ratings.items():
        if product_id not in products:
            raise ReviewRefused("rating", "unknown_product", f"{product_id!r} is not in the order")
        if not 1 <= rating <= 5:
            raise ReviewRefused("rating", "range", f"a rating is 1 to 5, got {rating}")
    if not ratings:
        raise ReviewRefused("rating", "missing", "rate at least one product")
    text = text.strip()
    if len(text) > MAX_TEXT:
        raise ReviewRefused("text", "too_long", f"the text is over {MAX_TEXT} characters")
    customer = int(found.customer_id)
    stored = conn.execute(
        select(commerce_reviews).where(commerce_reviews.c.order_id == order_id)
    ).first()
    values: dict[str, Any] = {"text": text, "locale": locale, "updated_at": now}
    if photo is not None:
        values.update(photo_type=photo.content_type, photo_size=len(photo.content))
    if stored is None:
        submissions = 1
        conn.execute(
            insert(commerce_reviews).values(
                order_id=order_id,
                customer_id=customer,
                submissions=1,
                submitted_at=now,
                status=PUBLISHED,  # a second submission keeps the status a person chose
                **{"photo_type": None, "photo_size": None, **values},
            )
        )
    else:
        submissions = stored.submissions + 1
        conn.execute(
            update(commerce_reviews)
            .where(commerce_reviews.c.order_id == order_id)
            .values(submissions=submissions, **values)
        )
    conn.execute(
        delete(commerce_review_ratings).where(commerce_review_ratings.c.order_id == order_id)
    )
    conn.execute(
        insert(commerce_review_ratings),
        [
            {"order_id": order_id, "product_id": p, "customer_id": customer, "rating": r}
            for p, r in sorted(ratings.items())
        ],
    )
    if photo is not None:
        conn.execute(
            delete(commerce_review_photos).where(commerce_review_photos.c.order_id == order_id)
        )
        conn.execute(
            insert(commerce_review_photos).values(
                order_id=order_id, customer_id=customer, content=photo.content
            )
        )
    review = review_of_order(conn, order_id)
    assert review is not None
    event = internal_event(
        customer,
        SUBMITTED,
        _submitted_properties(found, review, products),
        now,
        f"commerce:review:{order_id}:{submissions}",
        "channel",  # the customer's own doing, through Parcours' page
    )
    append_events(conn, [[event]], now, reactions)
    return review


def _submitted_properties(
    found: Order, review: Review, names: Mapping[str, str | None]
) -> dict[str, Any]:
    ratings = [
        {"product_id": r.product_id, "rating": r.rating}
        | ({"name": names[r.product_id]} if names.get(r.product_id) else {})
        for r in review.ratings
    ]
    props: dict[str, Any] = {
        "order_id": found.order_id,
        "rating": round(sum(r.rating for r in review.ratings) / len(review.ratings), 1),
        "ratings": ratings,
        "text": review.text,
        "has_photo": review.photo_type is not None,
        "locale": review.locale,
        "submission": review.submissions,
    }
    if found.number:
        props["order_number"] = found.number
    return props


# ---- the face's reads ---------------------------------------------------------------------


def review_of_order(conn: Connection, order_id: str) -> Review | None:
    """The order's review with its ratings (None when it has none), whatever its status:
    the customer's own form shows it back to them."""
    row = conn.execute(
        select(commerce_reviews).where(commerce_reviews.c.order_id == order_id)
    ).first()
    if row is None:
        return None
    return _reviews_of(conn, [row])[0]


def reviews_list(
    conn: Connection,
    *,
    status: str | None = None,
    rating: int | None = None,
    customer_id: int | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Review]:
    """Reviews, the latest submitted first, with their ratings and the products' names;
    of one status, with a product rated `rating`, or of one customer, when asked (three
    queries: the reviews, their ratings, their orders' lines)."""
    c = commerce_reviews.c
    query = select(commerce_reviews)
    if status is not None:
        query = query.where(c.status == status)
    if rating is not None:
        rated = commerce_review_ratings.c
        query = query.where(exists().where(rated.order_id == c.order_id, rated.rating == rating))
    if customer_id is not None:
        query = query.where(c.customer_id == customer_id)
    query = query.order_by(c.submitted_at.desc(), c.order_id).limit(limit).offset(offset)
    return _reviews_of(conn, conn.execute(query).all())


def review_counts(conn: Connection) -> dict[str, int]:
    """How many reviews are published and hidden."""
    c = commerce_reviews.c
    query = select(c.status, func.count().label("n")).group_by(c.status)
    return {row.status: int(row.n) for row in conn.execute(query)}


def moderate_review(
    db: Database,
    order_id: str,
    status: str,
    by: str,
    now: int,
    *,
    also: Callable[[Connection, Review, Review], None] | None = None,
) -> Review | None:
    """Publish or hide the order's review (`status`), named `by` whom, in one transaction
    with `also` (the console's audit entry: the review before and after). Nothing is
    appended to the log and no one is told: it is the brand's decision about what it
    shows. A review already of that status is left as it is. None: no such review."""
    if status not in STATUSES:
        raise ValueError(f"a review's status is one of {', '.join(STATUSES)}, not {status!r}")
    with db.write() as conn:
        before = review_of_order(conn, order_id)
        if before is None or before.status == status:
            return before
        conn.execute(
            update(commerce_reviews)
            .where(commerce_reviews.c.order_id == order_id)
            .values(status=status, moderated_by=by, moderated_at=now)
        )
        after = review_of_order(conn, order_id)
        assert after is not None
        if also is not None:
            also(conn, before, after)
    return after


def _reviews_of(conn: Connection, rows: Sequence[Any]) -> list[Review]:
    order_ids = [row.order_id for row in rows]
    ratings: dict[str, list[tuple[str, int]]] = {order_id: [] for order_id in order_ids}
    names: dict[tuple[str, str], str] = {}
    lines = commerce_order_lines.c
    rated = commerce_review_ratings.c
    for part in chunks(order_ids):
        for r in conn.execute(
            select(rated.order_id, rated.product_id, rated.rating)
            .where(rated.order_id.in_(list(part)))
            .order_by(rated.order_id, rated.product_id)
        ):
            ratings[r.order_id].append((r.product_id, r.rating))
        # A product's name as products_to_rate keys it: its id, else its SKU, else its variant.
        for line in conn.execute(
            select(lines.order_id, lines.product_id, lines.sku, lines.variant_id, lines.name)
            .where(lines.order_id.in_(list(part)), lines.name.is_not(None))
            .order_by(lines.order_id, lines.line)
        ):
            key = line.product_id or line.sku or line.variant_id
            if key is not None:
                names.setdefault((line.order_id, key), line.name)
    return [
        Review(
            order_id=row.order_id,
            customer_id=row.customer_id,
            ratings=tuple(
                Rating(product_id, rating, names.get((row.order_id, product_id)))
                for product_id, rating in ratings[row.order_id]
            ),
            text=row.text,
            locale=row.locale,
            photo_type=row.photo_type,
            photo_size=row.photo_size,
            submissions=row.submissions,
            submitted_at=row.submitted_at,
            updated_at=row.updated_at,
            status=row.status,
            moderated_by=row.moderated_by,
            moderated_at=row.moderated_at,
        )
        for row in rows
    ]


def review_photo(conn: Connection, order_id: str) -> Photo | None:
    """The review's photo (its bytes and type), if it has one."""
    row = conn.execute(
        select(commerce_review_photos.c.content, commerce_reviews.c.photo_type)
        .join(commerce_reviews, commerce_reviews.c.order_id == commerce_review_photos.c.order_id)
        .where(commerce_review_photos.c.order_id == order_id)
    ).first()
    if row is None or row.photo_type is None:
        return None
    return Photo(bytes(row.content), row.photo_type)
