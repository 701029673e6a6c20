"""Admin API for journeys: versions and review, counts, customer traces, simulation."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, RawBody

from parcours import accounts
from parcours.accounts import Permission
from parcours.customers import profiles as customers
from parcours.http import (
    HttpError,
    Injected,
    decode_json,
    json_response,
    read_body,
    read_json,
)
from parcours.journeys import (
    MAX_DAYS,
    JourneyError,
    OpenScratch,
    ScriptError,
    TimelineItem,
    brand_in_force,
    brand_segments,
    simulate,
    timeline_item,
)
from parcours.journeys import versions as journeys
from parcours.log import Appender, Event
from parcours.messaging import templates
from parcours.runtime.clock import Clock, parse_iso
from parcours.runtime.db import Database
from parcours.runtime.keys import KeyHolder
from parcours.runtime.settings import Settings
from parcours.web.api_docs import request_body
from parcours.web.errors import ERROR_FIELDS

_decode = msgspec.json.Decoder().decode
_YAML = request_body(str, ("application/yaml",), "The journey, in YAML")
_AS_YAML = "with `Accept: application/yaml`, the YAML alone"


class VersionList(msgspec.Struct):
    versions: list[journeys.VersionSummary]


class DraftSaved(msgspec.Struct):
    journey_id: str
    version: int
    status: str


class StatusChanged(msgspec.Struct):
    journey_id: str
    version: int
    status: str
    approved_by: str | None


class CustomerTrace(msgspec.Struct):
    """The runs a customer is in, and every decision with its reason, oldest first."""

    customer_id: str
    runs: list[journeys.RunView]
    history: list[journeys.TraceEntry]


class Timeline(msgspec.Struct):
    timeline: list[TimelineItem]


class Entered(msgspec.Struct):
    """The entry request appended (`duplicate`: this Idempotency-Key already was)."""

    journey_id: str
    customer_id: str
    messageId: str
    duplicate: bool


@get("/api/journeys")
async def list_journeys(db: Injected[Database]) -> VersionList:
    """Every version of every journey, with its status."""

    def read() -> list[journeys.VersionSummary]:
        with db.read() as conn:
            return journeys.versions(conn)

    return VersionList(await asyncio.to_thread(read))


@post("/api/journeys", status_code=201, operation_class=_YAML)
async def create_draft(
    request: Request[Any, Any, Any],
    db: Injected[Database],
    clock: Injected[Clock],
    admin: Injected[KeyHolder],
) -> DraftSaved:
    """The body is the journey's YAML; it becomes the next version, a draft."""
    source = (await read_body(request, 256 * 1024)).decode("utf-8", errors="replace")
    await asyncio.to_thread(_check_role, db, admin, "journeys.edit")
    version = await asyncio.to_thread(
        journeys.save_draft, db, source, admin.name, clock.now_ms(), editor_key=admin.key_id
    )
    return DraftSaved(version.journey_id, version.version, version.status)


# What each lifecycle move needs of the user an admin key belongs to (docs/console.md);
# an admin key made at the command line belongs to no user and keeps its name's rights.
MOVE_PERMISSIONS: dict[str, Permission] = {
    "submit": "journeys.edit",
    "approve": "journeys.approve",
    "go_live": "journeys.operate",
    "pause": "journeys.operate",
    "archive": "journeys.operate",
}


def _check_role(db: Database, admin: KeyHolder, permission: Permission) -> None:
    if admin.user_id is None:
        return
    with db.read() as conn:
        user = accounts.user_by_id(conn, admin.user_id)
    if user is None or not user.may(permission):
        raise HttpError(
            403, f"this admin key's user may not do this ({permission} is not in their role)"
        )


_JOURNEY_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,199}")


def _wants_yaml(request: Request[Any, Any, Any]) -> bool:
    accept = request.headers.get("accept", "")
    return any(kind in accept for kind in ("application/yaml", "text/yaml", "application/x-yaml"))


