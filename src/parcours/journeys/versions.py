"""Journey versions and their review lifecycle, runs and traces."""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import Connection, func, insert, select, update

from parcours.customers import profiles as customers
from parcours.journeys.definition import (
    Journey,
    JourneyError,
    Problem,
    load_journey,
    send_steps,
)
from parcours.journeys.program import ENTRY_REQUESTED, compile_journey
from parcours.journeys.tables import (
    journey_refusals,
    journey_runs,
    journey_step_visits,
    journey_versions,
)
from parcours.log import Event
from parcours.log import queries as log_queries
from parcours.messaging import templates
from parcours.runtime.clock import iso
from parcours.runtime.conditions import condition_paths
from parcours.runtime.db import Database
from parcours.runtime.documents import JsonObject
from parcours.runtime.presentation import own_event_properties
from parcours.runtime.queue import enqueue
from parcours.segments import catalog as segments
from parcours.tracking import parse_event

_decode = msgspec.json.Decoder().decode


class LifecycleError(ValueError):
    """A lifecycle change that is not allowed; the message says why, in English (the
    API's words). `code` names the refusal and `values` what it is about, so that the
    console can say it in its viewer's language: no_version, wrong_status, same_editor,
    same_submitter, not_ready, unknown_segments, not_live, not_api."""

    def __init__(self, message: str, code: str = "refused", **values: str) -> None:
        super().__init__(message)
        self.code = code
        self.values = values


class UnknownJourney(LookupError):
    def __init__(self, journey_id: str) -> None:
        super().__init__(f"no journey is defined with id {journey_id!r}")


@dataclass(frozen=True)
class Version:
    journey_id: str
    version: int
    status: str
    edited_by: str
    approved_by: str | None


# Run in the transaction of a draft saved or a lifecycle change, with the version as it
# is after it: how the console writes its audit entry with the change or not at all.
AlsoInTransaction = Callable[[Connection, "Version"], None]


def save_draft(
    db: Database,
    source: str,
    editor: str,
    now: int,
    *,
    editor_key: int | None = None,
    also: AlsoInTransaction | None = None,
) -> Version:
    """Check the YAML and store it as the next version of its journey, a draft, edited by
    this person (with the admin key they used, through the API).

    Editing a live journey makes a new version; customers already inside finish on theirs.
    """
    journey = load_journey(source)
    with db.write() as conn:
        latest = conn.execute(
            select(func.max(journey_versions.c.version)).where(
                journey_versions.c.journey_id == journey.id
            )
        ).scalar()
        version = int(latest or 0) + 1
        conn.execute(
            insert(journey_versions).values(
                journey_id=journey.id,
                version=version,
                status="draft",
                source=source,
                edited_by=editor,
                edited_by_key=editor_key,
                created_at=now,
                updated_at=now,
            )
        )
        saved = Version(journey.id, version, "draft", editor, None)
        if also is not None:
            also(conn, saved)
    return saved


_MOVES = {
    "submit": ({"draft"}, "in_review"),
    "approve": ({"in_review"}, "approved"),
    "go_live": ({"approved", "paused"}, "live"),
    "pause": ({"live"}, "paused"),
    "archive": ({"draft", "in_review", "approved", "live", "paused"}, "archived"),
}


