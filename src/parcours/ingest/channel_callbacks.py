"""What channel providers send back: Twilio's status callbacks and incoming SMS. Every
request is checked against the provider's signature before anything is read from it."""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from litestar import Request, Response, get, post
from litestar.enums import MediaType
from litestar.handlers import HTTPRouteHandler

from parcours.channels import Report, postmark, sms, whatsapp
from parcours.customers import CONSENT_EVENT
from parcours.http import (
    HttpError,
    Injected,
    decode_json,
    read_body,
    request_body,
    validation_field,
    whole_number,
)
from parcours.log import Appender, Event
from parcours.messaging import Delivery, public_message_id
from parcours.runtime.clock import Clock, iso
from parcours.runtime.db import Database
from parcours.runtime.settings import Settings
from parcours.tracking import DEPTH_MESSAGE, MAX_TIME_MS, EventError, json_too_deep, parse_event

_encode = msgspec.json.Encoder().encode
log = logging.getLogger(__name__)
BUTTON_EVENT = "WhatsApp Button Clicked"  # a customer tapped a button of a WhatsApp message
EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def _twilio(delivery: Delivery) -> sms.TwilioProvider:
    provider = delivery.providers.for_channel("sms")
    if not isinstance(provider, sms.TwilioProvider):
        raise HttpError(404, "Twilio is not the SMS provider here (channels.sms)", "provider")
    return provider


async def _signed_form(
    request: Request[Any, Any, Any], settings: Settings, provider: sms.TwilioProvider
) -> dict[str, str]:
    """The form Twilio posted, once its X-Twilio-Signature matches the URL it called."""
    raw = await read_body(request, 64 * 1024)
    params = dict(parse_qsl(raw.decode("utf-8", errors="replace"), keep_blank_values=True))
    url = settings.resolved_public_url + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    if not provider.verify(url, params, request.headers.get("x-twilio-signature")):
        raise HttpError(403, "the X-Twilio-Signature does not match this request", "signature")
    return params


_TWILIO_FORM = request_body(
    dict[str, str], ("application/x-www-form-urlencoded",), "Twilio's form, signed"
)


@post("/webhooks/twilio/status", status_code=204, operation_class=_TWILIO_FORM)
async def twilio_status(
    request: Request[Any, Any, Any],
    db: Injected[Database],
    clock: Injected[Clock],
    settings: Injected[Settings],
    delivery: Injected[Delivery],
) -> None:
    """A message's status moved: sent, delivered, undelivered, failed (with ErrorCode)."""
    provider = _twilio(delivery)
    params = await _signed_form(request, settings, provider)
    reference = whole_number(request.query_params.get("m", ""))
    if reference is None:
        raise HttpError(400, "the status callback URL lacks its message (?m=)", "m")
    status = sms.STATUSES.get(params.get("MessageStatus", ""))
    if status is None:  # queued, accepted, sending...: nothing to record
        return None
    code = params.get("ErrorCode") or ""
    number = whole_number(code) or 0

    def record() -> bool:
        with db.write() as conn:
            known = delivery.message_of(conn, reference)
            if known is None or known.provider_message_id != params.get("MessageSid"):
                return False
            return delivery.status(
                conn,
                reference,
                status,
                clock.now_ms(),
                permanent=True,
                suppress=sms.PERMANENT_ERRORS.get(number, False),
                reason=f"Twilio {params.get('MessageStatus')} {code}".strip(),
            )

    if not await asyncio.to_thread(record):
        raise HttpError(404, "no such message", "MessageSid")


@post(
    "/webhooks/twilio/inbound",
    status_code=200,
    media_type="text/xml",
    operation_class=_TWILIO_FORM,
)
async def twilio_inbound(
    request: Request[Any, Any, Any],
    clock: Injected[Clock],
    settings: Injected[Settings],
    delivery: Injected[Delivery],
    appender: Injected[Appender],
) -> Response[bytes]:
    """A text to one of the brand's numbers: STOP, START and HELP (and their usual
    synonyms) update the consent ledger; every text is a `Message Received` event."""
    provider = _twilio(delivery)
    params = await _signed_form(request, settings, provider)
    number, text, sid = (
        params.get("From", ""),
        params.get("Body", ""),
        params.get("MessageSid", ""),
    )
    if not number or not sid:
        raise HttpError(400, "From and MessageSid are required", "From")
    now = clock.now_ms()
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
    try:
        events = [parse_event(_encode(d), source="twilio", received_at=now) for d in documents]
    except EventError as exc:  # a NUL in the text, an id too long...
        log.warning("a signed Twilio message was refused: %s", exc)
        raise HttpError(400, str(exc), exc.field) from None
    await appender.append(events)
    return Response(EMPTY_TWIML, status_code=200, media_type="text/xml")


