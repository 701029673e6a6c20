"""The endpoints the brand's own pages call from their origin with the public write key
(the chat widget's session, the "notify me" form): the CORS headers they answer with, the
browser's preflight, and the declaration of their POST, whose refusals carry the headers
too, so that the page can read them."""

from __future__ import annotations

from typing import Any

from litestar import Response, post, route
from litestar.datastructures import ResponseHeader
from litestar.enums import HttpMethod
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec

from parcours.http import BODY_FIRST, BODY_LIMIT, object_body
from parcours.web.api_docs import request_body
from parcours.web.errors import ERROR_HEADERS

# No cookie is involved (the key is public and goes in the body or the Authorization
# header), so any origin may read the answers.
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization",
    "Access-Control-Max-Age": "600",
}


def preflight(path: str) -> HTTPRouteHandler:
    """The answer to a browser's preflight of `path`, for a page that sends its body as
    `application/json`. Register it before the POST: registered after, Litestar's own
    OPTIONS answer, without these headers, would take the path."""

    async def answer_preflight() -> None:
        """A browser's preflight (it asks for no key: the write key's guard lets every
        preflight through)."""

    return route(
        path,
        http_method=[HttpMethod.OPTIONS],
        status_code=204,
        response_headers=[ResponseHeader(name=name, value=value) for name, value in CORS.items()],
        include_in_schema=False,  # the browser's business, not an operation of the API
    )(answer_preflight)


def cross_origin_post(
    path: str, *, body: type[Any], answer: type[Any], description: str, max_body: int
) -> HTTPRouteHandler:
    """The declaration of such a POST: a JSON object of at most `max_body` bytes (sent as
    `application/json`, or as `text/plain` to spare the page a preflight), documented as
    `body`; `answer` with 200; every refusal with the CORS headers. The handler reads
    the body itself and answers through `with_cors`."""
    return post(
        path,
        status_code=200,
        opt={BODY_FIRST: object_body, BODY_LIMIT: max_body, ERROR_HEADERS: CORS},
        operation_class=request_body(body, ("application/json", "text/plain")),
        responses={200: ResponseSpec(answer, description=description)},
    )


def with_cors(response: Response[Any]) -> Response[Any]:
    """The handler's own answer, with the CORS headers."""
    response.headers.update(CORS)
    return response
