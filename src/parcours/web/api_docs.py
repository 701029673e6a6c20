"""The API's documentation pages and its OpenAPI description, all from this server.

`/api/schema` (Redoc) and `/api/schema/swagger` (Swagger UI) load pinned copies of their
scripts and styles shipped in the package (`api_docs_assets/`, with their licences and
versions), served at `/api/schema/assets/<name>`; the description is at
`/api/schema/openapi.json` (and `.yaml`). Litestar's own pages load them from public CDNs
(and fonts from Google): code from a third party would run on the port that takes the
public API, where an admin key may be typed into Swagger UI. The pages carry a
Content-Security-Policy that lets them load nothing from anywhere else (docs/security.md).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import replace
from html import escape
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, Response, Router, get
from litestar.datastructures import ResponseHeader
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from parcours.http import request_body

PATH = "/api/schema"
ASSETS_DIR = Path(__file__).parent / "api_docs_assets"
# What the pages may load: the files below, by name, with their media types.
ASSETS = {
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-init.js": "text/javascript; charset=utf-8",
}
VERSIONS = {"redoc": "2.5.0", "swagger-ui-dist": "5.18.2"}  # api_docs_assets/README.md
# Scripts and styles from this server only; Redoc and Swagger UI set inline styles, and
# Redoc runs its search in a worker made from a blob. No third party, no framing.
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src blob:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _page(title: str, head: str, body: str) -> bytes:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{escape(title)}</title><link rel="icon" href="data:,">{head}</head>'
        f'<body style="margin: 0">{body}</body></html>\n'
    ).encode()


class RedocPage(OpenAPIRenderPlugin):
    """Redoc, reading the description from this server (its script finds `<redoc>`)."""

    def __init__(self) -> None:
        super().__init__(path=["/", "/redoc"])

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        spec = escape(f"{PATH}/openapi.json")
        return _page(
            f"{openapi_schema['info']['title']} API",
            "",
            f'<redoc spec-url="{spec}"></redoc>'
            f'<script src="{PATH}/assets/redoc.standalone.js"></script>',
        )


class SwaggerPage(OpenAPIRenderPlugin):
    """Swagger UI (to try the API), started by `swagger-init.js`: no inline script."""

    def __init__(self) -> None:
        super().__init__(path="/swagger")

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        spec = escape(f"{PATH}/openapi.json")
        return _page(
            f"{openapi_schema['info']['title']} API",
            f'<link rel="stylesheet" href="{PATH}/assets/swagger-ui.css">',
            '<div id="swagger-ui"></div>'
            f'<script src="{PATH}/assets/swagger-ui-bundle.js"></script>'
            f'<script src="{PATH}/assets/swagger-init.js" data-spec-url="{spec}"></script>',
        )


@functools.cache
def _asset(name: str) -> bytes:
    return (ASSETS_DIR / name).read_bytes()


@get("/assets/{name:str}", sync_to_thread=False, include_in_schema=False)
def asset(name: str) -> Response[bytes]:
    """One of the pinned files the pages load; anything else is not found."""
    if name not in ASSETS:
        return Response(b"not found\n", status_code=404, media_type="text/plain")
    return Response(
        _asset(name),
        media_type=ASSETS[name],
        headers={"Cache-Control": "public, max-age=86400"},
    )


def openapi_config(
    title: str, version: str, security_schemes: dict[str, SecurityScheme] | None = None
) -> OpenAPIConfig:
    """The OpenAPI description and its pages, under `/api/schema`, with the security
    schemes the routes name (web/guards.py)."""
    router = Router(
        PATH,
        route_handlers=[asset],
        include_in_schema=False,
        response_headers=[
            ResponseHeader(name="Content-Security-Policy", value=POLICY),
            ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
        ],
    )
    return OpenAPIConfig(
        title=title,
        version=version,
        path=PATH,
        components=Components(security_schemes=dict(security_schemes or {})),
        openapi_router=router,
        render_plugins=[
            RedocPage(),
            SwaggerPage(),
            JsonRenderPlugin(path="/openapi.json"),
            YamlRenderPlugin(path=["/openapi.yaml", "/openapi.yml"]),
        ],
    )


# ---- what the document says of bodies and errors ------------------------------------------


class Problem(msgspec.Struct):
    """One problem of a definition, with its line."""

    line: int | None
    path: str
    message: str


class ErrorDetail(msgspec.Struct):
    field: str  # the field, parameter or header at fault ("" when none is)
    message: str
    problems: list[Problem] | msgspec.UnsetType = msgspec.UNSET


class ErrorBody(msgspec.Struct):
    """The one error envelope (README, "Errors")."""

    success: bool
    code: str
    message: str
    error: ErrorDetail


YAML_OR_JSON = ("application/yaml", "application/json")
_ERROR = ResponseSpec(ErrorBody, description="Refused, in the one error envelope")


def document_errors(handlers: Iterable[Any], *, guarded: bool = False) -> None:
    """Every route answers its refusals in the one envelope: a 400 (a bad parameter or
    body) and any other error status (`default`); a guarded route, a 401. Said once here
    for every route, each route adding its own statuses."""
    for handler in handlers:
        if not isinstance(handler, HTTPRouteHandler) or not handler.include_in_schema:
            continue
        errors: dict[Any, ResponseSpec] = {400: _ERROR, "default": _ERROR}
        if guarded:
            errors[401] = ResponseSpec(ErrorBody, description="No key, or not a live one")
        responses = {**errors, **(handler.responses or {})}
        # No made-up examples: they would change the document at every start.
        handler.responses = {
            status: replace(spec, generate_examples=False) for status, spec in responses.items()
        }


__all__ = [
    "ASSETS",
    "PATH",
    "POLICY",
    "VERSIONS",
    "YAML_OR_JSON",
    "ErrorBody",
    "document_errors",
    "openapi_config",
    "request_body",
]