# ---- WhatsApp (Meta's Cloud API) ---------------------------------------------------------


def _meta(delivery: Delivery) -> whatsapp.MetaWhatsAppProvider:
    provider = delivery.providers.for_channel("whatsapp")
    if not isinstance(provider, whatsapp.MetaWhatsAppProvider):
        raise HttpError(
            404, "Meta is not the WhatsApp provider here (channels.whatsapp)", "provider"
        )
    return provider


@get("/webhooks/whatsapp", media_type="text/plain")
async def whatsapp_verify(
    request: Request[Any, Any, Any], delivery: Injected[Delivery]
) -> Response[bytes]:
    """Meta's subscription check: echo hub.challenge when hub.verify_token is ours."""
    provider = _meta(delivery)
    query = request.query_params
    token = query.get("hub.verify_token", "")
    if query.get("hub.mode") != "subscribe" or not hmac.compare_digest(
        token.encode(), provider.verify_token.encode()
    ):
        raise HttpError(403, "hub.verify_token does not match", "hub.verify_token")
    challenge = query.get("hub.challenge", "")
    return Response(challenge.encode(), status_code=200, media_type="text/plain")


# What Parcours reads of Meta's webhook (any other field is ignored): a body of another
# shape, even signed, is refused naming the field, logged, and changes nothing.


class _WaError(msgspec.Struct):
    code: int | None = None
    title: str | None = None


class _WaStatus(msgspec.Struct):
    id: str | int = ""
    status: str = ""
    errors: list[_WaError] | None = None


class _WaText(msgspec.Struct):
    body: str | None = None
    text: str | None = None  # a button's
    title: str | None = None  # a reply's
    id: str | int | None = None  # a reply button's, as we sent it
    payload: str | None = None  # a template's quick reply button's, as we sent it


class _WaContext(msgspec.Struct):
    id: str | int | None = None  # the message of ours the customer answered


class _WaInteractive(msgspec.Struct):
    button_reply: _WaText | None = None
    list_reply: _WaText | None = None


class _WaMessage(msgspec.Struct):
    id: str | int = ""
    sender: str | int = msgspec.field(default="", name="from")
    type: str = "text"
    timestamp: str | int | None = None
    text: _WaText | None = None
    button: _WaText | None = None
    interactive: _WaInteractive | None = None
    context: _WaContext | None = None


class _WaValue(msgspec.Struct):
    statuses: list[_WaStatus] = []
    messages: list[_WaMessage] = []


class _WaChange(msgspec.Struct):
    field: str = ""
    value: msgspec.Raw = msgspec.Raw(b"")  # read only for the `messages` field


class _WaEntry(msgspec.Struct):
    changes: list[_WaChange] = []


class _WaDocument(msgspec.Struct):
    entry: list[_WaEntry] = []


@post(
    "/webhooks/whatsapp",
    status_code=200,
    media_type=MediaType.TEXT,
    operation_class=request_body(dict[str, Any], description="Meta's webhook, signed"),
)
async def whatsapp_events(
    request: Request[Any, Any, Any],
    db: Injected[Database],
    clock: Injected[Clock],
    delivery: Injected[Delivery],
    appender: Injected[Appender],
) -> Response[bytes]:
    """Statuses of our messages and the customers' own messages, signed with the app
    secret (X-Hub-Signature-256) over the raw body."""
    provider = _meta(delivery)
    raw = await read_body(request, 1024 * 1024)
    if not provider.verify(raw, request.headers.get("x-hub-signature-256")):
        raise HttpError(403, "the X-Hub-Signature-256 does not match the body", "signature")
    try:
        values = _whatsapp_values(raw)
        now = clock.now_ms()
        statuses = [s for value in values for s in value.statuses]
        messages = [message for value in values for message in value.messages]
        events = [event for m in messages for event in _whatsapp_message(m, now, {})]
    except HttpError as exc:
        log.warning("a signed WhatsApp webhook was refused: %s", exc.message)
        raise
    clicks = [m for m in messages if _button_tapped(m) and m.context and m.context.id]
    if statuses or clicks:
        answered = await asyncio.to_thread(
            _whatsapp_statuses, db, clock, delivery, statuses, clicks
        )
        if answered is None:
            # A status for a message whose send is still being recorded: Meta retries.
            raise HttpError(503, "a message is still being recorded; try again", "statuses")
        if answered:  # the buttons' events name the messages they answered
            events = [event for m in messages for event in _whatsapp_message(m, now, answered)]
    if events:
        await appender.append(events)
    return Response(b"", status_code=200, media_type=MediaType.TEXT)


