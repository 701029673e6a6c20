"""Admin API for segments: define and change them, read them and their members. Errors are
raised as HttpError and answered by the application's handlers (web/errors.py)."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from litestar import Request, Response, get, post, put
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery

from parcours.customers.api import public_id
from parcours.ingest.http import HttpError, json_response, prefixed_id, read_body
from parcours.segments import api as segments
from parcours.segments.definition import SegmentError
from parcours.web.api import problems_error, require_admin

MAX_DEFINITION_BYTES = 64 * 1024


async def _save(
    request: Request[Any, Any, Any], mode: Literal["create", "update"], segment_id: str | None
) -> Response[bytes]:
    services, user = require_admin(request)
    source = (await read_body(request, MAX_DEFINITION_BYTES)).decode("utf-8", "replace")
    try:
        saved = await asyncio.to_thread(
            segments.save,
            services.db,
            source,
            user.name,
            services.clock.now_ms(),
            mode=mode,
            segment_id=segment_id,
        )
    except SegmentError as exc:
        raise problems_error(exc, "the segment is not valid") from None
    except segments.SegmentExists as exc:
        raise HttpError(409, str(exc), "id") from None
    except segments.UnknownSegment as exc:
        raise HttpError(404, str(exc), "id") from None
    except segments.SegmentIdMismatch as exc:
        raise HttpError(400, str(exc), "id") from None
    return json_response(
        {
            "id": saved.segment_id,
            "generation": saved.generation,
            "changed": saved.changed,
            "evaluation": "evaluating" if saved.changed else "unchanged",
        },
        201 if mode == "create" else 200,
    )


@post("/api/segments")
async def create_segment(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The body is the definition (YAML or JSON); every customer is then evaluated on it."""
    return await _save(request, "create", None)


@put("/api/segments/{segment_id:str}")
async def update_segment(
    request: Request[Any, Any, Any], segment_id: FromPath[str]
) -> Response[bytes]:
    """A new definition for the segment; every customer is evaluated on it again."""
    return await _save(request, "update", segment_id)


@get("/api/segments", sync_to_thread=True)
def list_segments(request: Request[Any, Any, Any]) -> Response[bytes]:
    services, _ = require_admin(request)
    with services.db.read() as conn:
        return json_response({"segments": segments.listing(conn)})


@get("/api/segments/{segment_id:str}", sync_to_thread=True)
def get_segment(request: Request[Any, Any, Any], segment_id: FromPath[str]) -> Response[bytes]:
    services, _ = require_admin(request)
    try:
        with services.db.read() as conn:
            return json_response(segments.describe(conn, segment_id))
    except segments.UnknownSegment as exc:
        raise HttpError(404, str(exc), "segment_id") from None


@get("/api/segments/{segment_id:str}/members", sync_to_thread=True)
def segment_members(
    request: Request[Any, Any, Any],
    segment_id: FromPath[str],
    limit: FromQuery[int] = 100,
    after: FromQuery[str | None] = None,
) -> Response[bytes]:
    """Current members in customer id order; `next_after` is the cursor of the next page."""
    services, _ = require_admin(request)
    if not 1 <= limit <= segments.MEMBERS_PAGE_MAX:
        raise HttpError(400, f"limit must be between 1 and {segments.MEMBERS_PAGE_MAX}", "limit")
    cursor = prefixed_id(after, "cus_", "after") if after else 0
    try:
        with services.db.read() as conn:
            page, last = segments.members(conn, segment_id, limit=limit, after=cursor)
    except segments.UnknownSegment as exc:
        raise HttpError(404, str(exc), "segment_id") from None
    return json_response(
        {
            "segment": segment_id,
            "members": page,
            "next_after": public_id(last) if last is not None else None,
        }
    )


def segments_admin_routes() -> list[HTTPRouteHandler]:
    return [create_segment, update_segment, list_segments, get_segment, segment_members]