def change_status(
    db: Database,
    journey_id: str,
    version: int,
    move: str,
    user: str,
    now: int,
    *,
    key: int | None = None,
    also: AlsoInTransaction | None = None,
) -> Version:
    """submit, approve, go_live, pause, archive, by this person (with this admin key).

    Approval is by another person than the one who edited the version last and the one
    who submitted it: another name, and, when both acted through the API, another admin
    key. The approval records what was approved: the difference from the live version."""
    allowed_from, target = _MOVES[move]
    with db.write() as conn:
        row = conn.execute(
            select(journey_versions).where(
                journey_versions.c.journey_id == journey_id,
                journey_versions.c.version == version,
            )
        ).first()
        if row is None:
            raise LifecycleError(
                f"journey {journey_id!r} has no version {version}",
                "no_version",
                journey=journey_id,
                version=str(version),
            )
        if row.status not in allowed_from:
            raise LifecycleError(
                f"cannot {move.replace('_', ' ')} version {version} of {journey_id!r}: it is "
                f"{row.status} (allowed from {', '.join(sorted(allowed_from))})",
                "wrong_status",
                journey=journey_id,
                version=str(version),
                move=move,
                status=row.status,
                allowed=",".join(sorted(allowed_from)),
            )
        values: dict[str, Any] = {"status": target, "updated_at": now}
        if move == "submit":
            values |= {"submitted_by": user, "submitted_at": now}
        if move == "approve":
            same_key = key is not None and key == row.edited_by_key
            person = user.strip().casefold()
            if same_key or person == row.edited_by.strip().casefold():
                raise LifecycleError(
                    f"{row.edited_by} edited version {version} last; another person must "
                    "approve it",
                    "same_editor",
                    who=row.edited_by,
                    version=str(version),
                )
            if row.submitted_by and person == row.submitted_by.strip().casefold():
                raise LifecycleError(
                    f"{row.submitted_by} submitted version {version}; another person must "
                    "approve it",
                    "same_submitter",
                    who=row.submitted_by,
                    version=str(version),
                )
            values |= {
                "approved_by": user,
                "approved_by_key": key,
                "approved_at": now,
                "approved_diff": _difference(conn, journey_id, version, row.source),
            }
        if move in ("submit", "go_live"):  # and again at go-live: templates may change
            check_templates(conn, row.source)
        if move == "go_live":
            check_segments(conn, parse(row.source))
            for older in conn.execute(
                select(journey_versions.c.version, journey_versions.c.status).where(
                    journey_versions.c.journey_id == journey_id,
                    journey_versions.c.status.in_(("live", "paused")),
                    journey_versions.c.version != version,
                )
            ).all():
                _announce(conn, journey_id, older.version, older.status, "superseded", now)
            conn.execute(
                update(journey_versions)
                .where(
                    journey_versions.c.journey_id == journey_id,
                    journey_versions.c.status.in_(("live", "paused")),
                    journey_versions.c.version != version,
                )
                .values(status="superseded", updated_at=now)
            )
        conn.execute(
            update(journey_versions).where(journey_versions.c.id == row.id).values(**values)
        )
        _announce(conn, journey_id, version, row.status, target, now)
        changed = Version(
            journey_id, version, target, row.edited_by, values.get("approved_by", row.approved_by)
        )
        if also is not None:
            also(conn, changed)
        return changed


def _difference(conn: Connection, journey_id: str, version: int, source: str) -> str:
    """The unified diff from the version live (or paused) now to this one's YAML; against
    nothing for a journey's first version."""
    live = conn.execute(
        select(journey_versions.c.version, journey_versions.c.source)
        .where(
            journey_versions.c.journey_id == journey_id,
            journey_versions.c.status.in_(("live", "paused")),
        )
        .order_by(journey_versions.c.version.desc())
        .limit(1)
    ).first()
    before, label = (live.source, f"{journey_id} v{live.version}") if live else ("", "nothing")
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            source.splitlines(keepends=True),
            fromfile=label,
            tofile=f"{journey_id} v{version}",
        )
    )


TemplateLookup = Callable[[str], templates.MessageTemplate | None]


class NotReady(LifecycleError):
    """A version that cannot be submitted or go live as it is: `problems` names each
    step whose template is missing or lacks content, with its line."""

    def __init__(self, message: str, problems: list[Problem], journey: str = "") -> None:
        super().__init__(message, "not_ready", journey=journey)
        self.problems = problems


def template_lookup(conn: Connection | None) -> TemplateLookup:
    """Templates by id: the brand's (in this database) or the shipped ones; without a
    database, the shipped ones only."""
    if conn is None:
        return templates.shipped().get

    def lookup(template_id: str) -> templates.MessageTemplate | None:
        try:
            return templates.get(conn, template_id)
        except templates.TemplateProblem:
            return None

    return lookup


