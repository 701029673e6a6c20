"""Assembles the HTTP application: the only place, with cli.py, that knows every module.

It hands each handler what it needs through Litestar's dependency injection (the parts of
the running process, by name: `db`, `clock`, `appender`...), and puts each group of
routes behind the guard of its key: the admin API behind the admin key, the tracking
calls and the site's scripts behind the write key (docs/http-layer.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Router
from litestar.di import Provide
from litestar.types import ControllerRouterHandler, Guard

from parcours import __version__
from parcours.console import ConsoleParts, console_router
from parcours.ingest.carrier_http import carrier_webhook
from parcours.ingest.channel_callbacks import channel_callback_routes
from parcours.ingest.shopify_http import shopify_webhook
from parcours.ingest.tracking_api import tracking_routes
from parcours.runtime.clock import wall_clock
from parcours.runtime.secrets import instance_secret
from parcours.services import Services
from parcours.web.api_docs import document_errors, openapi_config
from parcours.web.back_in_stock_api import back_in_stock_routes
from parcours.web.chat_public import chat_routes, chat_write_routes, visitor_tokens
from parcours.web.commerce_api import commerce_admin_routes
from parcours.web.customers_api import admin_routes
from parcours.web.errors import exception_handlers, guard_parameters
from parcours.web.guards import (
    ADMIN_KEY,
    SECURITY_SCHEMES,
    WRITE_KEY,
    AdminKeyGuard,
    WriteKeyGuard,
    acting_admin,
)
from parcours.web.journeys_api import journey_routes
from parcours.web.messaging_api import messaging_admin_routes, messaging_public_routes
from parcours.web.operations import observe_requests, operations_routes
from parcours.web.push_public import push_public_routes, push_write_routes
from parcours.web.segments_api import segments_admin_routes
from parcours.web.suppressions_api import suppression_routes
from parcours.web.wallet_orders_public import wallet_order_admin_routes, wallet_order_routes
from parcours.web.wallet_public import wallet_admin_routes, wallet_routes


def create_app(services: Services, *, close_on_shutdown: bool = True) -> Litestar:
    """The Litestar application over already opened services."""

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if close_on_shutdown:
                services.close()

    admin = _behind(
        AdminKeyGuard(services.keys),
        ADMIN_KEY,
        [
            *admin_routes(),
            *journey_routes(),
            *segments_admin_routes(),
            *messaging_admin_routes(),
            *suppression_routes(),
            *wallet_admin_routes(),
            *wallet_order_admin_routes(),
            *commerce_admin_routes(),
        ],
    )
    tracking = _behind(
        WriteKeyGuard(services.keys),
        WRITE_KEY,
        [*tracking_routes(), *push_write_routes(), *chat_write_routes(), *back_in_stock_routes()],
    )
    public = [
        *operations_routes(),
        shopify_webhook,
        carrier_webhook,
        *messaging_public_routes(),
        *channel_callback_routes(),
        *push_public_routes(),
        *chat_routes(),
        *wallet_routes(),
        *wallet_order_routes(),
    ]
    document_errors(public)
    return Litestar(
        route_handlers=[tracking, admin, *public, console_router()],
        dependencies=_dependencies(services),
        lifespan=[lifespan],
        middleware=[observe_requests, guard_parameters],
        exception_handlers=exception_handlers(),
        openapi_config=openapi_config("Parcours", __version__, SECURITY_SCHEMES),  # web/api_docs.py
        request_max_body_size=2 * 1024 * 1024,
        logging_config=None,
        debug=False,
    )


def _behind(guard: Guard, scheme: str, handlers: Sequence[ControllerRouterHandler]) -> Router:
    """Routes that answer only past `guard`, documented as needing `scheme` (and as
    answering 401 without it)."""
    document_errors(handlers, guarded=True)
    return Router("/", route_handlers=handlers, guards=[guard], security=[{scheme: []}])


def _dependencies(services: Services) -> dict[str, Provide]:
    """What handlers may ask for, by parameter name (docs/http-layer.md)."""
    exposition = services.metrics()
    parts: dict[str, Any] = {
        "settings": services.settings,
        "db": services.db,
        "clock": services.clock,
        "keys": services.keys,
        "appender": services.writer,  # the writer: the way into the log (log.Appender)
        "engine": services.engine,
        "delivery": services.delivery,
        "segment_engine": services.segments,
        "referrals": services.referrals,
        "people": services.people,  # each package's hooks for a person erased (Shopify)
        "reactions": services.reactions,  # what an action appending through the log's door runs
        "exposition": exposition,
        "open_scratch": Services.open_scratch,  # the journey simulator's scratch Parcours
        "console": _console_parts(services),
    }
    provided = {
        name: Provide(_constant(part), use_cache=True, sync_to_thread=False)
        for name, part in parts.items()
    }
    provided["readiness"] = Provide(services.readiness, sync_to_thread=True)
    provided["admin"] = Provide(acting_admin, sync_to_thread=False)
    provided["chat_tokens"] = Provide(visitor_tokens(services.db, services.clock), use_cache=True)
    return provided


def _console_parts(services: Services) -> ConsoleParts:
    settings = services.settings
    return ConsoleParts(
        db=services.db,
        clock=services.clock,
        cookie_secret=instance_secret(services.db, "console-cookie", services.clock.now_ms()),
        secure_cookies=settings.resolved_public_url.startswith("https://"),
        brand=settings.brand_name,
        timezone=settings.brand_timezone,
        brand_locale=settings.brand_locale,
        queues=tuple(services.worker.queues),
        stale_ms=settings.worker_stale_seconds * 1000,
        default_region=settings.default_region,
        people=services.people,
        links=services.delivery.links,
        delivery=services.delivery,
        appender=services.writer,
        sector=settings.sector,
        return_window_days=settings.return_window_days,
        review_after_days=settings.review_after_days,
        stalled_after_hours=settings.shipment_stalled_after_hours,
        recommendation_weeks=settings.recommendation_weeks,
        wall=wall_clock(services.clock),
    )


def _constant(part: Any) -> Callable[[], Any]:
    def provide() -> Any:
        return part

    return provide
