"""Segment-compatible events: parsing, validation and time correction.

Every event that enters Parcours, whatever its source, is parsed here into an `Event`.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from parcours.customers import CHAT_VISITOR_PREFIX, consent
from parcours.log import Event

EVENT_TYPES = frozenset({"track", "identify", "page", "screen", "group", "alias"})
MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 2500
MAX_ID_LENGTH = 512
# Bounds that keep a hostile event from failing later, where it would take its batch with
# it (docs/security.md, "Input limits"): nesting, money (of the order events, which the
# profile adds up in decimal), times.
MAX_JSON_DEPTH = 64  # nested objects and arrays
MAX_AMOUNT = 10**15  # an amount (total, price...) is less than this in absolute value
MAX_QUANTITY = 10**6
MONEY_PROPERTIES = ("total", "revenue", "value", "subtotal", "shipping", "tax", "discount", "price")
MIN_TIME_MS = 0  # 1970-01-01T00:00:00Z
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


class EventError(ValueError):
    """An event that cannot be accepted; `field` names what is wrong, `kind` says what sort
    of wrong (invalid, too_large, malformed: not JSON) for the metrics."""

    def __init__(self, field: str, message: str, kind: str = "invalid") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message
        self.kind = kind


class TrackingCall(msgspec.Struct):
    """A call as Segment's spec writes it, for the document: the parser (tracking.py)
    checks each field, names what is wrong, and keeps fields it does not know."""

    type: str | None = None
    messageId: str | None = None
    userId: str | int | None = None
    anonymousId: str | int | None = None
    previousId: str | int | None = None
    groupId: str | int | None = None
    event: str | None = None
    name: str | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    timestamp: datetime | None = None
    originalTimestamp: datetime | None = None
    sentAt: datetime | None = None
    writeKey: str | None = None


class TrackingCallBatch(msgspec.Struct):
    batch: list[msgspec.Raw]
    sentAt: datetime | None = None
    writeKey: str | None = None
    context: dict[str, Any] | None = None


_decode_event = msgspec.json.Decoder(TrackingCall).decode
_decode_batch = msgspec.json.Decoder(TrackingCallBatch).decode
_decode_any = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_FIELD_RE = re.compile(r"at `\$\.?([^`]*)`")


def parse_event(
    raw: bytes,
    *,
    source: str,
    received_at: int,
    default_type: str | None = None,
    batch_sent_at: int | None = None,
    identity_required: bool = True,
    chat_visitor: bool = False,
) -> Event:
    """Validate one event's JSON and return it with its corrected time; raise EventError.

    `batch_sent_at` is the sentAt of the batch around it, in milliseconds. An anonymous id
    starting `visitor_` is the site chat's alone: only the chat, which drew it and signed
    it into the visitor's token, passes `chat_visitor` (docs/security.md, Site chat). The
    hot path of ingestion: the common case (text ids, no external ids) is tested first."""
    if len(raw) > MAX_EVENT_BYTES:
        raise EventError(
            "", f"event is {len(raw)} bytes, more than the limit of {MAX_EVENT_BYTES}", "too_large"
        )
    if json_too_deep(raw, MAX_JSON_DEPTH):
        raise EventError("", DEPTH_MESSAGE, "too_large")
    try:
        incoming = _decode_event(raw)
    except msgspec.ValidationError as exc:
        raise _field_error(exc) from None
    except msgspec.DecodeError as exc:
        raise EventError("", f"not valid JSON: {exc}", "malformed") from None
    if b"\\u0000" in raw:  # rare: then find where (an escaped backslash may be all it is)
        where = nul_path(_decode_any(raw))
        if where is not None:
            raise EventError(where, NUL_MESSAGE)
    kind = default_type or incoming.type
    if kind is None:
        raise EventError("type", f"is required, one of {', '.join(sorted(EVENT_TYPES))}")
    if kind not in EVENT_TYPES:
        raise EventError("type", f"{kind!r} is not one of {', '.join(sorted(EVENT_TYPES))}")
    value = incoming.userId
    user_id = None if value is None else _identifier(value, "userId")
    value = incoming.anonymousId
    anonymous_id = None if value is None else _identifier(value, "anonymousId")
    if anonymous_id is not None and anonymous_id.startswith(CHAT_VISITOR_PREFIX):
        _chat_visitor_only(chat_visitor, "anonymousId")
    context = incoming.context
    if context is None:
        context = {}
    external_ids = _external_ids(context) if "externalIds" in context else []
    for position, (id_kind, ident) in enumerate(external_ids):
        if id_kind == "anonymous_id" and ident.startswith(CHAT_VISITOR_PREFIX):
            _chat_visitor_only(chat_visitor, f"context.externalIds[{position}].id")
    if identity_required and user_id is None and anonymous_id is None:
        raise EventError("userId", "userId or anonymousId is required")
    track = kind == "track"
    name = incoming.event if track else incoming.name
    name = name.strip() if name else None
    if track and not name:
        raise EventError("event", "a track call needs a non-empty event name")
    value = incoming.previousId
    previous_id = None if value is None else _identifier(value, "previousId")
    if previous_id is not None and previous_id.startswith(CHAT_VISITOR_PREFIX):
        _chat_visitor_only(chat_visitor, "previousId")
    if kind == "alias":
        if previous_id is None:
            raise EventError("previousId", "an alias call needs previousId")
        if user_id is None:
            raise EventError("userId", "an alias call needs userId")
    value = incoming.groupId
    group_id = None if value is None else _identifier(value, "groupId")
    if kind == "group" and group_id is None:
        raise EventError("groupId", "a group call needs groupId")
    if kind == "identify" or (track and name == consent.CONSENT_EVENT):
        _check_consent(kind, name, incoming)
    if track and incoming.properties and name is not None and name.startswith("Order "):
        _check_amounts(incoming.properties)
    moment = incoming.timestamp or incoming.originalTimestamp
    timestamp = None if moment is None else _ms(moment, "timestamp")
    sent_at = batch_sent_at if incoming.sentAt is None else _ms(incoming.sentAt, "sentAt")
    occurred_at = corrected_time(timestamp, sent_at, received_at)
    if not MIN_TIME_MS <= occurred_at <= MAX_TIME_MS:
        raise EventError(
            "timestamp", "corrected by sentAt, it falls outside the years 1970 to 9999"
        )
    message_id = incoming.messageId
    if message_id is not None:
        message_id = message_id.strip()
        if not message_id:
            raise EventError("messageId", "must not be empty")
        if len(message_id) > MAX_ID_LENGTH:
            raise EventError("messageId", f"is longer than {MAX_ID_LENGTH} characters")
    else:
        message_id = f"pc-{uuid.uuid4()}"
    payload = raw.decode("utf-8")
    if incoming.writeKey is not None:
        # The write key is a secret: it is never stored with the event.
        document = _decode_any(raw)
        document.pop("writeKey", None)
        payload = _encode(document).decode("utf-8")
    properties = incoming.properties
    traits = incoming.traits
    return Event(
        message_id=message_id,
        type=kind,
        name=name,
        user_id=user_id,
        anonymous_id=anonymous_id,
        properties={} if properties is None else properties,
        traits={} if traits is None else traits,
        context=context,
        occurred_at=occurred_at,
        received_at=received_at,
        timestamp=timestamp,
        sent_at=sent_at,
        source=source,
        payload=payload,
        previous_id=previous_id,
        group_id=group_id,
        external_ids=external_ids,
    )


@dataclass(frozen=True)
class Rejection:
    index: int
    field: str
    reason: str
    message_id: str | None
    kind: str = "invalid"  # as EventError's


@dataclass
class ParsedBatch:
    events: list[Event]
    indexes: list[int]
    rejected: list[Rejection]
    write_key: str | None


def parse_batch(raw: bytes, *, source: str, received_at: int) -> ParsedBatch:
    """Validate a batch body; each bad event is rejected alone with its index and reason."""
    if len(raw) > MAX_BATCH_BYTES:
        raise EventError(
            "", f"batch is {len(raw)} bytes, more than the limit of {MAX_BATCH_BYTES}", "too_large"
        )
    try:
        incoming = _decode_batch(raw)
    except msgspec.ValidationError as exc:
        raise _field_error(exc) from None
    except msgspec.DecodeError as exc:
        raise EventError("", f"not valid JSON: {exc}", "malformed") from None
    except RecursionError:  # deeper than the decoder goes: no event can be told apart
        raise EventError("", DEPTH_MESSAGE, "too_large") from None
    if len(incoming.batch) > MAX_BATCH_EVENTS:
        raise EventError(
            "batch",
            f"holds {len(incoming.batch)} events, more than the limit of {MAX_BATCH_EVENTS}",
            "too_large",
        )
    parsed = ParsedBatch([], [], [], incoming.writeKey)
    sent_at = None if incoming.sentAt is None else _ms(incoming.sentAt, "sentAt")
    for index, item in enumerate(incoming.batch):
        try:
            event = parse_event(
                bytes(item), source=source, received_at=received_at, batch_sent_at=sent_at
            )
        except EventError as exc:
            parsed.rejected.append(
                Rejection(index, exc.field, exc.reason, _message_id_of(bytes(item)), exc.kind)
            )
            continue
        parsed.events.append(event)
        parsed.indexes.append(index)
    return parsed


def write_key_in_body(raw: bytes) -> str | None:
    """The writeKey field of a single event's body, if any (Segment allows it there)."""
    try:
        value = msgspec.json.decode(raw, type=_WriteKeyOnly)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None
    return value.writeKey