def template_problems(journey: Journey, lookup: TemplateLookup) -> list[tuple[str, str]]:
    """(path, message) for every send step whose template is unknown, has no content for
    a channel the step may use, or is a WhatsApp marketing template on a transactional
    step."""
    found: list[tuple[str, str]] = []
    for path, step in send_steps(journey):
        send = step.send
        assert send is not None
        template = lookup(send.template)
        if template is None:
            found.append((f"{path}.send.template", f"unknown template {send.template!r}"))
            continue
        problem = templates.usage_problem(template, [send.channel, *send.fallback], send.purpose)
        if problem is not None:
            found.append((f"{path}.send.template", problem))
    return found


def validate(source: str, lookup: TemplateLookup) -> Journey:
    """A journey ready to be reviewed: its form, its meaning and the templates it names;
    JourneyError lists every problem with its line."""
    return load_journey(source, lambda journey: template_problems(journey, lookup))


def check_templates(conn: Connection, source: str) -> None:
    """Every send step names a template that exists and has content for each channel the
    step may use; NotReady names every step that does not, with its line."""
    try:
        validate(source, template_lookup(conn))
    except JourneyError as exc:
        try:
            journey: Journey | None = parse(source)
        except JourneyError:  # written under rules since changed: its problems say which
            journey = None
        sends = send_steps(journey) if journey is not None else []
        steps = {f"{path}.send.template": step.id for path, step in sends}
        said = []
        for problem in exc.problems:
            label = steps.get(f"$.{problem.path}") or problem.path.removesuffix(".send.template")
            said.append(f"step {label}: {problem.message}")
        name = journey.id if journey is not None else "the journey"
        raise NotReady(f"{name}: {'; '.join(said)}", exc.problems, name) from None


def check_segments(conn: Connection, journey: Journey) -> None:
    """The segment a journey enters on, and those its conditions read (`segment.<id>`),
    are defined; LifecycleError names the missing ones otherwise."""
    named = {journey.entry.segment} if journey.entry.segment else set()
    conditions = [*journey.entry.where]
    for instruction in compile_journey(journey, 0).instructions:
        if instruction.op == "branch":
            conditions += [c for arm in instruction.spec for c in arm]
    named |= {
        path.split(".")[1] for path in condition_paths(conditions) if path.startswith("segment.")
    }
    unknown = segments.missing(conn, named) if named else []
    if unknown:
        raise LifecycleError(
            f"{journey.id}: no segment is defined with id {', '.join(map(repr, unknown))} "
            "(define it with POST /api/segments first)",
            "unknown_segments",
            journey=journey.id,
            segments=", ".join(unknown),
        )


def entry_request(
    conn: Connection,
    journey_id: str,
    customer_ref: str,
    properties: dict[str, Any],
    idempotency_key: str,
    default_region: str,
    now: int,
) -> Event:
    """The event that enters a customer in a live `api: true` journey when the engine reads
    it. Its messageId is derived from the idempotency key, so the log stores a repeated
    request once and the engine makes one run. Raises UnknownJourney, LifecycleError (not
    live, not entered through the API), CustomerNotFound, or ValueError for properties."""
    rows = conn.execute(
        select(journey_versions.c.version, journey_versions.c.status, journey_versions.c.source)
        .where(journey_versions.c.journey_id == journey_id)
        .order_by(journey_versions.c.version.desc())
    ).all()
    if not rows:
        raise UnknownJourney(journey_id)
    live = [r for r in rows if r.status == "live"]
    if not live:
        raise LifecycleError(
            f"journey {journey_id!r} is not live (its latest version, {rows[0].version}, is "
            f"{rows[0].status}): a customer can only enter a live journey",
            "not_live",
            journey=journey_id,
            version=str(rows[0].version),
            status=rows[0].status,
        )
    entry = parse(live[0].source).entry
    if not entry.api:
        trigger = entry.event or (f"segment {entry.segment}" if entry.segment else "a date")
        raise LifecycleError(
            f"journey {journey_id!r} is entered on {trigger}, not through the API "
            "(its entry would say api: true)",
            "not_api",
            journey=journey_id,
            trigger=trigger,
        )
    if "journey_id" in properties:
        raise ValueError("properties.journey_id is set by Parcours; leave it out")
    customer_id = customers.resolve(conn, customer_ref, default_region)
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:40]
    document = {
        "type": "track",
        "event": ENTRY_REQUESTED,
        "messageId": f"journey-entry:{journey_id}:{digest}",
        "timestamp": iso(now),
        "properties": {**properties, "journey_id": journey_id},
    }
    event = parse_event(
        msgspec.json.encode(document), source="admin", received_at=now, identity_required=False
    )
    event.customer_id = customer_id
    return event


