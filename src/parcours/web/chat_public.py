"""The site chat: a small widget script for the brand's pages, the endpoint that gives it a
visitor token, and its WebSocket. What the customer writes becomes `Message Received`
events; what Parcours sends on the chat channel waits in the outbox until the widget is
open, is delivered when the widget confirms it has it, and read when seen
(docs/channels.md). Only a visitor token opens a conversation (docs/security.md)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request, Response, WebSocket, get, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.handlers import HTTPRouteHandler, WebsocketRouteHandler
from litestar.params import FromQuery

from parcours.channels import Visitor, VisitorTokens
from parcours.customers import IdentityRefused, verified_user_id
from parcours.customers import profiles as customers
from parcours.http import (
    HttpError,
    Injected,
    json_response,
    object_body,
    read_body,
    whole_number,
)
from parcours.log import Appender
from parcours.messaging import (
    ChatMessage,
    Delivery,
    public_message_id,
    unconfirmed_chat_messages,
)
from parcours.runtime.clock import Clock, iso
from parcours.runtime.db import Database
from parcours.runtime.i18n import pick_locale, text
from parcours.runtime.secrets import instance_secret
from parcours.runtime.settings import Settings
from parcours.tracking import EventError, parse_event
from parcours.web.cross_origin import cross_origin_post, preflight, with_cors

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
POLL_SECONDS = 1.0
HELLO_SECONDS = 10.0  # a socket that has not shown its token by then is closed
MAX_TEXT = 4000
MAX_SESSION_BODY = 8 * 1024
TOKEN_KEY_NAME = "chat-visitor-tokens"
# Close codes: 4400 a bad first frame, 4401 no valid token (the widget asks for a new
# one), 4403 a token that is not this conversation's.
_CLOSE_CODES = {400: 4400, 401: 4401, 403: 4403}
# The session endpoint is called from the brand's pages, another origin (cross_origin).
SESSION_PATH = "/chat/session"


def widget_script(locale: str) -> str:
    """The widget: a button that opens a box; texts in the page's language."""
    texts = {
        "title": text(locale, "chat.title"),
        "placeholder": text(locale, "chat.placeholder"),
        "send": text(locale, "chat.send"),
        "open": text(locale, "chat.open"),
        "unavailable": text(locale, "chat.unavailable"),
    }
    return f"(function () {{\n  const TEXTS = {json.dumps(texts, ensure_ascii=False)};\n" + _WIDGET