@get(
    "/api/journeys/{journey_id:str}",
    sync_to_thread=True,
    responses={200: ResponseSpec(journeys.JourneyView, description=f"The journey ({_AS_YAML})")},
)
def get_journey(
    request: Request[Any, Any, Any], db: Injected[Database], journey_id: FromPath[str]
) -> Response[bytes]:
    """The journey read back: its versions with status and review, which one is live, and
    the latest version's YAML (`Accept: application/yaml`: that YAML alone)."""
    if not _JOURNEY_ID.fullmatch(journey_id):
        raise journeys.UnknownJourney(journey_id)
    with db.read() as conn:
        found = journeys.journey_view(conn, journey_id)
    if _wants_yaml(request):
        return _yaml(found.latest.source)
    return json_response(found)


@get(
    "/api/journeys/{journey_id:str}/versions/{version:int}",
    sync_to_thread=True,
    responses={200: ResponseSpec(journeys.VersionView, description=f"The journey ({_AS_YAML})")},
)
def get_version(
    request: Request[Any, Any, Any],
    db: Injected[Database],
    journey_id: FromPath[str],
    version: FromPath[int],
) -> Response[bytes]:
    """One version: its YAML as written, status and review (`Accept: application/yaml`:
    the YAML alone)."""
    if not _JOURNEY_ID.fullmatch(journey_id):
        raise journeys.UnknownJourney(journey_id)
    try:
        with db.read() as conn:
            found = journeys.version_view(conn, journey_id, version)
    except journeys.UnknownJourney:
        raise
    except LookupError as exc:  # no such version of a journey that exists
        raise HttpError(404, str(exc), "version") from None
    if _wants_yaml(request):
        return _yaml(found.source)
    return json_response(found)


def _yaml(source: str) -> Response[bytes]:
    return Response(source.encode("utf-8"), media_type="application/yaml; charset=utf-8")


@post(
    "/api/journeys/{journey_id:str}/versions/{version:int}/{move:str}",
    status_code=200,
    sync_to_thread=True,
)
def change_status(
    db: Injected[Database],
    clock: Injected[Clock],
    admin: Injected[KeyHolder],
    journey_id: FromPath[str],
    version: FromPath[int],
    move: FromPath[str],
) -> StatusChanged:
    """submit, approve (by another person than the last editor), go_live, pause, archive."""
    if move not in ("submit", "approve", "go_live", "pause", "archive"):
        raise HttpError(
            404, f"unknown action {move!r}: submit, approve, go_live, pause or archive", "move"
        )
    _check_role(db, admin, MOVE_PERMISSIONS[move])
    changed = journeys.change_status(
        db, journey_id, version, move, admin.name, clock.now_ms(), key=admin.key_id
    )
    return StatusChanged(journey_id, version, changed.status, changed.approved_by)


@get("/api/journeys/{journey_id:str}/versions/{version:int}/stats", sync_to_thread=True)
def journey_stats(
    db: Injected[Database], journey_id: FromPath[str], version: FromPath[int]
) -> journeys.JourneyStats:
    """Entered, active, exited, converted, each step; treated and control side by side."""
    with db.read() as conn:
        return journeys.stats(conn, journey_id, version)


@get("/api/customers/{ref:str}/journeys", sync_to_thread=True)
def customer_trace(
    db: Injected[Database], settings: Injected[Settings], ref: FromPath[str]
) -> CustomerTrace:
    """The journeys a customer is in, where each run stands, and every decision with its
    reason, oldest first."""
    with db.read() as conn:
        customer = customers.resolve(conn, ref, settings.default_region)
        history = journeys.trace(conn, customer)
        runs = journeys.runs_of(conn, customer)
    return CustomerTrace(customers.public_id(customer), runs, history)


class _SimulationRequest(msgspec.Struct, forbid_unknown_fields=True):
    journey: str
    script: list[dict[str, Any]]
    start: str | None = None
    days: int = 30
    customer: str | None = None