STATUS_JOB = "journeys.status"


def _announce(
    conn: Connection, journey_id: str, version: int, before: str, after: str, now: int
) -> None:
    """Tell the engine, durably and in this transaction, what the change means for the
    runs: a pause holds them, a resume releases them, archiving ends them."""
    enqueue(
        conn,
        STATUS_JOB,
        {"journey_id": journey_id, "version": version, "from": before, "to": after},
        run_at=now,
        now=now,
        queue="journeys",
    )


def publish(db: Database, source: str, editor: str, approver: str, now: int) -> Version:
    """Draft, review, approval by a second person and going live, in one call."""
    version = save_draft(db, source, editor, now)
    change_status(db, version.journey_id, version.version, "submit", editor, now)
    change_status(db, version.journey_id, version.version, "approve", approver, now)
    return change_status(db, version.journey_id, version.version, "go_live", approver, now)


def version_source(conn: Connection, journey_id: str, version: int) -> str:
    return str(
        conn.execute(
            select(journey_versions.c.source).where(
                journey_versions.c.journey_id == journey_id,
                journey_versions.c.version == version,
            )
        ).scalar_one()
    )


class RunView(msgspec.Struct, frozen=True):
    """Where one of the customer's runs stands, or why it ended."""

    run_id: int
    journey_id: str
    version: int
    key: str | None  # the entry's key (`entry.key`), when the journey has one
    state: str  # active | ended
    position: int  # the instruction the run is at
    waiting: str | None  # timer | event, while it waits
    waiting_for: str | None  # the event a wait takes
    until: str | None  # when the wait times out
    entered_at: str
    ended_at: str | None
    end_reason: str | None
    converted: bool
    control: bool  # in the control group: holds out of the journey's sends


def runs_of(conn: Connection, customer_id: int) -> list[RunView]:
    """The customer's journey runs, newest first: where each stands and why it ended."""
    rows = conn.execute(
        select(journey_runs)
        .where(journey_runs.c.customer_id == customer_id)
        .order_by(journey_runs.c.id.desc())
    ).all()
    return [
        RunView(
            run_id=r.id,
            journey_id=r.journey_id,
            version=r.version,
            key=r.run_key or None,
            state=r.state,
            position=r.pc,
            waiting=r.waiting,
            waiting_for=r.wait_event,
            until=iso(r.due_at) if r.waiting else None,
            entered_at=_time(r.entered_at),
            ended_at=iso(r.ended_at),
            end_reason=r.end_reason,
            converted=bool(r.converted),
            control=bool(r.control),
        )
        for r in rows
    ]


def parse(source: str) -> Journey:
    return load_journey(source)


class GroupCounts(msgspec.Struct, frozen=True):
    entered: int
    converted: int


class JourneyStats(msgspec.Struct, frozen=True):
    """A version's runs: entered, active, exited and converted; what happened at each step
    (step id -> outcome -> count); the treated and control groups; refused entries."""

    journey_id: str
    version: int
    entered: int
    active: int
    exited: int
    converted: int
    steps: dict[str, dict[str, int]]
    treated: GroupCounts
    control: GroupCounts
    refused: dict[str, int]  # reason -> entries refused