_WIDGET = """\
  const script = document.currentScript;
  const writeKey = script.dataset.writeKey;
  const userId = script.dataset.userId || '';
  const userHash = script.dataset.userHash || '';
  const base = new URL(script.src).origin;
  const KEPT = 'parcours.chat.token';  // an anonymous visitor's token, for their next visit
  localStorage.removeItem('parcours.anonymousId');
  const box = document.createElement('div');
  box.id = 'parcours-chat';
  box.innerHTML = '<button type="button" class="pc-open"></button>' +
    '<section hidden><header></header><ol class="pc-log"></ol>' +
    '<p class="pc-notice" hidden></p>' +
    '<form><input name="text" autocomplete="off"><button type="submit"></button></form>' +
    '</section>';
  box.querySelector('.pc-open').textContent = TEXTS.open;
  box.querySelector('header').textContent = TEXTS.title;
  box.querySelector('input').placeholder = TEXTS.placeholder;
  box.querySelector('form button').textContent = TEXTS.send;
  document.body.appendChild(box);
  const log = box.querySelector('.pc-log');
  const notice = box.querySelector('.pc-notice');
  const shown = new Set();
  let socket = null;
  let token = null;
  let renewal = null;
  let failures = 0;
  function show(who, body) {
    const item = document.createElement('li');
    item.className = 'pc-' + who;
    item.textContent = body;
    log.appendChild(item);
  }
  function unavailable(problem) {
    notice.textContent = TEXTS.unavailable;
    notice.hidden = false;
    if (problem) { console.warn('Parcours chat: ' + problem); }
  }
  async function ask(body) {
    return fetch(base + '/chat/session', {method: 'POST', body: JSON.stringify(body),
      headers: {'Content-Type': 'text/plain'}});
  }
  // A token for this visitor: signed in (the brand's page gives the user id and its
  // hash), or anonymous (the one kept from an earlier visit renewed, else a new one).
  async function session() {
    const body = {writeKey};
    const kept = userId ? null : localStorage.getItem(KEPT);
    if (userId) { body.userId = userId; body.userHash = userHash; }
    if (kept) { body.token = kept; }
    let answer = null;
    try {
      answer = await ask(body);
      if (answer.status === 401 && kept) {
        localStorage.removeItem(KEPT);  // too old or not ours: start as a new visitor
        delete body.token;
        answer = await ask(body);
      }
    } catch (error) {
      unavailable(String(error));
      return false;
    }
    const granted = await answer.json().catch(() => ({}));
    if (!answer.ok) { unavailable(granted.message || String(answer.status)); return false; }
    token = granted.token;
    if (!userId) { localStorage.setItem(KEPT, token); }
    clearTimeout(renewal);  // renewed on the open socket a few minutes before it expires
    renewal = setTimeout(renew, Math.max(granted.expiresIn - 300, 30) * 1000);
    return true;
  }
  async function renew() {
    if (await session() && socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({type: 'token', token}));
    }
  }
  function connect() {
    socket = new WebSocket(base.replace(/^http/, 'ws') + '/chat/ws');
    socket.onopen = () => {
      socket.send(JSON.stringify({type: 'hello', token, locale: navigator.language || ''}));
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === 'ready') { failures = 0; notice.hidden = true; }
      if (message.type !== 'message') { return; }
      // Confirmed even when shown already: the confirmation may have been lost.
      socket.send(JSON.stringify({type: 'delivered', id: message.id}));
      if (!shown.has(message.id)) {
        shown.add(message.id);
        show('them', message.text);
      }
      socket.send(JSON.stringify({type: 'read', id: message.id}));
    };
    socket.onclose = (event) => {
      socket = null;
      failures += 1;
      const wait = Math.min(3000 * failures, 60000);
      if (event.code === 4401) {  // the token expired or was refused: a new one first
        setTimeout(async () => { if (await session()) { connect(); } }, failures > 1 ? wait : 0);
      } else if (event.code === 4400 || event.code === 4403) {
        unavailable(event.reason);
      } else {
        setTimeout(connect, wait);
      }
    };
  }
  box.querySelector('.pc-open').addEventListener('click', async () => {
    box.querySelector('section').hidden = false;
    if (!socket && (token || await session())) { connect(); }
  });
  box.querySelector('form').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = box.querySelector('input');
    if (!input.value.trim() || !socket || socket.readyState !== WebSocket.OPEN) { return; }
    socket.send(JSON.stringify({type: 'message', text: input.value}));
    show('me', input.value);
    input.value = '';
  });
})();
"""


class SessionBody(msgspec.Struct):
    """What the widget sends (read by the handler, which names what is wrong)."""

    writeKey: str | None = None
    userId: str | None = None
    userHash: str | None = None
    token: str | None = None


class VisitorSession(msgspec.Struct):
    """A visitor token and when it expires; who it stands for (`userId` for a signed-in
    customer, `anonymousId` for a visitor)."""

    token: str
    expiresAt: str
    expiresIn: int
    userId: str | msgspec.UnsetType = msgspec.UNSET
    anonymousId: str | msgspec.UnsetType = msgspec.UNSET


@get("/chat/widget.js", media_type="text/javascript; charset=utf-8")
async def widget(lang: FromQuery[str] = "") -> Response[str]:
    """`<script src="https://parcours.example/chat/widget.js?lang=fr" data-write-key="..."
    data-user-id="..." data-user-hash="..."></script>`"""
    return Response(
        widget_script(pick_locale(lang)),
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=300"},
    )


session_preflight = preflight(SESSION_PATH)


@cross_origin_post(
    SESSION_PATH,
    body=SessionBody,
    answer=VisitorSession,
    description="A visitor token",
    max_body=MAX_SESSION_BODY,
)
async def session(
    request: Request[Any, Any, Any],
    clock: Injected[Clock],
    settings: Injected[Settings],
    chat_tokens: Injected[VisitorTokens],
) -> Response[bytes]:
    """A visitor token. Body (JSON, sent as text/plain by the widget so that browsers ask
    no preflight; a page sending application/json gets its preflight answered):
    {"writeKey", then "userId" and "userHash" for a signed-in customer, or "token" to
    renew an anonymous visitor's, or nothing more for a new visitor}."""
    # The write key's guard let the call in; a refusal is answered with the CORS headers
    # (cross_origin_post), so that the widget on the brand's pages can read it.
    raw = await read_body(request, MAX_SESSION_BODY)
    body = object_body(raw)
    now = clock.now_ms()
    user_id, user_hash, kept = body.get("userId"), body.get("userHash"), body.get("token")
    if user_id is not None:
        verified = verified_user_id(settings.identity_verification_secret, user_id, user_hash)
        token, visitor = chat_tokens.issue("user", verified, now)
    elif user_hash is not None:
        raise HttpError(400, "userHash was sent without the userId it signs", "userHash")
    elif kept is not None:
        if not isinstance(kept, str):
            raise HttpError(400, "token must be a string", "token")
        token, visitor = chat_tokens.renew(kept, now)
    else:
        token, visitor = chat_tokens.new_anonymous(now)
    answer = {
        "token": token,
        "expiresAt": iso(visitor.expires_at),
        "expiresIn": (visitor.expires_at - now) // 1000,
        **visitor.identity,
    }
    return with_cors(json_response(answer))


