"""What an operator's tools call: /healthz, /readyz, /metrics; and around every request, its
request id (logged, echoed back), its latency and an access log line (docs/operations.md)."""

from __future__ import annotations

import itertools
import logging
import re
import time
import uuid
from typing import Any

import msgspec
from litestar import Request, Response, get
from litestar.enums import ScopeType
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import Counter, Histogram

from parcours.http import Injected, json_response
from parcours.runtime.logs import bind_request, unbind_request
from parcours.runtime.metrics import LATENCY_BUCKETS, REFUSED, Exposition, metrics_allowed
from parcours.runtime.settings import Settings

log = logging.getLogger("parcours.http")

REQUEST_SECONDS = Histogram(
    "parcours_http_request_duration_seconds",
    "Time to answer an HTTP request, by route (its template: /api/customers/{ref}) and method",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
REQUESTS = Counter(
    "parcours_http_requests_total",
    "HTTP requests answered, by route, method and status",
    ["route", "method", "status"],
)
# A request id we echo and log as given: short, and nothing that could forge a log line.
_GOOD_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
_REQUEST_ID_HEADER = b"x-request-id"
# Ids we make: this process's random prefix and a count. Not uuid4 per request: reading
# the system's randomness releases the GIL, and the event loop then waits for the writer
# thread to give it back (measured: smaller commit groups, more CPU per event).
_PREFIX = uuid.uuid4().hex[:16]
_numbers = itertools.count(1)


def observe_requests(app: ASGIApp) -> ASGIApp:
    """Middleware: the request's id (X-Request-Id as sent, or a new one) bound to its log
    lines and sent back in X-Request-Id; its time and status counted by route; one access
    log line (the route's template, never the path, which may hold an email address)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        request_id = _request_id(scope)
        echoed = (_REQUEST_ID_HEADER, request_id.encode())
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        started = time.perf_counter()
        bound = bind_request(request_id)
        try:
            await app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = str(scope.get("path_template") or "unmatched")
            method = scope["method"]
            REQUEST_SECONDS.labels(route, method).observe(elapsed)
            REQUESTS.labels(route, method, str(status)).inc()
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "%s %s %s %.1f ms",
                    method,
                    route,
                    status,
                    elapsed * 1000,
                    extra={
                        "fields": {
                            "method": method,
                            "route": route,
                            "status": status,
                            "duration_ms": round(elapsed * 1000, 2),
                        }
                    },
                )
            unbind_request(bound)

    return middleware


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == _REQUEST_ID_HEADER:
            text = value.decode("latin-1").strip()
            if _GOOD_REQUEST_ID.fullmatch(text):
                return text
            break
    return f"{_PREFIX}{next(_numbers):016x}"


class Alive(msgspec.Struct):
    status: str  # alive


@get("/healthz", sync_to_thread=False)
def healthz() -> Alive:
    """Alive: the process answers (nothing else is checked)."""
    return Alive("alive")


class WorkerFigures(msgspec.Struct, frozen=True):
    """Worker loops anywhere whose heartbeat is fresh (within `worker_stale_seconds`) or
    stale, and how many fresh ones readiness requires (`ready_min_workers`)."""

    fresh: int
    stale: int
    required: int


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    """What /readyz answers: ready or not, the checks that failed, and what each found
    (computed for each request by the composition root). A check not made is left out."""

    status: str  # ready | not ready
    failed: list[str] | msgspec.UnsetType = msgspec.UNSET  # the checks that failed
    database: str  # the dialect, or why it could not be reached
    migration: str | msgspec.UnsetType | None = msgspec.UNSET  # the revision it is at
    migrations: str | msgspec.UnsetType = msgspec.UNSET  # behind: where, and where not
    worker: str | msgspec.UnsetType = msgspec.UNSET  # this process's worker loop
    workers: WorkerFigures | str | msgspec.UnsetType = msgspec.UNSET  # or why not counted

    @property
    def ready(self) -> bool:
        return self.status == "ready"


@get(
    "/readyz",
    sync_to_thread=False,
    responses={
        200: ResponseSpec(Readiness, description="Ready: status, and what each check found"),
        503: ResponseSpec(Readiness, description="Not ready: `failed` names the checks"),
    },
)
def readyz(readiness: Injected[Readiness]) -> Response[bytes]:
    """Ready to take traffic, or 503 naming the checks that failed."""
    return json_response(readiness, 200 if readiness.ready else 503)


@get(
    "/metrics",
    sync_to_thread=True,
    media_type="text/plain; version=0.0.4; charset=utf-8",
    security=[{"metricsToken": []}],  # web/guards.py, METRICS_TOKEN
    responses={401: ResponseSpec(str, media_type="text/plain", description="No metrics token")},
)
def metrics(
    request: Request[Any, Any, Any], settings: Injected[Settings], exposition: Injected[Exposition]
) -> Response[bytes]:
    """Prometheus' text format, for `Authorization: Bearer <metrics_token>`."""
    if not metrics_allowed(settings.metrics_token, request.headers.get("authorization", "")):
        return Response(REFUSED.encode(), status_code=401, media_type="text/plain")
    return Response(exposition.render(), media_type=exposition.content_type)


def operations_routes() -> list[HTTPRouteHandler]:
    return [healthz, readyz, metrics]


__all__ = ["Readiness", "WorkerFigures", "observe_requests", "operations_routes"]
