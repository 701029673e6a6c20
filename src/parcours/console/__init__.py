"""The console: server-rendered pages (Jinja2 and HTMX) where a brand's team sees, builds,
reviews and trusts what Parcours does (docs/console.md). Its pages ask the domains
through their faces; the people and their rights are `parcours.accounts`'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Request, Response, Router
from litestar.static_files import create_static_files_router

from parcours.console.access import (
    ConsoleParts,
    Refused,
    SignInNeeded,
    refused_page,
    sign_in_redirect,
)
from parcours.console.commerce_pages import commerce_routes
from parcours.console.customers_pages import customers_routes
from parcours.console.journeys_pages import journeys_routes
from parcours.console.keys_pages import keys_routes
from parcours.console.outbox_pages import outbox_routes
from parcours.console.overview import overview_routes
from parcours.console.people_pages import people_routes
from parcours.console.preferences_pages import preferences_routes
from parcours.console.rendering import warm_templates
from parcours.console.review_pages import review_routes
from parcours.console.segments_pages import segments_routes
from parcours.console.settings_pages import settings_routes
from parcours.console.sign_in_pages import sign_in_routes
from parcours.console.templates_pages import templates_routes
from parcours.console.tracking_pages import tracking_routes

STATIC = Path(__file__).parent / "static"


def _sign_in(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, SignInNeeded)
    return sign_in_redirect(exc)


def _refused(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, Refused)
    return refused_page(exc)


def console_router() -> Router:
    """Every page of the console, out of the API's OpenAPI document."""
    return Router(
        path="/",
        route_handlers=[
            *overview_routes(),
            *sign_in_routes(),
            *people_routes(),
            *keys_routes(),
            *journeys_routes(),
            *customers_routes(),
            *outbox_routes(),
            *preferences_routes(),
            *tracking_routes(),
            *review_routes(),
            *commerce_routes(),
            *templates_routes(),
            *segments_routes(),
            *settings_routes(),
            create_static_files_router(
                path="/console/static",
                directories=[STATIC],
                cache_control=None,
                include_in_schema=False,
            ),
        ],
        include_in_schema=False,
        exception_handlers={SignInNeeded: _sign_in, Refused: _refused},
    )


__all__ = ["ConsoleParts", "console_router", "warm_templates"]
