"""Web Push for the brand's site: the VAPID public key, the service worker script, and the
subscribe endpoint the site's script calls with the write key (docs/channels.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler

from parcours.channels.push import application_server_key
from parcours.customers import api as customers
from parcours.customers.verification import IdentityRefused, verified_user_id
from parcours.ingest.http import (
    HttpError,
    decode_json,
    json_response,
    read_body,
    require_write_key,
    services_of,
)
from parcours.ingest.model import EventError, parse_event
from parcours.messaging import subscriptions
from parcours.runtime.secrets import instance_secret
from parcours.services import Services

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


@get("/push/vapid-public-key")
async def vapid_public_key(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The applicationServerKey for `pushManager.subscribe`."""
    services = services_of(request)
    pem = await asyncio.to_thread(
        instance_secret, services.db, "vapid-private-key", services.clock.now_ms()
    )
    return json_response({"publicKey": application_server_key(pem)})


@get("/push/sw.js")
async def service_worker() -> Response[str]:
    return Response(
        SERVICE_WORKER,
        media_type="text/javascript; charset=utf-8",
        headers={"Service-Worker-Allowed": "/", "Cache-Control": "no-cache"},
    )


@post("/v1/push/subscribe", status_code=200)
async def subscribe(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Body: {"anonymousId", or "userId" with "userHash", "subscription":
    PushSubscription.toJSON()}. The subscription joins that visitor's profile and a `Push
    Subscribed` event is logged. A signed-in customer is named by the brand's user id with
    its identity hash (customers/verification.py): the browser's word alone would let
    anyone with the public write key receive another customer's pushes."""
    try:
        services = services_of(request)
        raw = await read_body(request, 16 * 1024)
        body = decode_json(raw, object)  # within the limits of every body (nesting, NUL)
        if not isinstance(body, dict):
            raise HttpError(400, "the body must be a JSON object", "body")
        require_write_key(services, request, body.get("writeKey"))
        try:
            subscription = subscriptions.check(body.get("subscription"))
        except subscriptions.SubscriptionError as exc:
            raise HttpError(400, str(exc), exc.field) from None
        ref = _identity(services, body)
        now = services.clock.now_ms()
        document = {
            "type": "track",
            "event": "Push Subscribed",
            "userId": body.get("userId"),
            "anonymousId": None if body.get("userId") is not None else body.get("anonymousId"),
            "properties": {"channel": "push", "endpoint_host": _host(subscription["endpoint"])},
            "context": {"userAgent": request.headers.get("user-agent", "")},
        }
        try:
            event = parse_event(_encode(document), source="api", received_at=now)
        except EventError as exc:
            raise HttpError(400, str(exc), exc.field) from None
        await services.writer.append([event])

        def store() -> str:
            with services.db.write() as conn:
                customer_id = customers.resolve(conn, ref, services.settings.default_region)
                subscriptions.save(
                    conn, customer_id, subscription, request.headers.get("user-agent"), now
                )
                return customers.public_id(customer_id)

        customer = await asyncio.to_thread(store)
    except HttpError as exc:
        return exc.response()
    return json_response({"success": True, "customer": customer})


def _identity(services: Services, body: dict[str, Any]) -> str:
    """Who subscribes, as an id of one kind only (`user_id:...`, `anonymous_id:...`), so
    that a stated id never resolves to a customer by their email, phone or `cus_N`."""
    user_id = body.get("userId")
    if user_id is not None:
        try:
            verified = verified_user_id(
                services.settings.identity_verification_secret, user_id, body.get("userHash")
            )
        except IdentityRefused as exc:
            raise HttpError(exc.status, exc.message, exc.field) from None
        return f"user_id:{verified}"
    anonymous_id = body.get("anonymousId")
    if not isinstance(anonymous_id, str) or not anonymous_id.strip():
        raise HttpError(400, "say who subscribes: anonymousId, or userId with userHash", "userId")
    return f"anonymous_id:{anonymous_id}"


def _host(endpoint: str) -> str:
    return endpoint.split("/")[2] if endpoint.count("/") >= 2 else ""


def push_routes() -> list[HTTPRouteHandler]:
    return [vapid_public_key, service_worker, subscribe]
