"""Every error the HTTP API answers, in one envelope (`parcours.http.error_body`, README,
"Errors"): the application's exception handlers, and a guard that refuses, before any
handler runs, the path and query values no database column can hold.

A handler raises `HttpError`, or lets through a domain's error that always means one
answer (`DOMAIN_ERRORS`: no such customer is a 404 naming `id`...; a route whose parameter
has another name says so in its `opt`, `ERROR_FIELDS`), or a definition's problems
(`DEFINITION_ERRORS`), or a Litestar exception (an unknown route, a query parameter of the
wrong type); the handlers here answer each. Anything else is a bug: it is logged as one
record with its traceback and the request's id, and answered 500 in the same envelope,
naming that id."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from litestar import Request, Response
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ASGIApp, ExceptionHandlersMap, Receive, Scope, Send

from parcours.customers import CustomerNotFound, IdentityRefused
from parcours.http import MAX_INT64, HttpError, error_body
from parcours.ingest.writer import WriterClosed
from parcours.journeys import JourneyError, LifecycleError, NotReady, ScriptError, UnknownJourney
from parcours.messaging import BadCursor, SubscriptionError, TemplateProblem
from parcours.runtime.definitions import DefinitionError
from parcours.runtime.logs import current_request_id
from parcours.segments import SegmentError, SegmentExists, SegmentIdMismatch, UnknownSegment

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


# A route's `opt` key: {domain error: field} for a route that names the thing otherwise
# (no such customer is `id` on /api/customers/{id}, `customer` where the body names one).
ERROR_FIELDS = "error_fields"


@dataclass(frozen=True)
class Refusal:
    """How a domain's error is answered: its status, and the field it names (None: the
    error's own `field`)."""

    status: int
    field: str | None


DOMAIN_ERRORS: dict[type[Exception], Refusal] = {
    CustomerNotFound: Refusal(404, "id"),
    UnknownJourney: Refusal(404, "journey_id"),
    LifecycleError: Refusal(409, "status"),
    UnknownSegment: Refusal(404, "segment_id"),
    SegmentExists: Refusal(409, "id"),
    SegmentIdMismatch: Refusal(400, "id"),
    TemplateProblem: Refusal(400, "template"),
    ScriptError: Refusal(400, "script"),
    SubscriptionError: Refusal(400, None),
    BadCursor: Refusal(400, "before"),
    WriterClosed: Refusal(503, ""),  # stopping: the client tries again
}
# A definition that is not valid: 400 with every problem and its line (`problems_error`).
DEFINITION_ERRORS: dict[type[DefinitionError], str] = {
    JourneyError: "the journey is not valid",
    SegmentError: "the segment is not valid",
    DefinitionError: "the template is not valid",  # the only other definition sent
}


def _route_opt(request: Request[Any, Any, Any], key: str) -> Any:
    handler = request.scope.get("route_handler")
    return handler.opt.get(key) if handler is not None else None


def _route_headers(request: Request[Any, Any, Any]) -> dict[str, str] | None:
    headers = _route_opt(request, ERROR_HEADERS)
    return dict(headers) if headers else None


def _nearest(kind: type[Exception], table: dict[type[Any], Any]) -> Any:
    """The entry of the closest class of `kind` in `table` (NotReady before LifecycleError)."""
    return next(table[base] for base in kind.__mro__ if base in table)


def _domain_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    refusal: Refusal = _nearest(type(exc), DOMAIN_ERRORS)
    fields = _route_opt(request, ERROR_FIELDS) or {}
    named = next((fields[base] for base in type(exc).__mro__ if base in fields), None)
    field = named if named is not None else refusal.field
    if field is None:
        field = str(getattr(exc, "field", ""))
    return _http_error(request, HttpError(refusal.status, str(exc), field))


def problems_error(exc: DefinitionError, message: str) -> HttpError:
    """A definition's problems in the error envelope: `error.problems` lists every one
    with its line; `message` says what is not valid and the first problem, `error.field`
    names its place."""
    problems = [{"line": p.line, "path": p.path, "message": p.message} for p in exc.problems]
    first = exc.problems[0] if exc.problems else None
    said = message if first is None else f"{message}: {first}"
    if len(exc.problems) > 1:
        said += f" (and {len(exc.problems) - 1} more)"
    return HttpError(400, said, first.path if first else "", problems)


def _definition_error(request: Request[Any, Any, Any], exc: DefinitionError) -> Response[bytes]:
    return _http_error(request, problems_error(exc, _nearest(type(exc), DEFINITION_ERRORS)))


def _not_ready(request: Request[Any, Any, Any], exc: NotReady) -> Response[bytes]:
    """409, with every step whose template is missing or lacks content, and its line."""
    found = [{"line": p.line, "path": p.path, "message": p.message} for p in exc.problems]
    return _http_error(request, HttpError(409, str(exc), "template", found))


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
        **dict.fromkeys(DOMAIN_ERRORS, _domain_error),
        **dict.fromkeys(DEFINITION_ERRORS, _definition_error),
        NotReady: _not_ready,
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


__all__ = [
    "DEFINITION_ERRORS",
    "DOMAIN_ERRORS",
    "ERROR_FIELDS",
    "ERROR_HEADERS",
    "exception_handlers",
    "guard_parameters",
    "problems_error",
]
