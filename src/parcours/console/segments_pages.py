"""Segments in the console: the list with how many customers each holds now, a segment's
page (its definition, its evaluation, a first page of members, its entries and exits per
day over 30 days), and its definition built with a form of conditions or written in YAML,
the two kept in step, with the count and a few customers it would hold now shown as one
edits (nothing saved); a saved definition is evaluated again for everyone, the save
audited in its transaction."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery
from sqlalchemy import Connection

from parcours import accounts, analytics
from parcours.console import segment_form
from parcours.console.access import ConsoleParts, Form, changing, go, signed_in
from parcours.console.rendering import Viewer, not_found, page
from parcours.http import Injected
from parcours.segments import (
    SegmentError,
    SegmentExists,
    SegmentIdMismatch,
    UnknownSegment,
    catalog,
    drafts,
)

MAX_SOURCE = 64 * 1024
MEMBERS_SHOWN = 20
DAYS = 30
DAY_MS = 24 * 3_600_000
EXAMPLE = """id: repeat-buyers
name: Repeat buyers
description: Customers with two orders or more
conditions:
  - events: {name: Order Completed, count: {gte: 2}}
"""


@dataclass(frozen=True)
class Editor:
    """The definition being edited: the form, the YAML, the YAML's problems."""

    builder: segment_form.Builder
    source: str
    problems: list[Any]
    existing: str  # the segment's id when it exists, else ""
    kinds: tuple[str, ...] = segment_form.KINDS
    operators: tuple[str, ...] = segment_form.OPERATORS


def _editor(source: str, existing: str = "", problems: list[Any] | None = None) -> Editor:
    return Editor(segment_form.from_source(source), source, problems or [], existing)


@dataclass(frozen=True)
class ChangeDay:
    """A day of a segment's life: who entered (those of a batch evaluation among them),
    who left."""

    day: date
    entered: int
    batch: int
    exited: int


def changes_of(parts: ConsoleParts, segment_id: str) -> list[ChangeDay]:
    """The segment's entries and exits per day (the brand's time zone) over DAYS days,
    from the log's hourly counts (parcours.analytics), caught up first."""
    now = parts.clock.now_ms()
    analytics.catch_up(parts.db, limit=analytics.PAGE_LIMIT)  # the worker keeps up
    today = analytics.local_day(now // analytics.HOUR_MS, parts.timezone)
    first = today - timedelta(days=DAYS - 1)
    with parts.db.read() as conn:
        counts = analytics.segment_changes(conn, segment_id, now - (DAYS + 1) * DAY_MS, now)
    entered: dict[date, int] = defaultdict(int)
    batch: dict[date, int] = defaultdict(int)
    exited: dict[date, int] = defaultdict(int)
    for count in counts:
        day = analytics.local_day(count.hour, parts.timezone)
        if count.name == "Segment Exited":
            exited[day] += count.count
        else:
            entered[day] += count.count
            if count.channel == analytics.BACKFILL:
                batch[day] += count.count
    return [
        ChangeDay(d, entered[d], batch[d], exited[d])
        for d in (first + timedelta(days=n) for n in range(DAYS))
    ]


@get("/console/segments", sync_to_thread=True)
def segments_page(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts]
) -> Response[bytes]:
    viewer = signed_in(request, console)
    return _list_page(viewer, console, _editor(EXAMPLE))


def _list_page(
    viewer: Viewer, parts: ConsoleParts, editor: Editor, *, status: int = 200, error: str = ""
) -> Response[bytes]:
    with parts.db.read() as conn:
        listing = catalog.listing(conn)
    return page(
        viewer, "segments.html", status=status, listing=listing.segments, editor=editor, error=error
    )


def _segment_page(
    viewer: Viewer,
    parts: ConsoleParts,
    segment_id: str,
    *,
    status: int = 200,
    error: str = "",
    editor: Editor | None = None,
) -> Response[bytes]:
    with parts.db.read() as conn:
        try:
            segment = catalog.describe(conn, segment_id)
        except UnknownSegment:
            return not_found(viewer, "console.segments.unknown")
        sample = catalog.members(conn, segment_id, limit=MEMBERS_SHOWN)
    days = changes_of(parts, segment_id)
    return page(
        viewer,
        "segment.html",
        status=status,
        segment=segment,
        sample=sample,
        error=error,
        editor=editor or _editor(segment.source, segment.id),
        days=days,
        peak=max([1, *(max(d.entered, d.exited) for d in days)]),
    )


def _editing_page(
    viewer: Viewer, parts: ConsoleParts, editor: Editor, *, status: int = 200, error: str = ""
) -> Response[bytes]:
    """The page the editor is on: the segment's, or the list's for a new one."""
    if editor.existing:
        return _segment_page(
            viewer, parts, editor.existing, status=status, error=error, editor=editor
        )
    return _list_page(viewer, parts, editor, status=status, error=error)


