"""The Segment-compatible tracking API: /v1/track, identify, page, screen, group, alias, batch."""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response, post
from litestar.handlers import HTTPRouteHandler

from parcours.ingest import metrics as ingest_metrics
from parcours.ingest.model import (
    MAX_BATCH_BYTES,
    MAX_EVENT_BYTES,
    EventError,
    parse_batch,
    parse_event,
    write_key_in_body,
)
from parcours.ingest.writer import WriterClosed
from parcours.services import Services

_encode = msgspec.json.Encoder().encode


T = TypeVar("T")


class HttpError(Exception):
    """An error answered as JSON: {"success": false, "error": {"field", "message"}}."""

    def __init__(self, status: int, message: str, field: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field

    def response(self) -> Response[bytes]:
        # `code` and `message` at the top are what Segment's and RudderStack's libraries
        # read from an error; `error` names the field.
        body = {
            "success": False,
            "code": _CODES.get(self.status, "error"),
            "message": self.message,
            "error": {"field": self.field, "message": self.message},
        }
        return Response(_encode(body), status_code=self.status, media_type="application/json")


_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_encoding",
    503: "unavailable",
}


def json_response(body: Any, status: int = 200) -> Response[bytes]:
    return Response(_encode(body), status_code=status, media_type="application/json")


def services_of(request: Request[Any, Any, Any]) -> Services:
    services: Services = request.app.state.services
    return services


async def read_body(request: Request[Any, Any, Any], limit: int) -> bytes:
    """The request body, un-gzipped if need be, refused when over `limit` bytes."""
    raw = await request.body()
    encoding = request.headers.get("content-encoding", "").lower().strip()
    if encoding == "gzip":
        try:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            raw = inflater.decompress(raw, limit + 1)
        except zlib.error as exc:
            raise HttpError(400, f"body is not valid gzip: {exc}", "body") from None
    elif encoding not in ("", "identity"):
        raise HttpError(415, f"unsupported Content-Encoding {encoding!r}; use gzip or none")
    if len(raw) > limit:
        raise HttpError(413, f"body is larger than the limit of {limit} bytes", "body")
    return raw


async def read_json(request: Request[Any, Any, Any], limit: int, kind: type[T]) -> T:
    """The request body as `kind`; HttpError 400 naming the problem when it is not."""
    raw = await read_body(request, limit)
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise HttpError(400, str(exc), "body") from None
    except msgspec.DecodeError as exc:
        raise HttpError(400, f"the body is not JSON: {exc}", "body") from None


def basic_write_key(request: Request[Any, Any, Any]) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None


def require_write_key(
    services: Services, request: Request[Any, Any, Any], body_key: str | None
) -> None:
    key = basic_write_key(request) or body_key
    if not key:
        raise HttpError(
            401,
            "a write key is required: HTTP Basic auth 'writeKey:' or writeKey in the body",
            "writeKey",
        )
    if not services.keys.check("write", key):
        raise HttpError(401, "unknown or revoked write key", "writeKey")


def _single(kind: str) -> HTTPRouteHandler:
    async def handler(request: Request[Any, Any, Any]) -> Response[bytes]:
        services = services_of(request)
        try:
            raw = await read_body(request, MAX_EVENT_BYTES)
            require_write_key(services, request, write_key_in_body(raw))
            event = parse_event(
                raw, source="api", received_at=services.clock.now_ms(), default_type=kind
            )
        except HttpError as exc:
            ingest_metrics.refused_request("api", exc.status)
            return exc.response()
        except EventError as exc:
            ingest_metrics.rejected("api", exc.kind)
            return HttpError(400, str(exc), exc.field).response()
        try:
            result = await services.writer.append([event])
        except WriterClosed as exc:
            return HttpError(503, str(exc)).response()
        return json_response(
            {"success": True, "messageId": event.message_id, "duplicate": result.duplicates == 1}
        )

    handler.__name__ = f"segment_{kind}"
    return post(f"/v1/{kind}")(handler)


@post("/v1/batch")
async def segment_batch(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    parsed = None
    try:
        raw = await read_body(request, MAX_BATCH_BYTES)
        parsed = parse_batch(raw, source="api", received_at=services.clock.now_ms())
        require_write_key(services, request, parsed.write_key)
    except HttpError as exc:
        events = len(parsed.events) + len(parsed.rejected) if parsed is not None else 1
        ingest_metrics.refused_request("api", exc.status, events)
        return exc.response()
    except EventError as exc:
        ingest_metrics.rejected("api", exc.kind)
        return HttpError(400, str(exc), exc.field).response()
    for rejection in parsed.rejected:
        ingest_metrics.rejected("api", rejection.kind)
    try:
        result = await services.writer.append(parsed.events)
    except WriterClosed as exc:  # stopping, or the writer process is being replaced
        return HttpError(503, str(exc)).response()
    return json_response(
        {
            "success": True,
            "accepted": len(parsed.events),
            "stored": result.stored,
            "duplicates": result.duplicates,
            "rejected": [
                {
                    "index": r.index,
                    "messageId": r.message_id,
                    "field": r.field,
                    "message": f"{r.field}: {r.reason}" if r.field else r.reason,
                }
                for r in parsed.rejected
            ],
        }
    )


def segment_routes() -> list[HTTPRouteHandler]:
    kinds = ("track", "identify", "page", "screen", "group", "alias")
    return [*(_single(kind) for kind in kinds), segment_batch]
