"""Journeys in the console: the list, the gallery of ready-made journeys, a journey's page
(its steps drawn as a graph with each step's counts, the simulator, its versions and their
review, the YAML editor checked as you type), two versions side by side, and the
lifecycle: submit, approve by another person with the reviewer's right, go live, pause,
resume, archive, each refusal said in the viewer's language. Each change is audited in
its own transaction."""

from __future__ import annotations

import difflib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery
from sqlalchemy import Connection

from parcours import accounts
from parcours.accounts import Permission
from parcours.console.access import ConsoleParts, Form, Refused, changing, go, signed_in
from parcours.console.outbox_pages import reason_words
from parcours.console.rendering import Viewer, not_found, page
from parcours.customers import CustomerNotFound, profiles
from parcours.http import Injected
from parcours.journeys import (
    MAX_DAYS,
    JourneyError,
    LifecycleError,
    NotReady,
    OpenScratch,
    ScriptError,
    TimelineEntry,
    UnknownJourney,
    brand_in_force,
    brand_segments,
    graph,
    load_script,
    ready_made,
    ready_made_source,
    simulate,
    versions,
)
from parcours.messaging import templates
from parcours.runtime.definitions import Problem
from parcours.runtime.settings import Settings

MAX_SOURCE = 256 * 1024
MAX_SCRIPT = 64 * 1024
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


# The decisions a simulation's timeline shows, by the name the log gives them.
DECISIONS = {
    "Journey Entered": "entered",
    "Journey Entry Refused": "refused",
    "Journey Waiting": "waiting",
    "Journey Event Received": "received",
    "Journey Wait Timed Out": "timed_out",
    "Journey Wait Skipped": "skipped",
    "Journey Branched": "branched",
    "Journey Split": "split",
    "Message Queued": "queued",
    "Message Held": "held",
    "Journey Exited": "exited",
    "Journey Converted": "converted",
    "Journey Held": "paused",
    "Task Created": "task",
    "Segment Entered": "segment_entered",
    "Segment Exited": "segment_exited",
    "Webhook Scheduled": "webhook",
}
# A message's fields shown in the timeline, in this order (an email's HTML is its text).
MESSAGE_FIELDS = ("subject", "preheader", "title", "header", "text", "body", "template", "url")


@dataclass(frozen=True)
class TimelineRow:
    """One moment of a simulation, as the page shows it."""

    at: str
    offset: str
    customer: str
    step: str
    decision: str
    what: str
    channel: str
    fields: list[tuple[str, str]]


@dataclass
class Simulation:
    """What the simulator was asked, and what it answered (a timeline, or why not)."""

    version: int | None = None
    customer: str = ""
    script: str = ""
    days: int = 30
    rows: list[TimelineRow] | None = None
    several: bool = False
    error: str = ""
    problems: list[Problem] = field(default_factory=list)


def refusal(viewer: Viewer, exc: LifecycleError) -> str:
    """A lifecycle refusal in the viewer's language, from its code (the domain's English
    when the console has no words for it)."""
    if exc.code == "refused":  # a refusal without a code of its own
        return str(exc)
    values = dict(exc.values)
    if "move" in values:
        values["move"] = viewer.t(f"console.journeys.move.{values['move']}")
    if "status" in values:
        values["status"] = viewer.t(f"console.journeys.status.{values['status']}")
    try:
        return viewer.t(f"console.journeys.refused.{exc.code}", **values)
    except KeyError:
        return str(exc)


def _script_example(source: str) -> str:
    """A first script for the simulator: the journey's entry, now."""
    try:
        journey = versions.parse(source)
    except JourneyError:
        return "- at: +0m\n  event: Signed Up\n"
    entry = journey.entry
    if entry.event is not None:
        return f"- at: +0m\n  event: {entry.event}\n  properties: {{}}\n"
    if entry.segment is not None:
        return f"- at: +0m\n  {'enters' if entry.on == 'enter' else 'leaves'}: {entry.segment}\n"
    if entry.date_trait is not None:
        return f"- at: +0m\n  type: identify\n  traits: {{{entry.date_trait}: '2000-01-01'}}\n"
    return (
        f"- at: +0m\n  event: Journey Entry Requested\n  properties: {{journey_id: {journey.id}}}\n"
    )


