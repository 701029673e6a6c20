"""The overview: the first page after signing in."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.response import Redirect

from parcours.console.access import ConsoleParts, signed_in
from parcours.console.rendering import page
from parcours.http import Injected


@get("/console/", sync_to_thread=True)
def overview(request: Request[Any, Any, Any], console: Injected[ConsoleParts]) -> Response[bytes]:
    viewer = signed_in(request, console)
    return page(viewer, "overview.html")


@get("/", include_in_schema=False, sync_to_thread=False)
def root() -> Redirect:
    return Redirect("/console/", status_code=302)


def overview_routes() -> list[HTTPRouteHandler]:
    return [overview, root]
