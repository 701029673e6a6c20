"""Every error the HTTP API answers, in one envelope (`ingest.http.error_body`, README,
"Errors"): the application's exception handlers, and a guard that refuses, before any
handler runs, the path and query values no database column can hold.

A handler raises `HttpError` (or lets a Litestar exception through: an unknown route, a
query parameter of the wrong type); the handlers here answer it. Anything else is a bug:
it is logged as one record with its traceback and the request's id, and answered 500 in
the same envelope, naming that id."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from litestar import Request, Response
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ASGIApp, ExceptionHandlersMap, Receive, Scope, Send

from parcours.customers.verification import IdentityRefused
from parcours.ingest.http import MAX_INT64, HttpError, error_body
from parcours.runtime.logs import current_request_id

log = logging.getLogger("parcours.http")
_encode = msgspec.json.Encoder().encode


def _answer(
    status: int, message: str, field: str = "", headers: dict[str, str] | None = None
) -> Response[bytes]:
    return Response(
        _encode(error_body(status, message, field)),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


# A route's `opt` key: headers every error it answers carries (the chat's session
# endpoint: its CORS headers, so that the brand's pages can read a refusal).
ERROR_HEADERS = "error_headers"


def _route_headers(request: Request[Any, Any, Any]) -> dict[str, str] | None:
    handler = request.scope.get("route_handler")
    headers = handler.opt.get(ERROR_HEADERS) if handler is not None else None
    return dict(headers) if headers else None


def _http_error(request: Request[Any, Any, Any], exc: HttpError) -> Response[bytes]:
    response = exc.response()
    if headers := _route_headers(request):
        response.headers.update(headers)
    return response


def _identity_refused(request: Request[Any, Any, Any], exc: IdentityRefused) -> Response[bytes]:
    """A visitor's proof of identity refused (customers/verification.py: a token, a user
    id or its hash)."""
    return _http_error(request, HttpError(exc.status, exc.message, exc.field))


def _litestar_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Litestar's own refusals (no such route, wrong method, a parameter of the wrong
    type, a body over the size limit) in the envelope, naming the parameter."""
    status = exc.status_code
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        first = exc.extra[0]
        if isinstance(first, dict):
            field = str(first.get("key") or "")
            said = str(first.get("message") or exc.detail)
            said = said[:1].lower() + said[1:]
            return _answer(status, f"{field}: {said}" if field else said, field)
    message = str(exc.detail)
    message = message[:1].lower() + message[1:]
    if status == 404 and message == "not Found":
        message = f"no such route: {request.method} {request.url.path}"
    elif status == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    elif status == 413:
        message = "the body is larger than the limit of this server (2 MB)"
    headers = dict(exc.headers) if exc.headers else None
    return _answer(status, message, "", headers)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """A bug: one log record with the traceback (the request's id comes with it), and a
    500 that names the id, so that the record can be found."""
    route = str(request.scope.get("path_template") or "unmatched")
    log.error(
        "unexpected error answering %s %s: %s",
        request.method,
        route,
        type(exc).__name__,
        exc_info=exc,
        extra={"fields": {"method": request.method, "route": route, "status": 500}},
    )
    request_id = current_request_id()
    where = f" (request id {request_id})" if request_id else ""
    return _answer(500, f"an unexpected error happened; it is logged{where}")


def exception_handlers() -> ExceptionHandlersMap:
    """For `Litestar(exception_handlers=...)`."""
    return {
        HttpError: _http_error,
        IdentityRefused: _identity_refused,
        HTTPException: _litestar_error,
        Exception: _unexpected,
    }


def guard_parameters(app: ASGIApp) -> ASGIApp:
    """Middleware: a path parameter or query value holding a NUL character (which
    PostgreSQL cannot store, and SQLite can: refused on both alike), or a whole-number path
    parameter past 64 bits (every id and version is a 64-bit integer in the database), is
    answered 400 naming the parameter, before the handler runs (a journey's version, kept
    in 32 bits, past 32 bits)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            refusal = _refusal(scope)
            if refusal is not None:
                response = _answer(400, refusal[1], refusal[0])
                await response.to_asgi_response(app=None, request=None)(  # type: ignore[arg-type]
                    scope, receive, send
                )
                return
        await app(scope, receive, send)

    return middleware


# Path parameters kept in 32-bit columns (a journey's version: journey_versions.version).
_NARROW_INTEGERS = {"version": 2**31 - 1}


def _refusal(scope: Scope) -> tuple[str, str] | None:
    parameters: dict[str, Any] = scope.get("path_params") or {}
    for name, value in parameters.items():
        if isinstance(value, str) and "\x00" in value:
            return name, f"{name}: contains a NUL character, which is not accepted"
        largest = _NARROW_INTEGERS.get(name, MAX_INT64)
        if isinstance(value, int) and not -largest - 1 <= value <= largest:
            return name, f"{name}: {value} is past the largest accepted number ({largest})"
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                shown = name.replace("\x00", "\\x00")
                return shown, f"{shown}: contains a NUL character, which is not accepted"
    return None


__all__ = ["ERROR_HEADERS", "exception_handlers", "guard_parameters"]
