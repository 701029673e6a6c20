"""The outbox in the console: messages as the customers got them (the sandbox's included),
filtered by customer, channel, journey and state, new ones arriving without a reload
(server-sent events, HTMX's SSE extension)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromQuery, Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from parcours import messaging
from parcours.console.access import ConsoleParts, signed_in
from parcours.console.rendering import page, render
from parcours.customers import CustomerNotFound, profiles
from parcours.http import Injected, whole_number
from parcours.messaging import OutboxMessage

PAGE = 50
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
    parts: ConsoleParts, filters: Filters, after: int | None
) -> list[OutboxMessage] | None:
    """The page under these filters (None: the customer asked for is unknown)."""
    with parts.db.read() as conn:
        customer_ids = None
        if filters.customer:
            try:
                customer_ids = [profiles.resolve(conn, filters.customer, parts.default_region)]
            except CustomerNotFound:
                return None
        return messaging.outbox_page(
            conn,
            PAGE,
            None,
            customer_ids,
            after=after,
            channel=filters.channel or None,
            journey_id=filters.journey or None,
            state=filters.state or None,
        )


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
    filters = Filters(customer[:200], channel[:40], journey[:200], wanted_state[:40])
    messages = _messages(console, filters, None)
    last = max((_number(m) for m in messages or []), default=0)
    return page(
        viewer,
        "outbox.html",
        filters=filters,
        messages=messages or [],
        unknown=messages is None,
        stream=f"/console/outbox/stream?{filters.query()}&after={last}",
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
) -> ServerSentEvent:
    """New messages under the page's filters, as table rows, every second they come; each
    event's id is the last message's number, so that a reconnection goes on from there."""
    viewer = await asyncio.to_thread(signed_in, request, console)
    filters = Filters(customer[:200], channel[:40], journey[:200], wanted_state[:40])
    resumed = whole_number(request.headers.get("last-event-id", "")) or 0
    start = max(after, resumed)

    async def rows() -> AsyncIterator[ServerSentEventMessage]:
        last = start
        deadline = asyncio.get_running_loop().time() + STREAM_SECONDS
        while asyncio.get_running_loop().time() < deadline:
            found = await asyncio.to_thread(_messages, console, filters, last)
            if found:
                last = max(_number(m) for m in found)
                html = render(viewer, "_outbox_rows.html", messages=found)
                yield ServerSentEventMessage(data=html, event="message", id=str(last))
            await asyncio.sleep(POLL_SECONDS)

    return ServerSentEvent(rows())


def outbox_routes() -> list[HTTPRouteHandler]:
    return [outbox_page, outbox_stream]
