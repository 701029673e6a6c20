"""Web Push for the brand's site: the VAPID public key, the service worker script, and the
subscribe endpoint the site's script calls with the write key (docs/channels.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler

from parcours.channels import application_server_key
from parcours.customers import profiles as customers
from parcours.customers import verified_user_id
from parcours.http import (
    BODY_FIRST,
    BODY_LIMIT,
    HttpError,
    Injected,
    object_body,
    read_body,
)
from parcours.log import Appender
from parcours.messaging import subscriptions
from parcours.runtime.clock import Clock
from parcours.runtime.db import Database
from parcours.runtime.secrets import instance_secret
from parcours.runtime.settings import Settings
from parcours.tracking import EventError, parse_event
from parcours.web.api_docs import request_body

_encode = msgspec.json.Encoder().encode

# The service worker the site registers (navigator.serviceWorker.register('/push/sw.js')).
SERVICE_WORKER = """\
// Parcours Web Push service worker: shows what Parcours sends, opens its link on click.
self.addEventListener('push', (event) => {
  let message = {};
  try { message = event.data ? event.data.json() : {}; } catch (e) { message = {}; }
  const title = message.title || '';
  event.waitUntil(self.registration.showNotification(title, {
    body: message.body || '',
    image: message.image,
    tag: message.tag,
    data: { url: message.url },
  }));
});
self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const url = event.notification.data && event.notification.data.url;
  if (url) { event.waitUntil(self.clients.openWindow(url)); }
});
"""


class VapidKey(msgspec.Struct):
    publicKey: str  # the applicationServerKey, URL-safe base64


class Subscribed(msgspec.Struct):
    success: bool


class SubscribeBody(msgspec.Struct):
    """What the site's script sends (read by the handler, which names what is wrong)."""

    subscription: dict[str, Any]  # PushSubscription.toJSON()
    writeKey: str | None = None
    anonymousId: str | None = None
    userId: str | None = None
    userHash: str | None = None


@get("/push/vapid-public-key")
async def vapid_public_key(db: Injected[Database], clock: Injected[Clock]) -> VapidKey:
    """The applicationServerKey for `pushManager.subscribe`."""
    pem = await asyncio.to_thread(instance_secret, db, "vapid-private-key", clock.now_ms())
    return VapidKey(application_server_key(pem))


@get("/push/sw.js", media_type="text/javascript; charset=utf-8")
async def service_worker() -> Response[str]:
    return Response(
        SERVICE_WORKER,
        media_type="text/javascript; charset=utf-8",
        headers={"Service-Worker-Allowed": "/", "Cache-Control": "no-cache"},
    )


MAX_SUBSCRIBE_BYTES = 16 * 1024


@post(
    "/v1/push/subscribe",
    status_code=200,
    opt={BODY_FIRST: object_body, BODY_LIMIT: MAX_SUBSCRIBE_BYTES},
    operation_class=request_body(SubscribeBody),
)
async def subscribe(
    request: Request[Any, Any, Any],
    db: Injected[Database],
    clock: Injected[Clock],
    settings: Injected[Settings],
    appender: Injected[Appender],
) -> Subscribed:
    """Body: {"anonymousId", or "userId" with "userHash", "subscription":
    PushSubscription.toJSON()}. The subscription joins the profile holding exactly that
    id, and a `Push Subscribed` event is logged. A signed-in customer is named by the
    brand's user id with its identity hash (customers/verification.py): the browser's word
    alone would let anyone with the public write key receive another customer's pushes.
    The answer says only that it succeeded: it never tells who holds an id."""
    raw = await read_body(request, MAX_SUBSCRIBE_BYTES)
    body = object_body(raw)
    subscription = subscriptions.check(body.get("subscription"))
    kind, ident = _identity(settings, body)
    now = clock.now_ms()
    document = {
        "type": "track",
        "event": "Push Subscribed",
        "userId": ident if kind == "user_id" else None,
        "anonymousId": ident if kind == "anonymous_id" else None,
        "properties": {"channel": "push", "endpoint_host": _host(subscription["endpoint"])},
        "context": {"userAgent": request.headers.get("user-agent", "")},
    }
    try:
        event = parse_event(_encode(document), source="api", received_at=now)
    except EventError as exc:
        raise HttpError(400, str(exc), exc.field) from None
    await appender.append([event])
    verified = ident if kind == "user_id" else None

    def store() -> None:
        with db.write() as conn:
            found = customers.customers_with_identity(conn, kind, ident)
            if not found:  # erased between the event and now
                field = "userId" if kind == "user_id" else "anonymousId"
                raise HttpError(409, "this visitor's data was erased as they subscribed", field)
            subscriptions.save(
                conn,
                found[0],  # an identity belongs to one profile
                subscription,
                request.headers.get("user-agent"),
                now,
                verified_user_id=verified,
            )

    await asyncio.to_thread(store)
    return Subscribed(True)


def _identity(settings: Settings, body: dict[str, Any]) -> tuple[str, str]:
    """Who subscribes: ("user_id", the verified user id) or ("anonymous_id", the id),
    looked up as exactly that kind, never as an email, a phone or a `cus_N`. A refused
    proof raises IdentityRefused, answered by the application (web/errors.py)."""
    user_id = body.get("userId")
    if user_id is not None:
        secret = settings.identity_verification_secret
        return "user_id", verified_user_id(secret, user_id, body.get("userHash"))
    anonymous_id = body.get("anonymousId")
    if not isinstance(anonymous_id, str) or not anonymous_id.strip():
        raise HttpError(400, "say who subscribes: anonymousId, or userId with userHash", "userId")
    return "anonymous_id", anonymous_id.strip()


def _host(endpoint: str) -> str:
    return endpoint.split("/")[2] if endpoint.count("/") >= 2 else ""


def push_public_routes() -> list[HTTPRouteHandler]:
    """The key and the script the brand's site loads: public."""
    return [vapid_public_key, service_worker]


def push_write_routes() -> list[HTTPRouteHandler]:
    """Subscribing: behind the write key (in Basic auth or the body)."""
    return [subscribe]