def _whatsapp_values(raw: bytes) -> list[_WaValue]:
    """The `value` of every `messages` change, or HttpError 400 naming what is not as
    Meta documents it."""
    if json_too_deep(raw):
        raise HttpError(400, f"the body is {DEPTH_MESSAGE}", "body")
    try:
        document = msgspec.json.decode(raw, type=_WaDocument)
    except msgspec.ValidationError as exc:
        field, message = validation_field(str(exc))
        raise HttpError(400, message, field or "body") from None
    except msgspec.DecodeError as exc:
        raise HttpError(400, f"the body is not JSON: {exc}", "body") from None
    values: list[_WaValue] = []
    for i, entry in enumerate(document.entry):
        for j, change in enumerate(entry.changes):
            if change.field != "messages" or not change.value:
                continue
            try:
                values.append(msgspec.json.decode(change.value, type=_WaValue))
            except msgspec.ValidationError as exc:
                field, message = validation_field(str(exc))
                where = f"entry[{i}].changes[{j}].value" + (f".{field}" if field else "")
                said = message.partition(": ")[2] or message
                raise HttpError(400, f"{where}: {said}", where) from None
    return values


def _whatsapp_statuses(
    db: Database,
    clock: Clock,
    delivery: Delivery,
    statuses: list[_WaStatus],
    clicks: list[_WaMessage],
) -> dict[str, int] | None:
    """Apply each status, and mark `clicked` each message of ours whose button a customer
    tapped; the messages answered (Meta's id -> outbox id), or None when a status names
    a message not recorded yet while a WhatsApp send is in flight (its result is about
    to be recorded)."""
    now = clock.now_ms()
    answered: dict[str, int] = {}
    with db.write() as conn:
        for message in clicks:
            assert message.context is not None
            wamid = str(message.context.id)
            outbox_id = delivery.find(conn, "meta", wamid)
            if outbox_id is not None:
                answered[wamid] = outbox_id
                button, title, _ = _button_tapped(message) or ("", "", "")
                extra = {"button": button, "title": title}
                delivery.status(conn, outbox_id, "clicked", now, extra=extra)
        for item in statuses:
            status = whatsapp.STATUSES.get(item.status)
            if status is None:
                continue
            outbox_id = delivery.find(conn, "meta", str(item.id))
            if outbox_id is None:
                if delivery.in_flight(conn, "whatsapp"):
                    return None
                continue
            error = (item.errors or [_WaError()])[0]
            code = error.code or 0
            reason = f"WhatsApp {code} {error.title or ''}".strip()
            delivery.status(
                conn,
                outbox_id,
                status,
                now,
                permanent=True,
                suppress=code in whatsapp.SUPPRESS_ERRORS,
                reason=reason if status == "failed" else None,
            )
    return answered


def _button_tapped(message: _WaMessage) -> tuple[str, str, str] | None:
    """The button a customer's message is the tap of (its id, its title, and whether it
    was a reply button of an interactive message or a template's quick reply), or None."""
    if message.type == "button" and message.button is not None:
        button = message.button
        title = button.text or ""
        return (button.payload or title, title, "quick_reply")
    reply = message.interactive.button_reply if message.interactive else None
    if message.type == "interactive" and reply is not None:
        return (str(reply.id or ""), reply.title or "", "reply")
    return None