def stats(
    conn: Connection, journey_id: str, version: int, *, detailed: bool = False
) -> JourneyStats:
    """Per-version counts: entered, waiting now (per step), exited, converted, what
    happened at each step, the treated and control groups' entries and conversions side
    by side, and the entries refused by reason."""
    runs = conn.execute(
        select(
            journey_runs.c.state,
            journey_runs.c.converted,
            journey_runs.c.waiting,
            journey_runs.c.pc,
            journey_runs.c.control,
            func.count(),
        )
        .where(journey_runs.c.journey_id == journey_id, journey_runs.c.version == version)
        .group_by(
            journey_runs.c.state,
            journey_runs.c.converted,
            journey_runs.c.waiting,
            journey_runs.c.pc,
            journey_runs.c.control,
        )
    ).all()
    entered = sum(r[5] for r in runs)
    active = sum(r[5] for r in runs if r.state == "active")
    converted = sum(r[5] for r in runs if r.converted)
    exited = sum(r[5] for r in runs if r.state == "ended" and not r.converted)
    groups = {
        name: GroupCounts(
            entered=sum(r[5] for r in runs if bool(r.control) == control),
            converted=sum(r[5] for r in runs if bool(r.control) == control and r.converted),
        )
        for name, control in (("treated", False), ("control", True))
    }
    refused = {
        str(reason): int(count)
        for reason, count in conn.execute(
            select(journey_refusals.c.reason, func.sum(journey_refusals.c.count))
            .where(
                journey_refusals.c.journey_id == journey_id,
                journey_refusals.c.version == version,
            )
            .group_by(journey_refusals.c.reason)
            .order_by(journey_refusals.c.reason)
        ).all()
    }
    steps: dict[str, dict[str, int]] = {}
    for step_id, outcome, count in conn.execute(
        select(journey_step_visits.c.step_id, journey_step_visits.c.outcome, func.count())
        .where(
            journey_step_visits.c.journey_id == journey_id, journey_step_visits.c.version == version
        )
        .group_by(journey_step_visits.c.step_id, journey_step_visits.c.outcome)
    ).all():
        # A visit names the way a branch or split went and a hold's kind of reason
        # (`Message Held: consent`): kept `detailed` (the console's graph); the API counts
        # by decision, as it always has.
        decision = str(outcome) if detailed else str(outcome).split(": ", 1)[0]
        counted = steps.setdefault(step_id, {})
        counted[decision] = counted.get(decision, 0) + int(count)
    return JourneyStats(
        journey_id=journey_id,
        version=version,
        entered=entered,
        active=active,
        exited=exited,
        converted=converted,
        steps=steps,
        treated=groups["treated"],
        control=groups["control"],
        refused=refused,
    )


class TraceEntry(msgspec.Struct, frozen=True):
    """One decision about a customer: its name, when, and its properties (the reason, the
    step...)."""

    at: str
    event: str | None
    properties: JsonObject


def trace(conn: Connection, customer_id: int) -> list[TraceEntry]:
    """Every decision about the customer, oldest first: the event's own name, when, and its
    properties (the reason, the step...) apart, so that a property called `event` (the
    event a wait took) never hides the name of the decision."""
    rows = log_queries.own_decisions(conn, customer_id)
    return [
        TraceEntry(
            at=_time(r.occurred_at),
            event=r.name,
            properties=own_event_properties(_decode(r.payload).get("properties", {}), "system"),
        )
        for r in rows
    ]


class VersionSummary(msgspec.Struct, frozen=True):
    """A version of a journey: its status and review."""

    journey_id: str
    version: int
    status: str
    edited_by: str
    approved_by: str | None
    edited_by_key: int | None  # the admin key used, through the API
    approved_by_key: int | None
    approved_at: str | None
    updated_at: str


