"""Journeys in the console: the list, the gallery of ready-made journeys, a journey's page
(its versions and their review, the YAML editor checked as you type) and the lifecycle:
submit, approve by another person with the reviewer's right, go live, pause, resume,
archive. Each change is audited in its own transaction."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery
from sqlalchemy import Connection

from parcours import accounts
from parcours.accounts import Permission
from parcours.console.access import ConsoleParts, Form, Refused, changing, go, signed_in
from parcours.console.rendering import Viewer, not_found, page
from parcours.http import Injected
from parcours.journeys import (
    JourneyError,
    LifecycleError,
    NotReady,
    UnknownJourney,
    ready_made,
    ready_made_source,
    versions,
)
from parcours.runtime.definitions import Problem

MAX_SOURCE = 256 * 1024
# What each move needs, and the status it starts from (resume: a paused version goes live).
MOVES: dict[str, tuple[str, Permission]] = {
    "submit": ("submit", "journeys.edit"),
    "approve": ("approve", "journeys.approve"),
    "go_live": ("go_live", "journeys.operate"),
    "resume": ("go_live", "journeys.operate"),
    "pause": ("pause", "journeys.operate"),
    "archive": ("archive", "journeys.operate"),
}
AVAILABLE = {
    "draft": ("submit", "archive"),
    "in_review": ("approve", "archive"),
    "approved": ("go_live", "archive"),
    "live": ("pause", "archive"),
    "paused": ("resume", "archive"),
}


def _problems(conn: Connection | None, source: str) -> list[Problem]:
    try:
        versions.validate(source, versions.template_lookup(conn))
    except JourneyError as exc:
        return exc.problems
    return []


@get("/console/journeys", sync_to_thread=True)
def journeys_page(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts]
) -> Response[bytes]:
    viewer = signed_in(request, console)
    with console.db.read() as conn:
        all_versions = versions.versions(conn)
    by_journey: dict[str, list[versions.VersionSummary]] = defaultdict(list)
    for item in all_versions:
        by_journey[item.journey_id].append(item)
    return page(viewer, "journeys.html", journeys=by_journey, gallery=ready_made())


def _journey_page(
    viewer: Viewer,
    parts: ConsoleParts,
    journey_id: str,
    *,
    status: int = 200,
    error: str = "",
    problems: list[Problem] | None = None,
    source: str | None = None,
) -> Response[bytes]:
    with parts.db.read() as conn:
        try:
            journey = versions.journey_view(conn, journey_id)
        except UnknownJourney:
            return not_found(viewer, "console.journeys.unknown")
        shown = [versions.version_view(conn, journey_id, r.version) for r in journey.versions]
        stats = (
            versions.stats(conn, journey_id, journey.live_version)
            if journey.live_version is not None
            else None
        )
    return page(
        viewer,
        "journey.html",
        status=status,
        journey=journey,
        shown=list(reversed(shown)),
        stats=stats,
        available=AVAILABLE,
        moves=MOVES,
        error=error,
        problems=problems or [],
        source=journey.latest.source if source is None else source,
    )


@get("/console/journeys/{journey_id:str}", sync_to_thread=True)
def journey_page(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], journey_id: FromPath[str]
) -> Response[bytes]:
    return _journey_page(signed_in(request, console), console, journey_id)


@get("/console/journeys-new", sync_to_thread=True)
def new_journey(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], start: FromQuery[str] = ""
) -> Response[bytes]:
    viewer = signed_in(request, console)
    source = ready_made_source(start) or ""
    return page(viewer, "journey_new.html", source=source, problems=[], error="")


@post("/console/journeys/check", status_code=200, sync_to_thread=True)
def check(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], data: Form
) -> Response[bytes]:
    """The problems of the YAML being edited, each on its line (HTMX, as one types)."""
    viewer = changing(request, console, None, data)
    source = data.get("source", "")[:MAX_SOURCE]
    with console.db.read() as conn:
        problems = _problems(conn, source)
    return page(viewer, "_problems.html", problems=problems)


@post("/console/journeys", status_code=200, sync_to_thread=True)
def save(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], data: Form
) -> Response[Any]:
    """The YAML as the journey's next version, a draft."""
    viewer = changing(request, console, "journeys.edit", data)
    assert viewer.session is not None
    user, now = viewer.session.user, console.clock.now_ms()
    source = data.get("source", "")
    if len(source) > MAX_SOURCE:
        return page(
            viewer,
            "journey_new.html",
            status=413,
            source="",
            problems=[],
            error=viewer.t("console.journeys.too_long"),
        )
    with console.db.read() as conn:
        problems = _problems(conn, source)
    if problems:
        return page(
            viewer,
            "journey_new.html",
            status=400,
            source=source,
            problems=problems,
            error=viewer.t("console.journeys.has_problems"),
        )

    def audited(conn: Connection, saved: versions.Version) -> None:
        accounts.record(
            conn,
            user.actor,
            "journey.draft_saved",
            f"journey:{saved.journey_id}",
            now,
            after={"version": saved.version},
        )

    saved = versions.save_draft(console.db, source, user.email, now, also=audited)
    return go(f"/console/journeys/{saved.journey_id}")


@post(
    "/console/journeys/{journey_id:str}/versions/{version:int}/{move:str}",
    status_code=200,
    sync_to_thread=True,
)
def change(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    journey_id: FromPath[str],
    version: FromPath[int],
    move: FromPath[str],
    data: Form,
) -> Response[Any]:
    if move not in MOVES:
        raise Refused(signed_in(request, console), "console.journeys.unknown_move")
    domain_move, permission = MOVES[move]
    viewer = changing(request, console, permission, data)
    assert viewer.session is not None
    user, now = viewer.session.user, console.clock.now_ms()

    if move == "approve":  # the domain refuses it too; said here in the viewer's language
        with console.db.read() as conn:
            review = versions.version_view(conn, journey_id, version)
        if user.email.casefold() in {
            (review.edited_by or "").casefold(),
            (review.submitted_by or "").casefold(),
        }:
            return _journey_page(
                viewer,
                console,
                journey_id,
                status=409,
                error=viewer.t("console.journeys.same_person"),
            )

    def audited(conn: Connection, changed: versions.Version) -> None:
        accounts.record(
            conn,
            user.actor,
            f"journey.{move}",
            f"journey:{journey_id}:v{version}",
            now,
            after={"status": changed.status},
        )

    try:
        versions.change_status(
            console.db, journey_id, version, domain_move, user.email, now, also=audited
        )
    except NotReady as exc:
        return _journey_page(
            viewer, console, journey_id, status=409, error=str(exc), problems=exc.problems
        )
    except LifecycleError as exc:
        return _journey_page(viewer, console, journey_id, status=409, error=str(exc))
    return go(f"/console/journeys/{journey_id}")


def journeys_routes() -> list[HTTPRouteHandler]:
    return [journeys_page, journey_page, new_journey, check, save, change]