def visitor_tokens(db: Database, clock: Clock) -> Callable[[], Awaitable[VisitorTokens]]:
    """What provides the `chat_tokens` dependency: the signer of visitor tokens, with the
    key every process shares (made once, on first use)."""

    async def provide() -> VisitorTokens:
        key = await asyncio.to_thread(instance_secret, db, TOKEN_KEY_NAME, clock.now_ms())
        return VisitorTokens(bytes.fromhex(key))

    return provide


_EXPIRED = IdentityRefused(401, "the visitor token expired: renew it", "token")


@dataclass
class _Conversation:
    """One open widget: who it speaks for (renewed tokens extend it) and their customer."""

    visitor: Visitor
    customer: int


@websocket("/chat/ws")
async def chat_socket(
    socket: WebSocket[Any, Any, Any],
    db: Injected[Database],
    clock: Injected[Clock],
    delivery: Injected[Delivery],
    appender: Injected[Appender],
    chat_tokens: Injected[VisitorTokens],
) -> None:
    """First frame: {"type": "hello", "token", "locale"}. Then from the widget: "message"
    (acknowledged), "delivered" and "read" (by message id), "token" (a renewed one)."""
    await socket.accept()
    try:
        hello = await asyncio.wait_for(_receive(socket), HELLO_SECONDS)
    except (TimeoutError, WebSocketDisconnect, RuntimeError):
        await _close(socket, IdentityRefused(401, "no hello with a visitor token", "token"))
        return
    tokens = chat_tokens
    try:
        if hello is None or hello.get("type") != "hello":
            raise IdentityRefused(400, "the first frame must be a hello with the token", "type")
        visitor = tokens.read(_text(hello.get("token")), clock.now_ms())
    except IdentityRefused as exc:
        await _close(socket, exc)
        return
    try:
        await _append(
            appender,
            clock,
            visitor,
            "Chat Opened",
            {"channel": "chat"},
            {"locale": _text(hello.get("locale"))[:35] or None},
        )
    except EventError as exc:
        await _close(socket, IdentityRefused(400, exc.reason, exc.field))
        return
    try:
        customer = await asyncio.to_thread(_customer, db, visitor)
    except customers.CustomerNotFound:  # erased as the chat opened
        await _close(socket, IdentityRefused(403, "this visitor's data was erased", "token"))
        return
    conversation = _Conversation(visitor, customer)
    await socket.send_json({"type": "ready", "expiresIn": _expires_in(clock, visitor)})
    poller = asyncio.create_task(_deliver_pending(db, clock, socket, conversation))
    try:
        while True:
            incoming = await _receive(socket)
            if incoming is None:
                continue
            kind = incoming.get("type")
            if kind != "token" and clock.now_ms() >= conversation.visitor.expires_at:
                await _close(socket, _EXPIRED)  # nothing is done on an expired token
                return
            if kind == "message":
                body = _text(incoming.get("text")).strip()[:MAX_TEXT]
                if body:
                    try:
                        await _append(
                            appender,
                            clock,
                            conversation.visitor,
                            "Message Received",
                            {"channel": "chat", "text": body},
                            {},
                        )
                    except EventError as exc:
                        error = {"type": "error", "field": exc.field, "message": exc.reason}
                        await socket.send_json(error)
                        continue
                    await socket.send_json({"type": "ack"})
            elif kind in ("delivered", "read"):
                outbox_id = _outbox_id(incoming.get("id"))
                if outbox_id is not None:
                    await asyncio.to_thread(
                        _status, db, clock, delivery, customer, outbox_id, str(kind)
                    )
            elif kind == "token":
                try:
                    renewed = tokens.read(_text(incoming.get("token")), clock.now_ms())
                    if not renewed.is_same_person(conversation.visitor):
                        raise IdentityRefused(
                            403, "the token is another visitor's: open a new chat", "token"
                        )
                except IdentityRefused as exc:
                    await _close(socket, exc)
                    return
                conversation.visitor = renewed
                expires_in = _expires_in(clock, renewed)
                await socket.send_json({"type": "renewed", "expiresIn": expires_in})
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        poller.cancel()