def _journey_page(
    viewer: Viewer,
    parts: ConsoleParts,
    journey_id: str,
    *,
    status: int = 200,
    error: str = "",
    problems: list[Problem] | None = None,
    source: str | None = None,
    drawn_version: int | None = None,
    simulation: Simulation | None = None,
) -> Response[bytes]:
    with parts.db.read() as conn:
        try:
            journey = versions.journey_view(conn, journey_id)
        except UnknownJourney:
            return not_found(viewer, "console.journeys.unknown")
        shown = [versions.version_view(conn, journey_id, r.version) for r in journey.versions]
        numbers = [r.version for r in journey.versions]
        drawn_at = drawn_version if drawn_version in numbers else None
        drawn_at = drawn_at or journey.live_version or journey.latest.version
        try:
            drawn: graph.JourneyGraph | None = graph.journey_graph(conn, journey_id, drawn_at)
        except JourneyError:  # written under rules since changed: the YAML shows why
            drawn = None
        stats = None
        if journey.live_version is not None:
            stats = (
                drawn.stats
                if drawn is not None and drawn.version == journey.live_version
                else versions.stats(conn, journey_id, journey.live_version, detailed=True)
            )
    return page(
        viewer,
        "journey.html",
        status=status,
        journey=journey,
        shown=list(reversed(shown)),
        stats=stats,
        drawn=drawn,
        available=AVAILABLE,
        moves=MOVES,
        error=error,
        problems=problems or [],
        source=journey.latest.source if source is None else source,
        simulation=simulation
        or Simulation(
            version=journey.latest.version, script=_script_example(journey.latest.source)
        ),
    )


@get("/console/journeys/{journey_id:str}", sync_to_thread=True)
def journey_page(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    journey_id: FromPath[str],
    version: FromQuery[int | None] = None,
) -> Response[bytes]:
    return _journey_page(signed_in(request, console), console, journey_id, drawn_version=version)


def _offset(viewer: Viewer, milliseconds: int) -> str:
    """How long after the simulation's start: +02:30, or +3d 02:30 (days in the viewer's
    language)."""
    shown = timedelta(milliseconds=max(0, milliseconds))
    hours, rest = divmod(shown.seconds, 3600)
    clock = f"{hours:02d}:{rest // 60:02d}"
    if not shown.days:
        return f"+{clock}"
    return viewer.t("console.journeys.sim.offset_days", days=shown.days, clock=clock)


def _fields(content: dict[str, Any] | None) -> list[tuple[str, str]]:
    if not content:
        return []
    return [(name, str(content[name])) for name in MESSAGE_FIELDS if content.get(name)]


def _said(viewer: Viewer, entry: TimelineEntry) -> str:
    """What a decision of the simulation did, in the viewer's language: said from the
    decision's name and the details the log gives it (its reasons by their codes, as the
    messages' and the customer's pages say them; its dates in the viewer's locale and time
    zone). The simulator's English (`entry.what`) when the console has no words for it."""
    p = entry.details
    code = DECISIONS.get(entry.decision or "")
    if code is None:
        emitted = p.get("emits")
        if isinstance(emitted, str):
            return viewer.t("console.journeys.said.emits", name=emitted)
        return entry.what
    values: dict[str, Any] = {k: "" if v is None else v for k, v in p.items()}
    if isinstance(p.get("reason"), str):
        values["reason"] = reason_words(viewer, p["reason"])
    if isinstance(p.get("until"), int):
        values["until"] = viewer.when(p["until"])
    if p.get("purpose") in ("marketing", "transactional"):
        values["purpose"] = viewer.t(f"support.purpose.{p['purpose']}")
    key = code
    if code == "waiting":
        if "for" in p:
            key = "waiting_for"
        elif "time_zone" in p:
            key = "waiting_local"
            values["zone_reason"] = reason_words(viewer, str(p.get("time_zone_reason", "")))
    elif code == "held" and p.get("outcome") == "deferred" and isinstance(p.get("until"), int):
        key = "held_until"
    elif code == "branched" and p.get("arm") == "otherwise":
        values["arm"] = viewer.t("console.journeys.said.otherwise")
    elif code == "split" and p.get("path") == "holdout":
        values["path"] = viewer.t("console.journeys.said.holdout")
    try:
        return viewer.t(f"console.journeys.said.{key}", **values)
    except KeyError:
        return entry.what


