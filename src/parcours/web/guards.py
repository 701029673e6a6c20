"""Who may call a route: the write key (tracking and the site's scripts) and the admin key
(the admin API), checked by Litestar guards before any handler runs. The composition root
(app.py) puts each group of routes behind its guard; the admin key's holder reaches the
handlers that need it as the `admin` dependency (`acting_admin`)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import SecurityScheme

from parcours.http import (
    BODY_FIRST,
    BODY_LIMIT,
    COUNTS_BATCH,
    INGEST_SOURCE,
    HttpError,
    basic_write_key,
    read_body,
)
from parcours.ingest import metrics as ingest_metrics
from parcours.runtime.keys import SCOPES, KeyChecker, KeyHolder
from parcours.tracking import write_key_in_body

# The names of the schemes in the OpenAPI document, and what each is.
WRITE_KEY = "writeKey"
ADMIN_KEY = "adminKey"
METRICS_TOKEN = "metricsToken"  # checked by /metrics itself (web/operations.py)
SECURITY_SCHEMES = {
    WRITE_KEY: SecurityScheme(
        type="http",
        scheme="basic",
        description="The write key as the user name, the password empty (as Segment's "
        "libraries send it); the tracking routes also take it as `writeKey` in the body.",
    ),
    ADMIN_KEY: SecurityScheme(
        type="http",
        scheme="bearer",
        description="An admin key, one person's: `Authorization: Bearer KEY`.",
    ),
    METRICS_TOKEN: SecurityScheme(
        type="http",
        scheme="bearer",
        description="The `metrics_token` setting, for Prometheus (no metrics without one).",
    ),
}
_HOLDER = "parcours_key_holder"  # where a guard leaves the acting holder, in the scope's state

# The scope each route of the admin API needs of a key limited to scopes (runtime/keys.py,
# SCOPES): reading needs `:read`, changing `:write`; a simulation and a preview change
# nothing, and a test send is a template's. A route missing here is refused to every
# limited key (tests/test_console_support.py checks that none is missing).
ADMIN_SCOPES: dict[str, str] = {
    "GET /api/customers/{ref:str}": "customers:read",
    "GET /api/customers/{ref:str}/events": "customers:read",
    "GET /api/customers/{ref:str}/journeys": "customers:read",
    "POST /api/customers/{ref:str}/consents": "customers:write",
    "GET /api/journeys": "journeys:read",
    "GET /api/journeys/{journey_id:str}": "journeys:read",
    "GET /api/journeys/{journey_id:str}/versions/{version:int}": "journeys:read",
    "GET /api/journeys/{journey_id:str}/versions/{version:int}/stats": "journeys:read",
    "POST /api/journeys/simulate": "journeys:read",
    "POST /api/journeys": "journeys:write",
    "POST /api/journeys/{journey_id:str}/versions/{version:int}/{move:str}": "journeys:write",
    "POST /api/journeys/{journey_id:str}/runs": "journeys:write",
    "GET /api/segments": "segments:read",
    "GET /api/segments/{segment_id:str}": "segments:read",
    "GET /api/segments/{segment_id:str}/members": "segments:read",
    "POST /api/segments": "segments:write",
    "PUT /api/segments/{segment_id:str}": "segments:write",
    "GET /api/templates": "templates:read",
    "GET /api/templates/{template_id:str}": "templates:read",
    "POST /api/templates/{template_id:str}/preview": "templates:read",
    "PUT /api/templates/{template_id:str}": "templates:write",
    "POST /api/templates/{template_id:str}/test-send": "templates:write",
    "GET /api/outbox": "messages:read",
    "GET /api/suppressions": "suppressions:read",
    "GET /api/bounces": "suppressions:read",
    "GET /api/inbound-email": "suppressions:read",
    "POST /api/suppressions/lift": "suppressions:write",
    "GET /api/wallet/orders/{order_id:str}": "wallet:read",
    "POST /api/wallet/passes": "wallet:write",
    "PATCH /api/wallet/passes/{serial:str}": "wallet:write",
    "GET /api/commerce/orders/{order_id:str}": "customers:read",
    "POST /api/commerce/orders/{order_id:str}/refunds": "customers:write",
}
assert set(ADMIN_SCOPES.values()) <= set(SCOPES)


def scope_of(handler: BaseRouteHandler, method: str) -> str | None:
    """The scope a key limited to scopes needs for this route and method (None: unknown
    here, refused to such a key)."""
    for path in sorted(handler.paths):
        found = ADMIN_SCOPES.get(f"{method.upper()} {path}")
        if found is not None:
            return found
    return None


class _KeyGuard:
    """A guard over the process's key checker, shared (never copied) by every route."""

    def __init__(self, keys: KeyChecker) -> None:
        self.keys = keys

    def __deepcopy__(self, memo: dict[int, Any]) -> _KeyGuard:
        return self