@get("/console/segments/{segment_id:str}", sync_to_thread=True)
def segment_page(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], segment_id: FromPath[str]
) -> Response[bytes]:
    return _segment_page(signed_in(request, console), console, segment_id)


def _from_form(data: dict[str, str]) -> tuple[segment_form.Builder, str | None]:
    """The form as posted, and its definition as YAML (None while a row cannot be read)."""
    builder = segment_form.from_form(data)
    document = segment_form.definition(builder)
    return builder, None if document is None else segment_form.as_yaml(document)


@post("/console/segments", status_code=200, sync_to_thread=True)
def save_segment(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], data: Form
) -> Response[Any]:
    """A new segment (`segment` empty) or a segment's new definition, from the form
    (`from` = form) or from its YAML."""
    viewer = changing(request, console, "segments.edit", data)
    assert viewer.session is not None
    user, now = viewer.session.user, console.clock.now_ms()
    existing = data.get("segment", "")
    source = data.get("source", "")[: MAX_SOURCE + 1]
    if data.get("from") == "form":
        builder, written = _from_form(data)
        if written is None:
            editor = Editor(builder, source, [], existing)
            return _editing_page(
                viewer, console, editor, status=400, error=viewer.t("console_build.segments.fix")
            )
        source = written
    else:
        builder = segment_form.from_source(source)

    def audited(conn: Connection, saved: catalog.Saved) -> None:
        accounts.record(
            conn,
            user.actor,
            "segment.saved",
            f"segment:{saved.segment_id}",
            now,
            after={"generation": saved.generation},
        )

    if len(source) > MAX_SOURCE:
        editor = Editor(builder, source, [], existing)
        return _editing_page(
            viewer, console, editor, status=413, error=viewer.t("console.segments.too_long")
        )
    try:
        saved = catalog.save(
            console.db,
            source,
            user.email,
            now,
            mode="update" if existing else "create",
            segment_id=existing or None,
            also=audited,
        )
    except SegmentError as exc:
        for problem in exc.problems:
            builder.problem_on(problem.path, problem.message)
        editor = Editor(builder, source, exc.problems, existing)
        return _editing_page(
            viewer, console, editor, status=400, error=viewer.t("console.journeys.has_problems")
        )
    except (SegmentExists, SegmentIdMismatch, UnknownSegment) as exc:
        editor = Editor(builder, source, [], existing)
        return _editing_page(viewer, console, editor, status=409, error=str(exc))
    return go(f"/console/segments/{saved.segment_id}")


@post("/console/segments/form", status_code=200, sync_to_thread=True)
def change_rows(
    request: Request[Any, Any, Any], console: Injected[ConsoleParts], data: Form
) -> Response[bytes]:
    """Without script: a row added or removed, the page drawn again with the form and
    its YAML (nothing saved)."""
    viewer = changing(request, console, "segments.edit", data)
    builder = segment_form.from_form(data)
    _, written = _from_form({**data, "action": ""})  # the rows as they were: an added one is empty
    for row in builder.rows:
        row.error = None  # a row just added is empty: not a mistake yet
    builder.errors.clear()
    source = written if written is not None else data.get("source", "")[:MAX_SOURCE]
    return _editing_page(viewer, console, Editor(builder, source, [], data.get("segment", "")))


@post("/console/segments/draft", status_code=200, sync_to_thread=True)
def draft(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    data: Form,
    side: FromQuery[str] = "yaml",
) -> Response[bytes]:
    """As one edits (HTMX): how many customers the draft would hold now and a few of
    them, nothing saved; the other side of the editor brought in step (the YAML from the
    form, or the form from the YAML), and each problem on its field."""
    viewer = changing(request, console, "segments.edit", data)
    existing = data.get("segment", "")
    problems: list[Any] = []
    rows_changed = bool(data.get("action"))
    if side == "form":
        builder, written = _from_form(data)
        source = written or ""
        if rows_changed:
            for row in builder.rows:
                row.error = None
            builder.errors.clear()
    else:
        source = data.get("source", "")
        builder = segment_form.from_source(source)
    counted = None
    if len(source) > MAX_SOURCE:
        problems = [viewer.t("console.segments.too_long")]
    elif source:
        try:
            counted = drafts.count_draft(console.db, source, console.clock.now_ms())
        except SegmentError as exc:
            problems = [p for p in exc.problems if not builder.problem_on(p.path, p.message)]
    return page(
        viewer,
        "_segment_draft.html",
        counted=counted,
        problems=problems,
        editor=Editor(builder, source, [], existing),
        side=side,
        rows_changed=rows_changed,
        written=side == "form" and bool(source),
    )


def segments_routes() -> list[HTTPRouteHandler]:
    return [segments_page, segment_page, save_segment, change_rows, draft]