def _script_problem(viewer: Viewer, exc: ScriptError) -> str:
    """What is wrong with a script, in the viewer's language, by its code (the item named);
    the simulator's English when it has none (a YAML parser's, the tracking parser's)."""
    if exc.code is None:
        return str(exc)
    said = viewer.t(f"console.journeys.script.{exc.code}", **exc.values)
    if exc.item is None:
        return said
    where = viewer.t("console.journeys.script.item", item=exc.item)
    return viewer.t("console.journeys.script.where", where=where, problem=said)


def _simulate(
    viewer: Viewer,
    parts: ConsoleParts,
    settings: Settings,
    open_scratch: OpenScratch,
    journey_id: str,
    asked: Simulation,
) -> Simulation:
    """Run the simulator on the version asked for, with the brand's templates, segments
    and settings, and a real customer's history when one is named; nothing is sent."""
    try:
        with parts.db.read() as conn:
            source = versions.version_view(conn, journey_id, asked.version or 0).source
            brand_templates = templates.brand_templates(conn)
            segment_sources = brand_segments(conn)
            settings = brand_in_force(conn, settings)  # the zone set on the Settings page
    except LookupError:
        asked.error = viewer.t("console.journeys.sim.no_version")
        return asked
    if not 0 <= asked.days <= MAX_DAYS:
        asked.error = viewer.t("console.journeys.sim.days", most=MAX_DAYS)
        return asked
    if len(asked.script) > MAX_SCRIPT:
        asked.error = viewer.t("console.journeys.sim.too_long")
        return asked
    script = []
    try:
        if asked.script.strip() or not asked.customer.strip():
            script = load_script(asked.script)
        history = None
        if asked.customer.strip():
            history = profiles.history(parts.db, asked.customer.strip(), parts.default_region)
        start = parts.clock.now_ms()
        entries = simulate(
            source,
            script,
            open_scratch=open_scratch,
            start=start,
            days=asked.days,
            history=history,
            default_region=settings.default_region,
            brand_templates=brand_templates,
            brand_segments=segment_sources,
            brand_settings=settings,
        )
    except ScriptError as exc:
        line = exc.line
        if line is None and exc.item is not None and exc.item <= len(script):
            line = script[exc.item - 1].line
        problem = _script_problem(viewer, exc)
        if line:
            where = viewer.t("console.journeys.line", line=line)
            problem = viewer.t("console.journeys.script.where", where=where, problem=problem)
        asked.error = viewer.t("console.journeys.sim.script_problem", problem=problem)
        return asked
    except CustomerNotFound:
        asked.error = viewer.t("console.customers.unknown")
        return asked
    except JourneyError as exc:
        asked.error, asked.problems = viewer.t("console.journeys.has_problems"), exc.problems
        return asked
    except LifecycleError as exc:
        asked.error = refusal(viewer, exc)
        asked.problems = exc.problems if isinstance(exc, NotReady) else []
        return asked
    asked.several = len({entry.customer for entry in entries}) > 1
    asked.rows = [
        TimelineRow(
            at=viewer.when(entry.at),
            offset=_offset(viewer, entry.at - start),
            customer=entry.customer,
            step=entry.step or "",
            decision=viewer.t(f"console.journeys.decision.{DECISIONS[entry.decision]}")
            if entry.decision in DECISIONS
            else entry.decision or "",
            what=_said(viewer, entry),
            channel=entry.channel or "",
            fields=_fields(entry.message),
        )
        for entry in entries
    ]
    return asked