async def _receive(socket: WebSocket[Any, Any, Any]) -> dict[str, Any] | None:
    """The next frame as a JSON object; None for anything else (ignored)."""
    frame = await socket.receive_text()
    try:
        value = _decode(frame)
    except (msgspec.DecodeError, RecursionError):  # not JSON, or deeper than the decoder goes
        return None
    return value if isinstance(value, dict) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _outbox_id(reference: Any) -> int | None:
    if isinstance(reference, str) and reference.startswith("msg_"):
        return whole_number(reference[4:])
    return None


def _expires_in(clock: Clock, visitor: Visitor) -> int:
    return max(0, (visitor.expires_at - clock.now_ms()) // 1000)


async def _close(socket: WebSocket[Any, Any, Any], refused: IdentityRefused) -> None:
    """Say why in a frame the widget can read, then close with the matching code."""
    try:
        await socket.send_json(
            {"type": "error", "field": refused.field, "message": refused.message}
        )
        reason = refused.message.encode()[:120].decode(errors="ignore")  # 123 bytes at most
        await socket.close(code=_CLOSE_CODES.get(refused.status, 4400), reason=reason)
    except (WebSocketDisconnect, RuntimeError):
        pass  # the widget left first


async def _append(
    appender: Appender,
    clock: Clock,
    visitor: Visitor,
    name: str,
    properties: dict[str, Any],
    context: dict[str, Any],
) -> None:
    document = {
        "type": "track",
        "event": name,
        **visitor.identity,
        "properties": properties,
        "context": {k: v for k, v in context.items() if v},
    }
    event = parse_event(
        _encode(document), source="chat", received_at=clock.now_ms(), chat_visitor=True
    )
    await appender.append([event])


def _customer(db: Database, visitor: Visitor) -> int:
    """The visitor's customer: the one holding their exact id, of their kind (their
    event was just appended under it). An anonymous visitor's id is one only the chat
    writes (`CHAT_VISITOR_PREFIX`), so no tracking call can tie it to another profile."""
    kind = "user_id" if visitor.kind == "user" else "anonymous_id"
    with db.read() as conn:
        found = customers.customers_with_identity(conn, kind, visitor.id)
    if not found:
        raise customers.CustomerNotFound(visitor.id)
    return found[0]  # an identity belongs to one profile: never more than one


async def _deliver_pending(
    db: Database, clock: Clock, socket: WebSocket[Any, Any, Any], conversation: _Conversation
) -> None:
    """Every second: the chat messages sent to this customer that no widget has confirmed
    yet, each offered once on this socket (again on the next one if still unconfirmed);
    and the token's expiry, which closes the socket."""
    offered: set[int] = set()
    while True:
        if clock.now_ms() >= conversation.visitor.expires_at:
            await _close(socket, _EXPIRED)
            return
        for message in await asyncio.to_thread(_pending, db, conversation.customer):
            if message.outbox_id not in offered:
                offered.add(message.outbox_id)
                await socket.send_json(
                    {
                        "type": "message",
                        "id": public_message_id(message.outbox_id),
                        "text": message.text,
                    }
                )
        await asyncio.sleep(POLL_SECONDS)


def _pending(db: Database, customer: int) -> list[ChatMessage]:
    with db.read() as conn:
        return unconfirmed_chat_messages(conn, customer)


def _status(
    db: Database, clock: Clock, delivery: Delivery, customer: int, outbox_id: int, status: str
) -> None:
    """The widget confirms a message it has ("delivered") or showed ("read"). A read
    message was delivered: that is recorded first if the confirmation was lost (each
    status is recorded once, whatever the number of confirmations)."""
    with db.write() as conn:
        known = delivery.message_of(conn, outbox_id)
        if known is None or known.customer_id != customer or known.channel != "chat":
            return  # not this customer's chat message: ignored
        now = clock.now_ms()
        if status == "read":
            delivery.status(conn, outbox_id, "delivered", now)
        delivery.status(conn, outbox_id, status, now)


def chat_routes() -> list[HTTPRouteHandler | WebsocketRouteHandler]:
    """The widget's script and its socket (the socket checks the visitor's token)."""
    return [widget, chat_socket]


def chat_write_routes() -> list[HTTPRouteHandler]:
    """The visitor token's endpoint: behind the write key (in the body, as the widget
    sends it)."""
    return [session_preflight, session]  # the preflight first (cross_origin.preflight)
