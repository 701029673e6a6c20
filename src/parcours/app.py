"""Assembles the HTTP application: the only place, with cli.py, that knows every module."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.openapi import OpenAPIConfig

from parcours import __version__
from parcours.ingest.channel_callbacks import channel_callback_routes
from parcours.ingest.http import segment_routes
from parcours.ingest.shopify_http import shopify_webhook
from parcours.services import Services
from parcours.web.api import admin_routes
from parcours.web.chat_public import chat_routes
from parcours.web.journeys_api import journey_routes
from parcours.web.messaging_api import messaging_routes
from parcours.web.push_public import push_routes
from parcours.web.segments_api import segments_admin_routes
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
            *segment_routes(),
            shopify_webhook,
            *admin_routes(),
            *journey_routes(),
            *segments_admin_routes(),
            *messaging_routes(),
            *channel_callback_routes(),
            *push_routes(),
            *chat_routes(),
            *wallet_routes(),
            *wallet_order_routes(),
        ],
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(title="Parcours", version=__version__, path="/api/schema"),
        request_max_body_size=2 * 1024 * 1024,
        logging_config=None,
        debug=False,
    )
    app.state.services = services
    logging.getLogger("parcours").setLevel(services.settings.log_level.upper())
    return app


def app_from_environment() -> Litestar:
    """The application of one of several server processes (`http_workers` > 1): settings
    from the environment, migrations already applied by the parent."""
    from parcours.cli import tune_garbage_collector
    from parcours.runtime.settings import load_settings

    services = Services.open(load_settings(), run_migrations=False)
    services.start_worker()
    tune_garbage_collector()
    return create_app(services)
