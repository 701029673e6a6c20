"""The Segment-compatible tracking API: /v1/track, identify, page, screen, group, alias, batch."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import msgspec
from litestar import Request, post
from litestar.handlers import HTTPRouteHandler

from parcours.http import (
    BODY_FIRST,
    BODY_LIMIT,
    COUNTS_BATCH,
    INGEST_SOURCE,
    HttpError,
    Injected,
    read_body,
    request_body,
)
from parcours.ingest import metrics as ingest_metrics
from parcours.ingest.writer import WriterClosed
from parcours.log import Appender, AppendResult, Event
from parcours.runtime.clock import Clock
from parcours.tracking import (
    MAX_BATCH_BYTES,
    MAX_EVENT_BYTES,
    EventError,
    TrackingCall,
    parse_batch,
    parse_event,
)

log = logging.getLogger(__name__)


class TrackingBatch(msgspec.Struct):
    """Segment's batch: up to 2,500 calls, each with its `type`."""

    batch: list[TrackingCall]
    sentAt: datetime | None = None
    writeKey: str | None = None
    context: dict[str, Any] | None = None


_GZIP_OR_NOT = "JSON, gzip-compressed or not (Content-Encoding: gzip)"


class Accepted(msgspec.Struct):
    """A tracking call's event, stored (or already stored: `duplicate`)."""

    success: bool
    messageId: str
    duplicate: bool


class Rejection(msgspec.Struct):
    """One event of a batch that was not kept, by its place in the batch."""

    index: int
    messageId: str | None
    field: str
    message: str


class BatchAccepted(msgspec.Struct):
    """What a batch kept (`accepted`: stored or duplicates) and what it rejected."""

    success: bool
    accepted: int
    stored: int
    duplicates: int
    rejected: list[Rejection]


def _single(kind: str) -> HTTPRouteHandler:
    async def handler(
        request: Request[Any, Any, Any], clock: Injected[Clock], appender: Injected[Appender]
    ) -> Accepted:
        try:
            raw = await read_body(request, MAX_EVENT_BYTES)
            event = parse_event(raw, source="api", received_at=clock.now_ms(), default_type=kind)
        except HttpError as exc:
            ingest_metrics.refused_request("api", exc.status)
            raise
        except EventError as exc:
            ingest_metrics.rejected("api", exc.kind)
            raise HttpError(400, str(exc), exc.field) from None
        result = await appender.append([event])  # WriterClosed: 503 (web/errors.py)
        return Accepted(True, event.message_id, result.duplicates == 1)

    handler.__name__ = f"{kind}_call"
    handler.__doc__ = f"Segment's `{kind}` call: one event, stored once (by its messageId)."
    return post(
        f"/v1/{kind}",
        status_code=200,
        opt={BODY_LIMIT: MAX_EVENT_BYTES, INGEST_SOURCE: "api"},
        operation_class=request_body(TrackingCall, description=_GZIP_OR_NOT),
    )(handler)


def _unreadable_batch(raw: bytes) -> None:
    """What the batch answers for a body it cannot read (not JSON, not a batch), counted as
    it counts them: the key in a body that cannot be read is not looked for."""
    try:
        parse_batch(raw, source="api", received_at=0)
    except EventError as exc:
        ingest_metrics.rejected("api", exc.kind)
        raise HttpError(400, str(exc), exc.field) from None


@post(
    "/v1/batch",
    status_code=200,
    opt={
        BODY_LIMIT: MAX_BATCH_BYTES,
        INGEST_SOURCE: "api",
        COUNTS_BATCH: True,
        BODY_FIRST: _unreadable_batch,
    },
    operation_class=request_body(TrackingBatch, description=_GZIP_OR_NOT),
)
async def batch_call(
    request: Request[Any, Any, Any], clock: Injected[Clock], appender: Injected[Appender]
) -> BatchAccepted:
    """Segment's batch: each bad event is rejected alone, the good ones are kept."""
    parsed = None
    try:
        raw = await read_body(request, MAX_BATCH_BYTES)
        parsed = parse_batch(raw, source="api", received_at=clock.now_ms())
    except HttpError as exc:
        ingest_metrics.refused_request("api", exc.status)
        raise
    except EventError as exc:
        ingest_metrics.rejected("api", exc.kind)
        raise HttpError(400, str(exc), exc.field) from None
    try:
        result, failed = await _append_each_alone(appender, parsed.events)
    except WriterClosed as exc:  # the server is stopping
        raise HttpError(503, str(exc)) from None
    rejected = [
        Rejection(r.index, r.message_id, r.field, f"{r.field}: {r.reason}" if r.field else r.reason)
        for r in parsed.rejected
    ]
    for position in failed:
        rejected.append(
            Rejection(
                parsed.indexes[position],
                parsed.events[position].message_id,
                "",
                "this event could not be stored (the error is logged); the others were",
            )
        )
    rejected.sort(key=lambda r: r.index)
    for rejection in parsed.rejected:
        ingest_metrics.rejected("api", rejection.kind)
    for _ in failed:
        ingest_metrics.rejected("api", "invalid")
    return BatchAccepted(
        True, len(parsed.events) - len(failed), result.stored, result.duplicates, rejected
    )


async def _append_each_alone(
    appender: Appender, events: list[Event]
) -> tuple[AppendResult, list[int]]:
    """Append a batch's events together; if that fails, each alone, so that an event that
    cannot be stored (a case validation did not foresee) is rejected by itself and the
    others are kept, as for the ones validation refused. The positions that failed come
    back; when every one fails (the database is down), the error is raised."""
    try:
        return await appender.append(events), []
    except WriterClosed:
        raise
    except Exception:
        if len(events) <= 1:
            raise
        log.exception("a batch of %d events could not be stored together", len(events))
    stored = duplicates = 0
    failed: list[int] = []
    last_error: Exception | None = None
    for position, event in enumerate(events):
        try:
            result = await appender.append([event])
        except WriterClosed:
            raise
        except Exception as exc:
            log.exception("event %d of a batch could not be stored", position)
            failed.append(position)
            last_error = exc
            continue
        stored += result.stored
        duplicates += result.duplicates
    if last_error is not None and len(failed) == len(events):
        raise last_error
    return AppendResult(stored=stored, duplicates=duplicates), failed


def tracking_routes() -> list[HTTPRouteHandler]:
    kinds = ("track", "identify", "page", "screen", "group", "alias")
    return [*(_single(kind) for kind in kinds), batch_call]