def _whatsapp_message(message: _WaMessage, now: int, answered: dict[str, int]) -> list[Event]:
    """A customer's message as events (a `WhatsApp Button Clicked` too for a button
    tapped, naming the message of ours it answered when `answered` knows it); HttpError
    400 when it cannot be one."""
    number = "+" + str(message.sender).lstrip("+")
    sid = str(message.id)
    kind = message.type
    reply = message.interactive or _WaInteractive()
    text = {
        "text": message.text.body if message.text else None,
        "button": message.button.text if message.button else None,
        "interactive": (reply.button_reply.title if reply.button_reply else None)
        or (reply.list_reply.title if reply.list_reply else None),
    }.get(kind) or f"[{kind}]"
    stamp = str(message.timestamp or "0")
    if (
        not stamp.isascii()
        or not stamp.isdigit()
        or len(stamp) > 12
        or int(stamp) * 1000 > MAX_TIME_MS
    ):
        raise HttpError(
            400, f"messages[].timestamp: {stamp[:40]!r} is not a Unix time", "timestamp"
        )
    at = int(stamp) * 1000 or now
    word = sms.keyword(text)
    anonymous = f"whatsapp:{number}"
    documents: list[dict[str, Any]] = [
        {
            "type": "identify",
            "anonymousId": anonymous,
            "traits": {"phone": number},
            "messageId": f"wa:{sid}:identify",
            "timestamp": iso(at),
        },
        {
            "type": "track",
            "anonymousId": anonymous,
            "event": "Message Received",
            "messageId": f"wa:{sid}:received",
            "timestamp": iso(at),
            "properties": {
                "channel": "whatsapp",
                "text": text,
                "kind": kind,
                "keyword": word,
                "provider_message_id": sid,
            },
        },
    ]
    if word in ("stop", "start"):
        documents.append(
            {
                "type": "track",
                "anonymousId": anonymous,
                "event": CONSENT_EVENT,
                "messageId": f"wa:{sid}:consent",
                "timestamp": iso(at),
                "properties": {
                    "channel": "whatsapp",
                    "purpose": "marketing",
                    "status": "withdrawn" if word == "stop" else "granted",
                    "source": f"WhatsApp keyword {text.strip().upper()}",
                },
            }
        )
    tapped = _button_tapped(message)
    if tapped is not None:
        reply_to = str(message.context.id) if message.context and message.context.id else None
        properties: dict[str, Any] = {
            "channel": "whatsapp",
            "button": tapped[0],
            "title": tapped[1],
            "kind": tapped[2],
            "reply_to": reply_to,
            "provider_message_id": sid,
        }
        if reply_to in answered:
            properties["message_id"] = public_message_id(answered[reply_to])
        documents.append(
            {
                "type": "track",
                "anonymousId": anonymous,
                "event": BUTTON_EVENT,
                "messageId": f"wa:{sid}:button",
                "timestamp": iso(at),
                "properties": properties,
            }
        )
    try:
        return [parse_event(_encode(d), source="whatsapp", received_at=now) for d in documents]
    except EventError as exc:
        raise HttpError(400, f"messages[]: {exc}", "messages") from None


# ---- Postmark ----------------------------------------------------------------------------


@post(
    "/webhooks/postmark",
    status_code=200,
    media_type=MediaType.TEXT,
    operation_class=request_body(dict[str, Any], description="Postmark's webhook record"),
)
async def postmark_events(
    request: Request[Any, Any, Any],
    db: Injected[Database],
    clock: Injected[Clock],
    delivery: Injected[Delivery],
) -> Response[bytes]:
    """Postmark's Delivery, Bounce and SpamComplaint webhooks, with the HTTP Basic
    credentials of the webhook URL."""
    provider = delivery.providers.for_channel("email")
    if not isinstance(provider, postmark.PostmarkProvider):
        raise HttpError(404, "Postmark is not the email provider here", "provider")
    if not provider.webhook_allowed(request.headers.get("authorization")):
        raise HttpError(401, "wrong webhook credentials", "authorization")
    record = decode_json(await read_body(request, 256 * 1024), object)
    if not isinstance(record, dict):
        raise HttpError(400, "the body must be a JSON object", "body")
    await asyncio.to_thread(_postmark_record, db, clock, delivery, record)
    return Response(b"", status_code=200, media_type=MediaType.TEXT)


def _postmark_record(
    db: Database, clock: Clock, delivery: Delivery, record: dict[str, Any]
) -> None:
    kind = record.get("RecordType")
    metadata = record.get("Metadata") or {}
    reference = str(metadata.get("parcours_message", ""))
    outbox_id = whole_number(reference)
    message_id = str(record.get("MessageID", ""))
    with db.read() as conn:
        if outbox_id is None:
            outbox_id = delivery.find(conn, "postmark", message_id)
        known = delivery.message_of(conn, outbox_id) if outbox_id else None
    if known is None or known.provider_message_id != message_id:
        return  # not one of ours (or not this one): acknowledged, nothing recorded
    assert outbox_id is not None
    if kind == "Delivery":
        with db.write() as conn:
            delivery.status(conn, outbox_id, "delivered", clock.now_ms())
    elif kind == "Bounce" and (verdict := postmark.bounce_verdict(record)) is not None:
        delivery.email_report(
            Report(
                "bounce",
                outbox_id,
                message_id,
                str(record.get("Email") or "").lower() or None,
                str(record.get("Type")),
                str(record.get("Description") or "") or None,
                verdict=verdict,
            ),
            "postmark",
        )
    elif kind == "SpamComplaint":
        delivery.email_report(
            Report("complaint", outbox_id, message_id, record.get("Email"), None, "abuse"),
            "postmark",
        )


def channel_callback_routes() -> list[HTTPRouteHandler]:
    return [twilio_status, twilio_inbound, whatsapp_verify, whatsapp_events, postmark_events]


__all__ = ["channel_callback_routes"]
