"""Segments in the console: the list with how many customers each holds now, a segment's
page (its definition, its evaluation, a first page of members), and its YAML edited and
checked before it is saved (a changed definition is evaluated again for everyone);
saves audited in their transaction."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from sqlalchemy import Connection

from parcours import accounts
from parcours.console.access import ConsoleParts, Form, changing, go, signed_in
from parcours.console.rendering import Viewer, not_found, page
from parcours.http import Injected
from parcours.segments import (
    SegmentError,
    SegmentExists,
    SegmentIdMismatch,
    UnknownSegment,
    catalog,
)

MAX_SOURCE = 64 * 1024
MEMBERS_SHOWN = 20
EXAMPLE = """id: repeat-buyers
name: Repeat buyers
description: Customers with two orders or more
conditions:
  - events: {name: Order Completed, count: {gte: 2}}
"""


@get("/console/segments", sync_to_thread=True)
def segments_page(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts]
) -> Response[bytes]:
    viewer = signed_in(request, console)
    with console.db.read() as conn:
        listing = catalog.listing(conn)
    return page(
        viewer,
        "segments.html",
        listing=listing.segments,
        example=EXAMPLE,
        source=EXAMPLE,
        error="",
        problems=[],
    )


def _segment_page(
    viewer: Viewer,
    parts: ConsoleParts,
    segment_id: str,
    *,
    status: int = 200,
    error: str = "",
    problems: list[Any] | None = None,
    source: str | None = None,
) -> Response[bytes]:
    with parts.db.read() as conn:
        try:
            segment = catalog.describe(conn, segment_id)
        except UnknownSegment:
            return not_found(viewer, "console.segments.unknown")
        sample = catalog.members(conn, segment_id, limit=MEMBERS_SHOWN)
    return page(
        viewer,
        "segment.html",
        status=status,
        segment=segment,
        sample=sample,
        error=error,
        problems=problems or [],
        source=segment.source if source is None else source,
    )


@get("/console/segments/{segment_id:str}", sync_to_thread=True)
def segment_page(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], segment_id: FromPath[str]
) -> Response[bytes]:
    return _segment_page(signed_in(request, console), console, segment_id)


@post("/console/segments", status_code=200, sync_to_thread=True)
def save_segment(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], data: Form
) -> Response[Any]:
    """A new segment (`segment` empty) or a segment's new definition."""
    viewer = changing(request, console, "segments.edit", data)
    assert viewer.session is not None
    user, now = viewer.session.user, console.clock.now_ms()
    source = data.get("source", "")[: MAX_SOURCE + 1]
    existing = data.get("segment", "")

    def audited(conn: Connection, saved: catalog.Saved) -> None:
        accounts.record(
            conn,
            user.actor,
            "segment.saved",
            f"segment:{saved.segment_id}",
            now,
            after={"generation": saved.generation},
        )

    def again(status: int, error: str, problems: list[Any] | None = None) -> Response[bytes]:
        if existing:
            return _segment_page(
                viewer,
                console,
                existing,
                status=status,
                error=error,
                problems=problems,
                source=source,
            )
        with console.db.read() as conn:
            listing = catalog.listing(conn)
        return page(
            viewer,
            "segments.html",
            status=status,
            listing=listing.segments,
            example=EXAMPLE,
            source=source,
            error=error,
            problems=problems or [],
        )

    if len(source) > MAX_SOURCE:
        return again(413, viewer.t("console.segments.too_long"))
    try:
        saved = catalog.save(
            console.db,
            source,
            user.email,
            now,
            mode="update" if existing else "create",
            segment_id=existing or None,
            also=audited,
        )
    except SegmentError as exc:
        return again(400, viewer.t("console.journeys.has_problems"), exc.problems)
    except (SegmentExists, SegmentIdMismatch, UnknownSegment) as exc:
        return again(409, str(exc))
    return go(f"/console/segments/{saved.segment_id}")


def segments_routes() -> list[HTTPRouteHandler]:
    return [segments_page, segment_page, save_segment]