class _WriteKeyOnly(msgspec.Struct):
    writeKey: str | None = None


def corrected_time(timestamp: int | None, sent_at: int | None, received_at: int) -> int:
    """Segment's rule: shift the client's timestamp by the client's clock error."""
    if timestamp is None:
        return received_at
    if sent_at is None:
        return timestamp
    return timestamp + (received_at - sent_at)


def _check_consent(kind: str, name: str | None, incoming: TrackingCall) -> None:
    try:
        if kind == "identify" and incoming.traits and "consent" in incoming.traits:
            consent.from_trait(incoming.traits["consent"])
        elif kind == "track" and name == consent.CONSENT_EVENT:
            consent.from_properties(incoming.properties or {})
    except consent.ConsentError as exc:
        raise EventError(exc.field, exc.reason) from None


def _identifier(value: str | int | None, name: str) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    if len(text) > MAX_ID_LENGTH:
        raise EventError(name, f"is longer than {MAX_ID_LENGTH} characters")
    return text


def _chat_visitor_only(chat_visitor: bool, field: str) -> None:
    """A chat visitor's id is accepted from the chat only."""
    if not chat_visitor:
        raise EventError(
            field,
            f"ids starting with {CHAT_VISITOR_PREFIX!r} are the site chat's visitors' and are "
            "written by the chat only: use another anonymous id",
        )


