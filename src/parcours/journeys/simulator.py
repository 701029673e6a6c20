"""The journey simulator: the real engine on a simulated clock, in a scratch database.

It sends nothing: message intents are written to the scratch outbox and shown as "would
send". A script says which events the customer does and when; the customer may start as
a copy of a real profile (their whole event history is replayed into the scratch database,
old enough never to enter a journey).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import yaml
from sqlalchemy import text

from parcours.ingest.model import Event, EventError, parse_event
from parcours.journeys import api as journeys_api
from parcours.journeys.definition import load_journey, parse_duration
from parcours.messaging import templates as message_templates
from parcours.runtime.clock import SimulatedClock, from_ms, iso, parse_iso
from parcours.runtime.metrics import not_counted
from parcours.runtime.queue import next_run_at
from parcours.runtime.settings import Settings

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
SIM_USER = "simulated-customer"


class ScriptError(ValueError):
    """A simulation script that cannot be run; the message says where and why."""


@dataclass(frozen=True)
class TimelineEntry:
    at: int
    what: str


def simulate(
    journey_source: str,
    script: list[dict[str, Any]],
    *,
    start: int,
    days: int = 30,
    history: list[dict[str, Any]] | None = None,
    default_region: str = "FR",
    brand_templates: dict[str, Any] | None = None,
) -> list[TimelineEntry]:
    """Run the journey against the scripted events; return what happened, in order. The
    brand's own message templates (id -> content) come along into the scratch database."""
    from parcours.services import Services

    load_journey(journey_source)  # a clear error before anything else
    # What the simulated customer does is not the brand's: nothing of it is counted in the
    # metrics (this thread, and the scratch writer made in it).
    with tempfile.TemporaryDirectory(prefix="parcours-sim-") as scratch, not_counted():
        clock = SimulatedClock(start)
        settings = Settings(data_dir=Path(scratch), default_region=default_region)
        services = Services.open(settings, clock=clock)
        try:
            if brand_templates:
                with services.db.write() as conn:
                    for template_id, content in brand_templates.items():
                        message_templates.save(conn, template_id, content, "simulator", start)
            if history:
                services.writer.append_sync([_history_event(doc, start) for doc in history])
            journeys_api.publish(
                services.db, journey_source, "simulator", "simulator review", start
            )
            items = sorted(_script_items(script, start), key=lambda item: item[0])
            for at, document in items:
                _run_until(services, clock, at)
                services.writer.append_sync([_scripted_event(document, at)])
                services.worker.run_due()
            _run_until(services, clock, start + days * 86_400_000)
            return _timeline(services)
        finally:
            services.close()


def _run_until(services: Any, clock: SimulatedClock, end: int) -> None:
    """Advance the clock to `end`, jumping from one due job to the next."""
    services.worker.run_due()
    while True:
        with services.db.read() as conn:
            upcoming = next_run_at(conn, services.worker.queues)
        if upcoming is None or upcoming > end:
            break
        clock.set(from_ms(max(int(upcoming), clock.now_ms())))
        services.worker.run_due()
    clock.set(from_ms(max(end, clock.now_ms())))


def _script_items(script: list[dict[str, Any]], start: int) -> list[tuple[int, dict[str, Any]]]:
    items: list[tuple[int, dict[str, Any]]] = []
    for number, item in enumerate(script, 1):
        if not isinstance(item, dict) or "event" not in item:
            raise ScriptError(
                f"item {number}: needs `event` (a name) and optionally `at` and `properties`"
            )
        at = item.get("at", "+0s")
        try:
            moment = _moment(str(at), start)
        except ValueError as exc:
            raise ScriptError(f"item {number}: at: {exc}") from None
        document = {
            "type": item.get("type", "track"),
            "event": item["event"],
            "properties": item.get("properties", {}),
            "traits": item.get("traits", {}),
            "context": item.get("context", {}),
        }
        items.append((moment, document))
    return items


