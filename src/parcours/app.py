"""Assembles the HTTP application: the only place, with cli.py, that knows every module."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar

from parcours import __version__
from parcours.ingest.channel_callbacks import channel_callback_routes
from parcours.ingest.http import segment_routes
from parcours.ingest.shopify_http import shopify_webhook
from parcours.services import Services
from parcours.web.api import admin_routes
from parcours.web.api_docs import openapi_config
from parcours.web.chat_public import chat_routes
from parcours.web.errors import exception_handlers, guard_parameters
from parcours.web.journeys_api import journey_routes
from parcours.web.messaging_api import messaging_routes
from parcours.web.operations import observe_requests, operations_routes
from parcours.web.push_public import push_routes
from parcours.web.segments_api import segments_admin_routes
from parcours.web.suppressions_api import suppression_routes
from parcours.web.wallet_orders_public import wallet_order_routes
from parcours.web.wallet_public import wallet_routes


def create_app(services: Services, *, close_on_shutdown: bool = True) -> Litestar:
    """The Litestar application over already opened services."""

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if close_on_shutdown:
                services.close()

    app = Litestar(
        route_handlers=[
            *operations_routes(),
            *segment_routes(),
            shopify_webhook,
            *admin_routes(),
            *journey_routes(),
            *segments_admin_routes(),
            *messaging_routes(),
            *suppression_routes(),
            *channel_callback_routes(),
            *push_routes(),
            *chat_routes(),
            *wallet_routes(),
            *wallet_order_routes(),
        ],
        lifespan=[lifespan],
        middleware=[observe_requests, guard_parameters],
        exception_handlers=exception_handlers(),
        openapi_config=openapi_config("Parcours", __version__),  # web/api_docs.py
        request_max_body_size=2 * 1024 * 1024,
        logging_config=None,
        debug=False,
    )
    app.state.services = services
    app.state.metrics = services.metrics()
    return app


def app_from_environment() -> Litestar:
    """The application of one of several server processes (`http_workers` > 1): settings
    from the environment, migrations already applied by the parent."""
    from parcours.cli import tune_garbage_collector
    from parcours.runtime.logs import configure_logging
    from parcours.runtime.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format, settings.secrets())
    services = Services.open(settings, run_migrations=False)
    if settings.serve_worker:
        services.start_worker()
    tune_garbage_collector()
    return create_app(services)
