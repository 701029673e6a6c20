"""The outbox in the console: messages as the customers got them (the sandbox's included),
filtered by customer, channel, journey and state; new ones arrive without a reload, and
a message's later status (sent, delivered, opened, clicked, bounced, cancelled with its
reason) replaces its row on the open page: server-sent events, HTMX's SSE extension."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery, Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from parcours import messaging
from parcours.console.access import ConsoleParts, signed_in
from parcours.console.rendering import Viewer, not_found, page, render
from parcours.console.templates_pages import PREVIEW_HEADERS
from parcours.customers import CustomerNotFound, profiles
from parcours.http import Injected, whole_number
from parcours.messaging import OutboxMessage

PAGE = 50
WATCHED = 200  # the most messages of an open page whose later status is followed
POLL_SECONDS = 1.0
STREAM_SECONDS = 300  # then the browser reconnects, from the last message it got


@dataclass(frozen=True)
class Filters:
    customer: str = ""
    channel: str = ""
    journey: str = ""
    state: str = ""

    def query(self) -> str:
        return urlencode({k: v for k, v in vars(self).items() if v})


def _number(message: OutboxMessage) -> int:
    return int(message.id.removeprefix("msg_"))


def _messages(
    parts: ConsoleParts,
    filters: Filters,
    after: int | None,
    before: int | None = None,
    limit: int = PAGE,
) -> list[OutboxMessage] | None:
    """The page under these filters, newest first, between the messages numbered `after`
    and `before` when given (None: the customer asked for is unknown)."""
    with parts.db.read() as conn:
        customer_ids = None
        if filters.customer:
            try:
                customer_ids = [profiles.resolve(conn, filters.customer, parts.default_region)]
            except CustomerNotFound:
                return None
        return messaging.outbox_page(
            conn,
            limit,
            before,
            customer_ids,
            after=after,
            channel=filters.channel or None,
            journey_id=filters.journey or None,
            state=filters.state or None,
        )


# ---- how a message's state and reasons are said ---------------------------------------

_STATES = frozenset(
    {
        "pending",
        "sending",
        "sent",
        "failed",
        "cancelled",
        "queued",
        "delivered",
        "opened",
        "read",
        "clicked",
    }
)
_PURPOSES = frozenset({"marketing", "transactional"})


def state_words(viewer: Viewer, state: str | None) -> str:
    """A message's state or status in the viewer's language (as it is when unknown)."""
    if not state:
        return ""
    return viewer.t(f"support.state.{state}") if state in _STATES else state


def reason_words(viewer: Viewer, text: str | None) -> str:
    """Why a message was held, cancelled or given up, in the viewer's language: each
    reason Parcours writes by its code (messaging.reasons), a provider's own as it is."""
    said = []
    for reason in messaging.reasons.explain(text):
        words = _reason(viewer, reason)
        said.append(f"{reason.channel}: {words}" if reason.channel else words)
    return "; ".join(said)


def _reason(viewer: Viewer, reason: messaging.reasons.Reason) -> str:
    if reason.code is None:
        return reason.text
    values = dict(reason.values)
    if values.get("purpose") in _PURPOSES:
        values["purpose"] = viewer.t(f"support.purpose.{values['purpose']}")
    if "status" in values:
        values["status"] = state_words(viewer, values["status"])
    if values.get("scope") == "all channels":
        values["scope"] = viewer.t("support.reason.all_channels")
    if "reason" in values:
        values["reason"] = reason_words(viewer, values["reason"])
    if values.get("fallback") == "the brand's":  # a time zone (journeys/times.py)
        values["fallback"] = viewer.t("support.reason.zone_brand")
    return viewer.t(f"support.reason.{reason.code}", **values)


def words_for(viewer: Viewer) -> dict[str, Any]:
    """What the templates call to say a state and a reason (outbox rows, customer page)."""
    said: dict[str, Callable[[str | None], str]] = {
        "state_words": lambda state: state_words(viewer, state),
        "reason_words": lambda text: reason_words(viewer, text),
    }
    return dict(said)


# ---- the page and its stream ----------------------------------------------------------------


def _fingerprint(message: OutboxMessage) -> str:
    """What, changed, redraws a message's row."""
    return f"{message.state}|{message.status}|{message.error}|{message.attempts}"


def _digest(messages: list[OutboxMessage]) -> str:
    joined = "\n".join(f"{m.id}|{_fingerprint(m)}" for m in messages)
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


def _filters(customer: str, channel: str, journey: str, state: str) -> Filters:
    return Filters(customer[:200], channel[:40], journey[:200], state[:40])


