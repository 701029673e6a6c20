"""What channel providers send back: Twilio's status callbacks and incoming SMS. Every
request is checked against the provider's signature before anything is read from it."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from litestar import Request, Response, post
from litestar.handlers import HTTPRouteHandler

from parcours.channels import sms
from parcours.customers.consent import CONSENT_EVENT
from parcours.ingest.http import HttpError, read_body, services_of
from parcours.ingest.model import Event, parse_event
from parcours.services import Services

_encode = msgspec.json.Encoder().encode
EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def _twilio(services: Services) -> sms.TwilioProvider:
    provider = services.delivery.providers.for_channel("sms")
    if not isinstance(provider, sms.TwilioProvider):
        raise HttpError(404, "Twilio is not the SMS provider here (channels.sms)", "provider")
    return provider


async def _signed_form(
    request: Request[Any, Any, Any], services: Services, provider: sms.TwilioProvider
) -> dict[str, str]:
    """The form Twilio posted, once its X-Twilio-Signature matches the URL it called."""
    raw = await read_body(request, 64 * 1024)
    params = dict(parse_qsl(raw.decode("utf-8", errors="replace"), keep_blank_values=True))
    url = services.settings.resolved_public_url + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    if not provider.verify(url, params, request.headers.get("x-twilio-signature")):
        raise HttpError(403, "the X-Twilio-Signature does not match this request", "signature")
    return params


@post("/webhooks/twilio/status", status_code=200)
async def twilio_status(request: Request[Any, Any, Any]) -> Response[bytes]:
    """A message's status moved: sent, delivered, undelivered, failed (with ErrorCode)."""
    try:
        services = services_of(request)
        provider = _twilio(services)
        params = await _signed_form(request, services, provider)
        reference = request.query_params.get("m", "")
        if not reference.isdigit():
            raise HttpError(400, "the status callback URL lacks its message (?m=)", "m")
        status = sms.STATUSES.get(params.get("MessageStatus", ""))
        if status is None:  # queued, accepted, sending...: nothing to record
            return Response(b"", status_code=204)
        code = params.get("ErrorCode") or ""
        number = int(code) if code.isdigit() else 0

        def record() -> bool:
            with services.db.write() as conn:
                known = services.delivery.message_of(conn, int(reference))
                if known is None or known["provider_message_id"] != params.get("MessageSid"):
                    return False
                return services.delivery.status(
                    conn,
                    int(reference),
                    status,
                    services.clock.now_ms(),
                    permanent=True,
                    suppress=sms.PERMANENT_ERRORS.get(number, False),
                    reason=f"Twilio {params.get('MessageStatus')} {code}".strip(),
                )

        if not await asyncio.to_thread(record):
            raise HttpError(404, "no such message", "MessageSid")
    except HttpError as exc:
        return exc.response()
    return Response(b"", status_code=204)


@post("/webhooks/twilio/inbound", status_code=200)
async def twilio_inbound(request: Request[Any, Any, Any]) -> Response[bytes]:
    """A text to one of the brand's numbers: STOP, START and HELP (and their usual
    synonyms) update the consent ledger; every text is a `Message Received` event."""
    try:
        services = services_of(request)
        provider = _twilio(services)
        params = await _signed_form(request, services, provider)
        number, text, sid = (
            params.get("From", ""),
            params.get("Body", ""),
            params.get("MessageSid", ""),
        )
        if not number or not sid:
            raise HttpError(400, "From and MessageSid are required", "From")
        now = services.clock.now_ms()
        word = sms.keyword(text)
        anonymous = f"sms:{number}"
        documents: list[dict[str, Any]] = [
            {
                "type": "identify",
                "anonymousId": anonymous,
                "traits": {"phone": number},
                "messageId": f"twilio:{sid}:identify",
            },
            {
                "type": "track",
                "anonymousId": anonymous,
                "event": "Message Received",
                "messageId": f"twilio:{sid}:received",
                "properties": {
                    "channel": "sms",
                    "text": text,
                    "keyword": word,
                    "provider_message_id": sid,
                    "to": params.get("To"),
                },
            },
        ]
        if word in ("stop", "start"):
            documents.append(
                {
                    "type": "track",
                    "anonymousId": anonymous,
                    "event": CONSENT_EVENT,
                    "messageId": f"twilio:{sid}:consent",
                    "properties": {
                        "channel": "sms",
                        "purpose": "marketing",
                        "status": "withdrawn" if word == "stop" else "granted",
                        "source": f"SMS keyword {text.strip().upper()}",
                    },
                }
            )
        events: list[Event] = [
            parse_event(_encode(d), source="twilio", received_at=now) for d in documents
        ]
        await services.writer.append(events)
    except HttpError as exc:
        return exc.response()
    return Response(EMPTY_TWIML, status_code=200, media_type="text/xml")


def channel_callback_routes() -> list[HTTPRouteHandler]:
    return [twilio_status, twilio_inbound]


__all__ = ["channel_callback_routes"]