class _BatchKey(msgspec.Struct):
    writeKey: str | None = None
    batch: list[msgspec.Raw] = []


class WriteKeyGuard(_KeyGuard):
    """A live write key, in HTTP Basic auth (`writeKey:`) or, failing that, as `writeKey`
    in the body (read within the route's `body_limit`: 413, 415 or 400 as the handler
    would answer). A route that reads its body before it looks for the key there
    (`BODY_FIRST`) answers a body it cannot read with its own 400, not with a 401. A
    refused tracking call is counted as its events refused."""

    async def __call__(
        self, connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        if connection.scope.get("method") == "OPTIONS":
            return  # a browser's preflight carries no key
        source = handler.opt.get(INGEST_SOURCE)
        try:
            key, raw = await self._key(connection, handler)
        except HttpError as exc:  # the body's size, encoding or compression
            if source:
                ingest_metrics.refused_request(source, exc.status, 1)
            raise
        answer_first = handler.opt.get(BODY_FIRST)
        if not key and raw is not None and answer_first is not None:
            answer_first(raw)  # the route's own answer to a body it cannot read (counted)
        try:
            self._verify(key)
        except HttpError as exc:
            if source:
                events = await _events_in(connection, handler)
                ingest_metrics.refused_request(source, exc.status, events)
            raise

    async def _key(
        self, connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> tuple[str | None, bytes | None]:
        """The key from Basic auth, else from the body (then read, and given back)."""
        key = basic_write_key(connection.headers.get("authorization", ""))
        if key is not None or not isinstance(connection, Request):
            return key, None
        raw = await read_body(connection, int(handler.opt.get(BODY_LIMIT, 0)))
        return write_key_in_body(raw), raw

    def _verify(self, key: str | None) -> None:
        if not key:
            raise HttpError(
                401,
                "a write key is required: HTTP Basic auth 'writeKey:' or writeKey in the body",
                "writeKey",
            )
        if not self.keys.check("write", key):
            raise HttpError(401, "unknown or revoked write key", "writeKey")


async def _events_in(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> int:
    """How many events a refused batch held (1 for any other call)."""
    if not handler.opt.get(COUNTS_BATCH) or not isinstance(connection, Request):
        return 1
    try:
        raw = await read_body(connection, int(handler.opt.get(BODY_LIMIT, 0)))
        return len(msgspec.json.decode(raw, type=_BatchKey).batch) or 1
    except (HttpError, msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return 1


class AdminKeyGuard(_KeyGuard):
    """A live admin key as `Authorization: Bearer KEY`; its holder (the person acting)
    is kept for the `admin` dependency. A key limited to scopes is refused (403, naming
    the scope) a route whose scope it was not given."""

    async def __call__(
        self, connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        header = connection.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise HttpError(
                401, "an admin key is required: Authorization: Bearer KEY", "authorization"
            )
        holder = self.keys.holder("admin", key.strip())
        if holder is None:
            raise HttpError(401, "unknown or revoked admin key", "authorization")
        if holder.scopes is not None:
            method = str(connection.scope.get("method", "GET"))
            needed = scope_of(handler, "GET" if method == "HEAD" else method)
            if needed is None or not holder.allows(needed):
                raise HttpError(
                    403,
                    f"this admin key lacks the scope {needed or 'this route needs'} "
                    f"(it is limited to {', '.join(sorted(holder.scopes))})",
                    "authorization",
                )
        connection.scope.setdefault("state", {})[_HOLDER] = holder


def acting_admin(request: Request[Any, Any, Any]) -> KeyHolder:
    """The admin key's holder the guard let in (the `admin` dependency)."""
    holder = request.scope.get("state", {}).get(_HOLDER)
    if not isinstance(holder, KeyHolder):
        raise HttpError(401, "an admin key is required: Authorization: Bearer KEY", "authorization")
    return holder


__all__ = [
    "ADMIN_KEY",
    "ADMIN_SCOPES",
    "METRICS_TOKEN",
    "SECURITY_SCHEMES",
    "WRITE_KEY",
    "AdminKeyGuard",
    "WriteKeyGuard",
    "acting_admin",
    "scope_of",
]
