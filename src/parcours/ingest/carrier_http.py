"""POST /api/commerce/carrier-webhook: a carrier's (or an aggregator's) report of a
parcel's scan, signed with `carrier_webhook_secret`, mapped onto a `Shipment Updated`
event (docs/commerce.md, "The carrier webhook"). A bad signature changes nothing."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.openapi import ResponseSpec

from parcours.http import HttpError, Injected, json_response, request_body
from parcours.ingest import metrics as ingest_metrics
from parcours.ingest.carriers import (
    SIGNATURE_HEADER,
    CarrierError,
    CarrierUpdate,
    verify_signature,
    webhook_event,
)
from parcours.log import Appender
from parcours.runtime.clock import Clock
from parcours.runtime.settings import Settings
from parcours.tracking import EventError, parse_event

MAX_BODY_BYTES = 64 * 1024
_encode = msgspec.json.Encoder().encode


class CarrierAnswer(msgspec.Struct):
    success: bool
    stored: int
    duplicates: int


@post(
    "/api/commerce/carrier-webhook",
    status_code=200,
    operation_class=request_body(CarrierUpdate, description="One scan of a parcel, signed"),
    responses={200: ResponseSpec(CarrierAnswer, description="Stored, or a duplicate")},
)
async def carrier_webhook(
    request: Request[Any, Any, Any],
    clock: Injected[Clock],
    settings: Injected[Settings],
    appender: Injected[Appender],
) -> Response[bytes]:
    """A carrier's report of one scan: `X-Parcours-Signature` is `sha256=` and the hex
    HMAC-SHA256 of the raw body with the carrier webhook secret. The same `event_id`
    again is stored once."""
    try:
        if not settings.carrier_webhook_secret:
            raise HttpError(
                503,
                "the carrier webhook is not configured: set PARCOURS_CARRIER_WEBHOOK_SECRET",
            )
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise HttpError(413, f"body is larger than {MAX_BODY_BYTES} bytes", "body")
        if not verify_signature(
            settings.carrier_webhook_secret, raw, request.headers.get(SIGNATURE_HEADER)
        ):
            raise HttpError(
                401,
                f"{SIGNATURE_HEADER} does not match the body (sha256= and the hex HMAC-SHA256 "
                "of the raw body with the carrier webhook secret)",
                SIGNATURE_HEADER,
            )
        try:
            document = webhook_event(raw)
            event = parse_event(
                _encode(document),
                source="carrier",
                received_at=clock.now_ms(),
                identity_required=False,
            )
        except CarrierError as exc:
            raise HttpError(400, str(exc), exc.field) from None
        except EventError as exc:
            raise HttpError(400, f"the report maps to an invalid event: {exc}", exc.field) from None
    except HttpError as exc:
        ingest_metrics.refused_request("carrier", exc.status)
        raise
    result = await appender.append([event])
    return json_response(CarrierAnswer(True, result.stored, result.duplicates))


__all__ = ["carrier_webhook"]