def versions(conn: Connection) -> list[VersionSummary]:
    """Every version of every journey, by journey and version."""
    rows = conn.execute(
        select(journey_versions).order_by(journey_versions.c.journey_id, journey_versions.c.version)
    ).all()
    return [
        VersionSummary(
            journey_id=r.journey_id,
            version=r.version,
            status=r.status,
            edited_by=r.edited_by,
            approved_by=r.approved_by,
            edited_by_key=r.edited_by_key,
            approved_by_key=r.approved_by_key,
            approved_at=iso(r.approved_at),
            updated_at=_time(r.updated_at),
        )
        for r in rows
    ]


class VersionReview(msgspec.Struct, frozen=True):
    """A version's status and review."""

    version: int
    status: str
    edited_by: str
    approved_by: str | None
    edited_by_key: int | None  # the admin key used, through the API
    approved_by_key: int | None
    approved_at: str | None
    created_at: str
    updated_at: str
    submitted_by: str | None
    submitted_at: str | None


class VersionWithSource(VersionReview, frozen=True):
    """A version's status and review, and its YAML as written."""

    source: str


class JourneyView(msgspec.Struct, frozen=True):
    """A journey read back: its versions (oldest first), which one is live, and the latest
    with its YAML."""

    journey_id: str
    live_version: int | None
    latest: VersionWithSource
    versions: list[VersionReview]


class VersionView(msgspec.Struct, frozen=True):
    """One version of a journey: its status and review, and its YAML as written."""

    journey_id: str
    version: int
    status: str
    edited_by: str
    approved_by: str | None
    edited_by_key: int | None
    approved_by_key: int | None
    approved_at: str | None
    created_at: str
    updated_at: str
    submitted_by: str | None
    submitted_at: str | None
    source: str
    approved_diff: str | None  # what the approver approved: the diff from the live version


def _review(row: Any) -> VersionReview:
    return VersionReview(
        version=row.version,
        status=row.status,
        edited_by=row.edited_by,
        approved_by=row.approved_by,
        edited_by_key=row.edited_by_key,
        approved_by_key=row.approved_by_key,
        approved_at=iso(row.approved_at),
        created_at=_time(row.created_at),
        updated_at=_time(row.updated_at),
        submitted_by=row.submitted_by,
        submitted_at=iso(row.submitted_at),
    )


def journey_view(conn: Connection, journey_id: str) -> JourneyView:
    """A journey read back: every version with its status and review (oldest first), which
    one is live, and the latest version's YAML as written. Raises UnknownJourney."""
    rows = conn.execute(
        select(journey_versions)
        .where(journey_versions.c.journey_id == journey_id)
        .order_by(journey_versions.c.version)
    ).all()
    if not rows:
        raise UnknownJourney(journey_id)
    live = [r.version for r in rows if r.status == "live"]
    latest = rows[-1]
    return JourneyView(
        journey_id=journey_id,
        live_version=live[-1] if live else None,
        latest=VersionWithSource(**msgspec.structs.asdict(_review(latest)), source=latest.source),
        versions=[_review(r) for r in rows],
    )


def version_view(conn: Connection, journey_id: str, version: int) -> VersionView:
    """One version: its YAML as written, status and review. Raises UnknownJourney, or
    LookupError naming the versions there are."""
    rows = conn.execute(
        select(journey_versions)
        .where(journey_versions.c.journey_id == journey_id)
        .order_by(journey_versions.c.version)
    ).all()
    if not rows:
        raise UnknownJourney(journey_id)
    for row in rows:
        if row.version == version:
            review = msgspec.structs.asdict(_review(row))
            return VersionView(
                journey_id=journey_id, **review, source=row.source, approved_diff=row.approved_diff
            )
    raise LookupError(
        f"journey {journey_id!r} has no version {version} (it has 1 to {rows[-1].version})"
    )


def _time(ms: int) -> str:
    """A time the row always has, as the API shows it."""
    shown = iso(ms)
    assert shown is not None
    return shown