@get("/console/outbox", sync_to_thread=True)
def outbox_page(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    customer: FromQuery[str] = "",
    channel: FromQuery[str] = "",
    journey: FromQuery[str] = "",
    wanted_state: Annotated[str, Parameter(query="state")] = "",
) -> Response[bytes]:
    viewer = signed_in(request, console)
    filters = _filters(customer, channel, journey, wanted_state)
    messages = _messages(console, filters, None)
    last = max((_number(m) for m in messages or []), default=0)
    seen = _digest(messages or [])
    return page(
        viewer,
        "outbox.html",
        filters=filters,
        messages=messages or [],
        unknown=messages is None,
        stream=f"/console/outbox/stream?{filters.query()}&after={last}&seen={seen}",
        **words_for(viewer),
    )


@get("/console/outbox/stream")
async def outbox_stream(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    customer: FromQuery[str] = "",
    channel: FromQuery[str] = "",
    journey: FromQuery[str] = "",
    wanted_state: Annotated[str, Parameter(query="state")] = "",
    after: FromQuery[int] = 0,
    seen: FromQuery[str] = "",
) -> ServerSentEvent:
    """What changes on the open page, every second something does: new messages under its
    filters, as table rows put first (event `message`, its id the last message's number,
    so that a reconnection goes on from there); and each message shown whose state,
    status or reason changed, as its row again (the event named by its id, which the row
    listens to). `seen` is the digest of the rows the page was drawn with: when the
    stream finds them otherwise, it sends them all again once."""
    viewer = await asyncio.to_thread(signed_in, request, console)
    filters = _filters(customer, channel, journey, wanted_state)
    # A message that leaves the state filtered by still has its row redrawn.
    anystate = replace(filters, state="")
    resumed = whole_number(request.headers.get("last-event-id", "")) or 0
    start = max(after, resumed)
    words = words_for(viewer)

    def row(message: OutboxMessage) -> str:
        return render(viewer, "_outbox_rows.html", messages=[message], **words)

    async def changes() -> AsyncIterator[ServerSentEventMessage]:
        last = start
        shown = await asyncio.to_thread(_messages, console, filters, None, start + 1)
        watched = {_number(m): _fingerprint(m) for m in shown or []}
        if shown and seen and _digest(shown) != seen:
            for message in shown:
                yield ServerSentEventMessage(data=row(message), event=message.id, id=str(last))
        deadline = asyncio.get_running_loop().time() + STREAM_SECONDS
        while asyncio.get_running_loop().time() < deadline:
            found = await asyncio.to_thread(_messages, console, filters, last)
            if found:
                last = max(_number(m) for m in found)
                html = render(viewer, "_outbox_rows.html", messages=found, **words)
                yield ServerSentEventMessage(data=html, event="message", id=str(last))
                watched.update((_number(m), _fingerprint(m)) for m in found)
                for number in sorted(watched)[:-WATCHED]:
                    del watched[number]
            if watched:
                low, high = min(watched), max(watched)
                now = await asyncio.to_thread(
                    _messages, console, anystate, low - 1, high + 1, WATCHED
                )
                for message in now or []:
                    number = _number(message)
                    if number in watched and watched[number] != _fingerprint(message):
                        watched[number] = _fingerprint(message)
                        yield ServerSentEventMessage(
                            data=row(message), event=message.id, id=str(last)
                        )
            await asyncio.sleep(POLL_SECONDS)

    return ServerSentEvent(changes())


# ---- one message, drawn as its customer saw it --------------------------------------------


def _message(parts: ConsoleParts, outbox_id: int) -> OutboxMessage | None:
    with parts.db.read() as conn:
        found = messaging.outbox_page(conn, 1, outbox_id + 1, after=outbox_id - 1)
    return found[0] if found else None


@get("/console/outbox/{outbox_id:int}/drawn", sync_to_thread=True)
def drawn_message(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], outbox_id: FromPath[int]
) -> Response[bytes]:
    """A message as its customer saw it (`_message.html`), what a row or a customer's
    message puts in its details when they are opened."""
    viewer = signed_in(request, console)
    message = _message(console, outbox_id)
    if message is None:
        return not_found(viewer, "support.outbox.unknown")
    return page(viewer, "outbox_message.html", m=message)


@get("/console/outbox/{outbox_id:int}/message.html", sync_to_thread=True)
def message_html(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], outbox_id: FromPath[int]
) -> Response[bytes]:
    """A sent email's HTML, for the sandboxed frames of its drawing."""
    signed_in(request, console)
    message = _message(console, outbox_id)
    html = (message.content or {}).get("html") if message is not None else None
    if not isinstance(html, str):
        return Response(b"", status_code=404, media_type="text/plain", headers=PREVIEW_HEADERS)
    return Response(
        html.encode("utf-8"), media_type="text/html; charset=utf-8", headers=PREVIEW_HEADERS
    )


def outbox_routes() -> list[HTTPRouteHandler]:
    return [outbox_page, outbox_stream, drawn_message, message_html]