@post(
    "/api/journeys/simulate",
    status_code=200,
    sync_to_thread=True,
    operation_class=request_body(_SimulationRequest),
    opt={ERROR_FIELDS: {customers.CustomerNotFound: "customer"}},
)
def simulate_journey(
    body: RawBody,
    db: Injected[Database],
    clock: Injected[Clock],
    settings: Injected[Settings],
    open_scratch: Injected[OpenScratch],
) -> Timeline:
    """Run a journey (YAML in `journey`) on a simulated clock; nothing is sent."""
    try:
        asked = decode_json(body, _SimulationRequest)  # the limits of every body
        start = parse_iso(asked.start) if asked.start else clock.now_ms()
        if not 0 <= asked.days <= MAX_DAYS:
            raise HttpError(400, f"days must be between 0 and {MAX_DAYS}", "days")
        history = None
        if asked.customer:
            history = customers.history(db, asked.customer, settings.default_region)
        with db.read() as conn:
            brand_templates = templates.brand_templates(conn)
            segment_sources = brand_segments(conn)
            settings = brand_in_force(conn, settings)  # the zone set on the Settings page
        entries = simulate(
            asked.journey,
            asked.script,
            open_scratch=open_scratch,
            start=start,
            days=asked.days,
            history=history,
            default_region=settings.default_region,
            brand_templates=brand_templates,
            brand_segments=segment_sources,
            brand_settings=settings,
        )
    except (JourneyError, ScriptError):
        raise  # answered by the application (web/errors.py)
    except journeys.LifecycleError as exc:  # the journey cannot run as it is
        raise HttpError(400, str(exc), "journey") from None
    except ValueError as exc:  # the start time
        raise HttpError(400, str(exc), "start") from None
    return Timeline([timeline_item(e) for e in entries])


class _EntryRequest(msgspec.Struct, forbid_unknown_fields=True):
    customer: str
    properties: dict[str, Any] = {}
    idempotency_key: str | None = None


@post(
    "/api/journeys/{journey_id:str}/runs",
    status_code=202,
    operation_class=request_body(_EntryRequest),
    opt={
        ERROR_FIELDS: {
            customers.CustomerNotFound: "customer",
            journeys.LifecycleError: "journey_id",
        }
    },
)
async def enter_customer(
    request: Request[Any, Any, Any],
    journey_id: FromPath[str],
    db: Injected[Database],
    clock: Injected[Clock],
    settings: Injected[Settings],
    appender: Injected[Appender],
) -> Entered:
    """Enter a customer in a live `api: true` journey. The Idempotency-Key header (or
    `idempotency_key`) makes a repeated call change nothing; the run starts within the
    second, when the worker reads the request from the log."""
    try:
        body = await read_json(request, 32 * 1024, _EntryRequest)
        header = request.headers.get("idempotency-key", "").strip()
        given = (body.idempotency_key or "").strip()
        if header and given and header != given:
            raise HttpError(
                400, "the Idempotency-Key header and idempotency_key differ", "idempotency_key"
            )
        key = header or given
        if not key or len(key) > 255:
            raise HttpError(
                400,
                "an Idempotency-Key header (or idempotency_key), 1 to 255 characters, is "
                "required: a retried call then makes no second run",
                "Idempotency-Key",
            )

        def build() -> Event:
            with db.read() as conn:
                return journeys.entry_request(
                    conn,
                    journey_id,
                    body.customer,
                    body.properties,
                    key,
                    settings.default_region,
                    clock.now_ms(),
                )

        event: Event = await asyncio.to_thread(build)
        result = await appender.append([event])
    except (journeys.LifecycleError, customers.CustomerNotFound):
        raise  # answered by the application (web/errors.py)
    except ValueError as exc:  # the properties
        raise HttpError(400, str(exc), "properties") from None
    assert event.customer_id is not None
    return Entered(
        journey_id, customers.public_id(event.customer_id), event.message_id, result.duplicates > 0
    )


def journey_routes() -> list[HTTPRouteHandler]:
    return [
        list_journeys,
        create_draft,
        get_journey,
        get_version,
        change_status,
        journey_stats,
        customer_trace,
        simulate_journey,
        enter_customer,
    ]
