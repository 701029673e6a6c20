"""The site chat: a small widget script for the brand's pages and its WebSocket. What the
customer writes becomes `Message Received` events; what Parcours sends on the chat
channel waits in the outbox until the widget is open, then is delivered and marked read
when seen (docs/channels.md)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
from litestar import Response, WebSocket, get, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.handlers import HTTPRouteHandler, WebsocketRouteHandler
from litestar.params import FromQuery

from parcours.customers import api as customers
from parcours.ingest.model import EventError, parse_event
from parcours.messaging.delivery import public_message_id
from parcours.runtime.db import run
from parcours.runtime.i18n import pick_locale, text
from parcours.services import Services

_encode = msgspec.json.Encoder().encode
POLL_SECONDS = 1.0
MAX_TEXT = 4000


def widget_script(locale: str) -> str:
    """The widget: a button that opens a box; texts in the page's language."""
    texts = {
        "title": text(locale, "chat.title"),
        "placeholder": text(locale, "chat.placeholder"),
        "send": text(locale, "chat.send"),
        "open": text(locale, "chat.open"),
    }
    return f"(function () {{\n  const TEXTS = {json.dumps(texts, ensure_ascii=False)};\n" + _WIDGET


_WIDGET = """\
  const script = document.currentScript;
  const writeKey = script.dataset.writeKey;
  const origin = new URL(script.src).origin.replace(/^http/, 'ws');
  let anonymousId = localStorage.getItem('parcours.anonymousId');
  if (!anonymousId) {
    anonymousId = crypto.randomUUID();
    localStorage.setItem('parcours.anonymousId', anonymousId);
  }
  const userId = script.dataset.userId || '';
  const box = document.createElement('div');
  box.id = 'parcours-chat';
  box.innerHTML = '<button type="button" class="pc-open"></button>' +
    '<section hidden><header></header><ol class="pc-log"></ol>' +
    '<form><input name="text" autocomplete="off"><button type="submit"></button></form>' +
    '</section>';
  box.querySelector('.pc-open').textContent = TEXTS.open;
  box.querySelector('header').textContent = TEXTS.title;
  box.querySelector('input').placeholder = TEXTS.placeholder;
  box.querySelector('form button').textContent = TEXTS.send;
  document.body.appendChild(box);
  const log = box.querySelector('.pc-log');
  let socket = null;
  function show(who, body, id) {
    const item = document.createElement('li');
    item.className = 'pc-' + who;
    item.textContent = body;
    log.appendChild(item);
    if (id && socket) { socket.send(JSON.stringify({type: 'read', id: id})); }
  }
  function connect() {
    const query = new URLSearchParams({writeKey, anonymousId, userId,
      locale: navigator.language || ''});
    socket = new WebSocket(origin + '/chat/ws?' + query.toString());
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === 'message') { show('them', message.text, message.id); }
    };
    socket.onclose = () => { setTimeout(connect, 3000); };
  }
  box.querySelector('.pc-open').addEventListener('click', () => {
    box.querySelector('section').hidden = false;
    if (!socket) { connect(); }
  });
  box.querySelector('form').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = box.querySelector('input');
    if (!input.value.trim() || !socket) { return; }
    socket.send(JSON.stringify({type: 'message', text: input.value}));
    show('me', input.value);
    input.value = '';
  });
})();
"""


@get("/chat/widget.js")
async def widget(lang: FromQuery[str] = "") -> Response[str]:
    """`<script src="https://parcours.example/chat/widget.js?lang=fr"
    data-write-key="..." data-user-id="..."></script>`"""
    return Response(
        widget_script(pick_locale(lang)),
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=300"},
    )


@websocket("/chat/ws")
async def chat_socket(socket: WebSocket[Any, Any, Any]) -> None:
    services: Services = socket.app.state.services
    query = socket.query_params
    key = query.get("writeKey", "")
    if not key or not services.keys.check("write", key):
        await socket.close(code=4401, reason="unknown write key")
        return
    await socket.accept()
    identity = {
        "userId": query.get("userId") or None,
        "anonymousId": query.get("anonymousId") or None,
    }
    try:
        await _append(
            services,
            identity,
            "Chat Opened",
            {"channel": "chat"},
            {"locale": query.get("locale") or None},
        )
    except EventError as exc:
        await socket.send_json({"type": "error", "field": exc.field, "message": exc.reason})
        await socket.close(code=4400, reason="an anonymousId or a userId is required")
        return
    ref = str(identity["userId"] or identity["anonymousId"])
    customer_id = await asyncio.to_thread(_customer, services, ref)
    poller = asyncio.create_task(_deliver_pending(services, socket, customer_id))
    try:
        while True:
            incoming = await socket.receive_json()
            if not isinstance(incoming, dict):
                continue
            if incoming.get("type") == "message":
                body = str(incoming.get("text", "")).strip()[:MAX_TEXT]
                if body:
                    await _append(
                        services,
                        identity,
                        "Message Received",
                        {"channel": "chat", "text": body},
                        {},
                    )
                    await socket.send_json({"type": "ack"})
            elif incoming.get("type") == "read":
                reference = str(incoming.get("id", ""))
                if reference.startswith("msg_") and reference[4:].isdigit():
                    await asyncio.to_thread(
                        _status, services, customer_id, int(reference[4:]), "read"
                    )
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        poller.cancel()


async def _append(
    services: Services,
    identity: dict[str, Any],
    name: str,
    properties: dict[str, Any],
    context: dict[str, Any],
) -> None:
    document = {
        "type": "track",
        "event": name,
        **identity,
        "properties": properties,
        "context": {k: v for k, v in context.items() if v},
    }
    event = parse_event(_encode(document), source="chat", received_at=services.clock.now_ms())
    await services.writer.append([event])


def _customer(services: Services, ref: str) -> int:
    with services.db.read() as conn:
        return customers.resolve(conn, ref, services.settings.default_region)


async def _deliver_pending(
    services: Services, socket: WebSocket[Any, Any, Any], customer: int
) -> None:
    """Every second, the chat messages sent to this customer and not yet delivered."""
    while True:
        for outbox_id, content in await asyncio.to_thread(_pending, services, customer):
            await socket.send_json(
                {"type": "message", "id": public_message_id(outbox_id), "text": content["text"]}
            )
            await asyncio.to_thread(_status, services, customer, outbox_id, "delivered")
        await asyncio.sleep(POLL_SECONDS)


def _pending(services: Services, customer: int) -> list[tuple[int, dict[str, Any]]]:
    with services.db.read() as conn:
        rows = run(
            conn,
            "SELECT id, rendered FROM outbox WHERE customer_id = :c AND channel = 'chat' "
            "AND state = 'sent' AND status = 'sent' ORDER BY id",
            {"c": customer},
        ).all()
    return [(int(row.id), json.loads(row.rendered)) for row in rows]


def _status(services: Services, customer: int, outbox_id: int, status: str) -> None:
    with services.db.write() as conn:
        known = services.delivery.message_of(conn, outbox_id)
        if known is None or known["customer_id"] != customer or known["channel"] != "chat":
            return  # not this customer's chat message: ignored
        services.delivery.status(conn, outbox_id, status, services.clock.now_ms())


def chat_routes() -> list[HTTPRouteHandler | WebsocketRouteHandler]:
    return [widget, chat_socket]