def _ms(value: datetime, field: str) -> int:
    """Milliseconds since the epoch; a time written without a zone is UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    ms = round(value.timestamp() * 1000)
    if not MIN_TIME_MS <= ms <= MAX_TIME_MS:
        raise EventError(field, "is outside the years 1970 to 9999")
    return ms


DEPTH_MESSAGE = f"JSON nested more than {MAX_JSON_DEPTH} levels deep (the limit)"
NUL_MESSAGE = "contains a NUL character (\\u0000), which is not accepted"
# A JSON string, unrolled (no backtracking), and every byte that is not a bracket.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text nests objects and arrays more than `limit` levels deep,
    found before decoding it (a decoder recurses, and fails past its own limit). On the
    ingestion path: the common case is two counts over the bytes."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for byte in _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS):
        if byte in (91, 123):  # [ {
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def nul_path(document: Any, path: str = "") -> str | None:
    """The path of the first key or text holding a NUL character, if any (PostgreSQL
    cannot store one in text, SQLite can: refused everywhere, alike)."""
    pending: list[tuple[Any, str]] = [(document, path)]
    while pending:
        value, where = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return where
        elif isinstance(value, dict):
            for key, item in value.items():
                child = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and "\x00" in key:
                    return child
                pending.append((item, child))
        elif isinstance(value, list):
            pending.extend((item, f"{where}[{i}]") for i, item in enumerate(value))
    return None


def _check_amounts(properties: dict[str, Any]) -> None:
    """Amounts within sane bounds: one of 1e26 would fail the order's projection, and
    with it every event committed alongside. On the ingestion path: a plain number in
    bounds is let through by a type test and two comparisons."""
    for name, value in properties.items():
        if (
            name in _MONEY
            and value is not None
            and not (type(value) in _PLAIN and -MAX_AMOUNT < value < MAX_AMOUNT)
        ):
            _check_number(value, f"properties.{name}", MAX_AMOUNT)
    products = properties.get("products")
    if type(products) is list:
        for position, product in enumerate(products):
            if type(product) is not dict:
                continue
            price, quantity = product.get("price"), product.get("quantity")
            if price is not None and not (
                type(price) in _PLAIN and -MAX_AMOUNT < price < MAX_AMOUNT
            ):
                _check_number(price, f"properties.products[{position}].price", MAX_AMOUNT)
            if quantity is not None and not (
                type(quantity) in _PLAIN and -MAX_QUANTITY < quantity < MAX_QUANTITY
            ):
                where = f"properties.products[{position}].quantity"
                _check_number(quantity, where, MAX_QUANTITY)


_PLAIN = (int, float)  # exactly: a bool is not an amount
_MONEY = frozenset(MONEY_PROPERTIES)


def _check_number(value: Any, field: str, bound: int) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        within = abs(value) < bound
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return  # not a number: ignored where amounts are read, as before
        within = not number.is_finite() or abs(number) < bound
    else:
        return
    if not within:
        raise EventError(field, f"is out of range: an amount is less than {bound:,} in size")


def _external_ids(context: dict[str, Any]) -> list[tuple[str, str]]:
    items = context.get("externalIds")
    if items is None:
        return []
    if not isinstance(items, list):
        raise EventError("context.externalIds", "must be a list of {id, type} objects")
    found: list[tuple[str, str]] = []
    for position, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise EventError(f"context.externalIds[{position}]", "needs a text type and an id")
        ident = item.get("id")
        if not isinstance(ident, str | int) or isinstance(ident, bool) or str(ident) == "":
            raise EventError(f"context.externalIds[{position}].id", "must be text or a number")
        found.append((item["type"].strip().lower(), str(ident)))
    return found


def _field_error(exc: msgspec.ValidationError) -> EventError:
    message = str(exc)
    match = _FIELD_RE.search(message)
    where = match.group(1) if match else ""
    reason = _FIELD_RE.sub("", message).strip(" -")
    if "datetime" in reason:
        return EventError(where, "is not an ISO 8601 date and time (RFC 3339)")
    if reason.startswith("Object missing required field"):
        missing = reason.split("`")[1] if "`" in reason else ""
        return EventError(f"{where}.{missing}".strip("."), "is required")
    return EventError(where, reason[:1].lower() + reason[1:])


def _message_id_of(raw: bytes) -> str | None:
    try:
        document = _decode_any(raw)
    except msgspec.DecodeError:
        return None
    value = document.get("messageId") if isinstance(document, dict) else None
    return value if isinstance(value, str) else None