@post("/console/journeys/{journey_id:str}/simulate", status_code=200, sync_to_thread=True)
def simulate_page(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    settings: Injected[Settings],
    open_scratch: Injected[OpenScratch],
    journey_id: FromPath[str],
    data: Form,
) -> Response[bytes]:
    """The timeline of a simulation (HTMX: the timeline alone; else the whole page)."""
    viewer = changing(request, console, None, data)
    try:
        days = int(data.get("days") or 30)
        version = int(data.get("version") or 0)
    except ValueError:
        days, version = -1, 0
    asked = Simulation(
        version=version,
        customer=data.get("customer", "")[:200],
        script=data.get("script", ""),
        days=days,
    )
    done = _simulate(viewer, console, settings, open_scratch, journey_id, asked)
    if request.headers.get("hx-request"):
        return page(viewer, "journey_timeline.html", simulation=done, journey_id=journey_id)
    return _journey_page(
        viewer, console, journey_id, simulation=done, status=400 if done.error else 200
    )


@dataclass(frozen=True)
class DiffRow:
    """One row of two versions side by side: a line of each (or none), and whether it
    is the same, changed, removed or added."""

    kind: str  # same | changed | removed | added
    left_number: int | None
    left: str | None
    right_number: int | None
    right: str | None


def side_by_side(before: str, after: str) -> list[DiffRow]:
    """Two texts line by line, the changed lines paired, for a side-by-side view."""
    left, right = before.splitlines(), after.splitlines()
    rows: list[DiffRow] = []
    matcher = difflib.SequenceMatcher(a=left, b=right, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            rows += [
                DiffRow("same", i + 1, left[i], j + 1, right[j])
                for i, j in zip(range(i1, i2), range(j1, j2), strict=True)
            ]
            continue
        for k in range(max(i2 - i1, j2 - j1)):
            i, j = i1 + k, j1 + k
            has_left, has_right = i < i2, j < j2
            kind = "changed" if has_left and has_right else "removed" if has_left else "added"
            rows.append(
                DiffRow(
                    kind,
                    i + 1 if has_left else None,
                    left[i] if has_left else None,
                    j + 1 if has_right else None,
                    right[j] if has_right else None,
                )
            )
    return rows


@get("/console/journeys/{journey_id:str}/compare", sync_to_thread=True)
def compare_page(
    request: Request[Any, Any, Any],
    console: Injected[ConsoleParts],
    journey_id: FromPath[str],
    a: FromQuery[int | None] = None,
    b: FromQuery[int | None] = None,
) -> Response[bytes]:
    """Two versions' YAML side by side, the changed lines marked (by default: the latest
    against the live one, or against the one before it)."""
    viewer = signed_in(request, console)
    with console.db.read() as conn:
        try:
            journey = versions.journey_view(conn, journey_id)
        except UnknownJourney:
            return not_found(viewer, "console.journeys.unknown")
        numbers = [r.version for r in journey.versions]
        right = b if b in numbers else journey.latest.version
        fallback = journey.live_version if journey.live_version != right else None
        fallback = fallback or max([n for n in numbers if n < right] or [right])
        left = a if a in numbers else fallback
        before = versions.version_view(conn, journey_id, left)
        after = versions.version_view(conn, journey_id, right)
    rows = side_by_side(before.source, after.source)
    counts = {
        kind: sum(1 for r in rows if r.kind == kind) for kind in ("changed", "removed", "added")
    }
    return page(
        viewer,
        "journey_compare.html",
        journey=journey,
        before=before,
        after=after,
        rows=rows,
        counts=counts,
    )


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
            viewer,
            console,
            journey_id,
            status=409,
            error=refusal(viewer, exc),
            problems=exc.problems,
        )
    except LifecycleError as exc:
        return _journey_page(viewer, console, journey_id, status=409, error=refusal(viewer, exc))
    return go(f"/console/journeys/{journey_id}")


def journeys_routes() -> list[HTTPRouteHandler]:
    return [
        journeys_page,
        journey_page,
        compare_page,
        simulate_page,
        new_journey,
        check,
        save,
        change,
    ]
