"""Admin API for segments: define and change them, read them and their members. Errors are
raised (HttpError, or the segments' own) and answered by the application's handlers
(web/errors.py)."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import msgspec
from litestar import Request, get, post, put
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery

from parcours.http import HttpError, Injected, prefixed_id, read_body
from parcours.runtime.clock import Clock
from parcours.runtime.db import Database
from parcours.runtime.keys import KeyHolder
from parcours.segments import catalog as segments
from parcours.web.api_docs import request_body
from parcours.web.errors import ERROR_FIELDS

MAX_DEFINITION_BYTES = 64 * 1024
_DEFINITION = request_body(
    str, ("application/yaml",), "The segment's definition, in YAML (JSON is YAML too)"
)


class SegmentSaved(msgspec.Struct):
    """The definition kept (`changed`: it differs from the last one) and its evaluation."""

    id: str
    generation: int
    changed: bool
    evaluation: str  # evaluating | unchanged


async def _save(
    request: Request[Any, Any, Any],
    db: Database,
    clock: Clock,
    admin: KeyHolder,
    mode: Literal["create", "update"],
    segment_id: str | None,
) -> SegmentSaved:
    source = (await read_body(request, MAX_DEFINITION_BYTES)).decode("utf-8", "replace")
    saved = await asyncio.to_thread(
        segments.save, db, source, admin.name, clock.now_ms(), mode=mode, segment_id=segment_id
    )
    evaluation = "evaluating" if saved.changed else "unchanged"
    return SegmentSaved(saved.segment_id, saved.generation, saved.changed, evaluation)


@post("/api/segments", status_code=201, operation_class=_DEFINITION)
async def create_segment(
    request: Request[Any, Any, Any],
    db: Injected[Database],
    clock: Injected[Clock],
    admin: Injected[KeyHolder],
) -> SegmentSaved:
    """The body is the definition (YAML or JSON); every customer is then evaluated on it."""
    return await _save(request, db, clock, admin, "create", None)


@put(
    "/api/segments/{segment_id:str}",
    status_code=200,
    operation_class=_DEFINITION,
    opt={ERROR_FIELDS: {segments.UnknownSegment: "id"}},
)
async def update_segment(
    request: Request[Any, Any, Any],
    segment_id: FromPath[str],
    db: Injected[Database],
    clock: Injected[Clock],
    admin: Injected[KeyHolder],
) -> SegmentSaved:
    """A new definition for the segment; every customer is evaluated on it again."""
    return await _save(request, db, clock, admin, "update", segment_id)


@get("/api/segments", sync_to_thread=True)
def list_segments(db: Injected[Database]) -> segments.SegmentList:
    """Every segment, with its evaluation and member count."""
    with db.read() as conn:
        return segments.listing(conn)


@get("/api/segments/{segment_id:str}", sync_to_thread=True)
def get_segment(db: Injected[Database], segment_id: FromPath[str]) -> segments.SegmentView:
    """The segment: its definition, evaluation and members count."""
    with db.read() as conn:
        return segments.describe(conn, segment_id)


@get("/api/segments/{segment_id:str}/members", sync_to_thread=True)
def segment_members(
    db: Injected[Database],
    segment_id: FromPath[str],
    limit: FromQuery[int] = 100,
    after: FromQuery[str | None] = None,
) -> segments.MemberPage:
    """Current members in customer id order; `next_after` is the cursor of the next page."""
    if not 1 <= limit <= segments.MEMBERS_PAGE_MAX:
        raise HttpError(400, f"limit must be between 1 and {segments.MEMBERS_PAGE_MAX}", "limit")
    cursor = prefixed_id(after, "cus_", "after") if after else 0
    with db.read() as conn:
        return segments.members(conn, segment_id, limit=limit, after=cursor)


def segments_admin_routes() -> list[HTTPRouteHandler]:
    return [create_segment, update_segment, list_segments, get_segment, segment_members]