def _moment(at: str, start: int) -> int:
    """`+2h`, `+1d` from the start, or an ISO 8601 time."""
    if at.startswith("+"):
        return start + parse_duration(at[1:]).seconds * 1000
    try:
        return parse_iso(at)
    except ValueError:
        raise ValueError(f"{at!r} is neither +DURATION nor an ISO 8601 time") from None


def _scripted_event(document: dict[str, Any], at: int) -> Event:
    body = {**document, "userId": SIM_USER, "timestamp": iso(at)}
    if body["type"] != "track":
        body.pop("event", None)
    try:
        return parse_event(_encode(body), source="simulator", received_at=at)
    except EventError as exc:
        raise ScriptError(f"event {document.get('event')!r}: {exc}") from None


def _history_event(document: dict[str, Any], start: int) -> Event:
    """A past event of the real customer, re-addressed to the simulated one."""
    body = {k: v for k, v in document.items() if k not in ("seq", "receivedAt", "source")}
    body["userId"] = SIM_USER
    body.pop("anonymousId", None)
    body["timestamp"] = body.get("occurredAt") or iso(start - 86_400_000 * 365)
    body.pop("occurredAt", None)
    return parse_event(
        _encode(body), source="simulator-history", received_at=start, identity_required=False
    )


_SAYINGS = {
    "Journey Entered": lambda p: f"entered (trigger: {p.get('trigger')})",
    "Journey Waiting": lambda p: (
        f"waits for {p['for']} until {iso(p['until'])}"
        if "for" in p
        else f"waits until {iso(p['until'])}"
    ),
    "Journey Event Received": lambda p: f"{p.get('event')} arrived: goes on",
    "Journey Wait Timed Out": lambda p: f"no {p.get('event')} in time: timeout path",
    "Journey Branched": lambda p: f"branched at {p.get('step')}: arm {p.get('arm')}",
    "Journey Split": lambda p: f"split at {p.get('step')}: path {p.get('path')}",
    "Message Queued": lambda p: (
        f"would send {p.get('template')} on {p.get('channel')} ({p.get('purpose')})"
    ),
    "Message Held": lambda p: f"held back {p.get('template')}: {p.get('reason')}",
    "Journey Exited": lambda p: f"exited: {p.get('reason')}",
    "Journey Held": lambda p: f"held where it stands: {p.get('reason')}",
    "Task Created": lambda p: f"task for a person: {p.get('title')}",
}


def _timeline(services: Any) -> list[TimelineEntry]:
    with services.db.read() as conn:
        rows = conn.execute(
            text(
                "SELECT occurred_at, name, payload, source FROM events "
                "WHERE source IN ('system', 'journey') ORDER BY seq"
            )
        ).all()
    entries: list[TimelineEntry] = []
    for row in rows:
        properties = _decode(row.payload).get("properties", {})
        say = _SAYINGS.get(row.name)
        if say is not None:
            entries.append(TimelineEntry(row.occurred_at, say(properties)))
        elif row.source == "journey":
            entries.append(
                TimelineEntry(row.occurred_at, f"emits {row.name or 'a profile update'}")
            )
    return entries


def load_script(text_value: str) -> list[dict[str, Any]]:
    try:
        document = yaml.safe_load(text_value)
    except yaml.YAMLError as exc:
        raise ScriptError(f"not valid YAML: {exc}") from None
    if isinstance(document, dict):
        document = document.get("events")
    if not isinstance(document, list):
        raise ScriptError("a script is a list of events (or a mapping with an `events` list)")
    return document


def format_timeline(entries: list[TimelineEntry], start: int) -> str:
    lines = []
    for entry in entries:
        offset = timedelta(milliseconds=entry.at - start)
        lines.append(f"{iso(entry.at)}  (+{_human(offset)})  {entry.what}")
    return "\n".join(lines)


def _human(offset: timedelta) -> str:
    seconds = int(offset.total_seconds())
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    return (f"{days}d" if days else "") + f"{hours:02d}:{minutes:02d}"
