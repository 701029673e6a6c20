"""The journey simulator: the real engine on a simulated clock, in a scratch database.

It has no side effects. It runs in a temporary database of its own, with the sandbox
provider on every channel (message intents are shown as "would send", none leaves), its
webhook steps are recorded as the call they would make and never made (the delivery job
is handled by the simulator, so the real sender is never reached and no signing key is
read), and nothing is written to the brand's database: what it takes from the brand (its
templates, segment definitions, policies file, region, time zone and sector, a real
customer's event history) is read and copied in.

A script says what the customers do and when (docs/journeys.md, "Simulating a journey"):
several customers may act in one script, and a segment's membership may be scripted
(`enters: vip`, `leaves: vip`), for journeys entered on a segment or branching on one.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import msgspec
from sqlalchemy import Connection

from parcours import brand
from parcours.customers import profiles as customers
from parcours.journeys import versions as journeys_api
from parcours.journeys import webhooks
from parcours.journeys.definition import load_journey, parse_duration
from parcours.log import Appender, Event
from parcours.log import queries as log_queries
from parcours.messaging import outbox_page
from parcours.messaging import templates as message_templates
from parcours.runtime.clock import Clock, SimulatedClock, from_ms, iso, parse_iso
from parcours.runtime.counting import not_counted
from parcours.runtime.db import Database
from parcours.runtime.definitions import DefinitionError, load_yaml
from parcours.runtime.documents import JsonObject
from parcours.runtime.queue import Job, Worker, next_run_at
from parcours.runtime.settings import Settings
from parcours.segments import catalog as segments
from parcours.tracking import EVENT_TYPES, EventError, parse_event

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
SIM_USER = "simulated-customer"
MAX_DAYS = 366  # how far a simulation may run after its last scripted event
MAX_MESSAGES = 10_000  # the simulated messages whose content the timeline shows
# The trait a scripted segment's stand-in definition reads: the segments the script says
# the customer is in. It exists only in the scratch database.
SCRIPTED_SEGMENTS = "parcours_simulated_segments"
_ITEM_KEYS = frozenset(
    {"at", "customer", "type", "event", "properties", "traits", "context", "enters", "leaves"}
)


class ScriptError(ValueError):
    """A simulation script that cannot be run; the message says where and why (English,
    as the CLI and API say it), and, when known, which item (from 1) and which line of the
    script's YAML; `code` and `values` say why for the console to say it in the viewer's
    language (None: only the English is known, such as a YAML parser's)."""

    def __init__(
        self,
        message: str,
        *,
        item: int | None = None,
        line: int | None = None,
        code: str | None = None,
        values: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.item = item
        self.line = line
        self.code = code
        self.values = values or {}


class Scratch(Protocol):
    """A whole Parcours on a scratch database: what the composition root opens for a
    simulation (the simulator runs the real engine, writer and worker on it)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def db(self) -> Database: ...

    @property
    def worker(self) -> Worker: ...

    @property
    def writer(self) -> Appender: ...

    def close(self) -> None: ...


# Opens a scratch Parcours from its settings, on the simulation's clock.
OpenScratch = Callable[[Settings, Clock], Scratch]


class SimulatedCall(msgspec.Struct, frozen=True):
    """The call a webhook step would have made: never made, and never signed."""

    method: str
    url: str
    headers: dict[str, str]
    body: JsonObject  # the envelope the receiver would get (journeys/webhooks.py)


@dataclass(frozen=True)
class TimelineEntry:
    at: int
    what: str
    customer: str = SIM_USER  # the script's name for the customer it is about
    call: SimulatedCall | None = None  # a webhook step: the call it would have made
    decision: str | None = None  # the decision's name (Journey Waiting, Message Queued...)
    step: str | None = None  # the step it was made at
    channel: str | None = None  # a message: the channel it would go on
    message: JsonObject | None = None  # a message: its content, as the provider would get it
    # What the decision names, as the log has it (a reason, a date in ms, a template...):
    # the console says `what` from the decision and these, in the viewer's language.
    details: JsonObject = field(default_factory=dict)


@dataclass(frozen=True)
class ScriptItem:
    """One item of a simulation script, checked: at a moment (`+2h` from the start, or an
    ISO 8601 time), a customer (the script's name for them) does something (a call of
    `type`, an `event` for a track) or enters or leaves a segment."""

    at: str = "+0s"
    customer: str = SIM_USER
    type: str = "track"
    event: object = None  # as written: the tracking parser checks it with the whole call
    properties: JsonObject = field(default_factory=dict)
    traits: JsonObject = field(default_factory=dict)
    context: JsonObject = field(default_factory=dict)
    enters: str | None = None
    leaves: str | None = None
    line: int | None = None  # where it is written in the script's YAML, when it was


@dataclass
class _Item:
    at: int
    customer: str
    document: dict[str, Any]
    enters: str | None = None
    leaves: str | None = None
    number: int = 0
    line: int | None = None


@dataclass
class _Recorder:
    """Takes the webhook delivery jobs of the scratch worker: each is the call the step
    would make, kept to be shown, and never made."""

    calls: dict[str, SimulatedCall] = field(default_factory=dict)

    def deliver(self, conn: Connection, job: Job) -> None:
        payload = job.payload
        secret = payload.get("secret") or payload.get("secret_env")
        headers = {
            "Content-Type": "application/json",
            webhooks.DELIVERY_HEADER: str(payload.get("delivery_id")),
        }
        if secret:
            headers[webhooks.SIGNATURE_HEADER] = f"t=<unix time>,v1=<signed with key {secret!r}>"
        self.calls[str(payload.get("delivery_id"))] = SimulatedCall(
            "POST", payload["url"], headers, payload["body"]
        )


def simulate(
    journey_source: str,
    script: Sequence[ScriptItem | JsonObject],
    *,
    open_scratch: OpenScratch,
    start: int,
    days: int = 30,
    history: list[dict[str, Any]] | None = None,
    default_region: str = "FR",
    brand_templates: dict[str, Any] | None = None,
    brand_segments: dict[str, str] | None = None,
    brand_settings: Settings | None = None,
) -> list[TimelineEntry]:
    """Run the journey against the scripted events; return what happened, in order.

    What comes from the brand is copied into the scratch database: its message templates
    (id -> content), its segment definitions (id -> source), and from its settings the
    policies file, region, time zone, sector and brand; `history` (a real customer's
    events) becomes the history of the script's default customer. `open_scratch`: the
    composition root's way of opening the scratch Parcours (`Services.open`)."""
    load_journey(journey_source)  # a clear error before anything else
    if not 0 <= days <= MAX_DAYS:
        raise ScriptError(f"days must be between 0 and {MAX_DAYS}, got {days}")
    items = _script_items(script, start)
    scripted = {name for item in items for name in (item.enters, item.leaves) if name}
    # What the simulated customers do is not the brand's: nothing of it is counted in the
    # metrics (this thread, and the scratch writer made in it).
    with tempfile.TemporaryDirectory(prefix="parcours-sim-") as scratch, not_counted():
        clock = SimulatedClock(start)
        settings = _scratch_settings(Path(scratch), brand_settings, default_region)
        services = open_scratch(settings, clock)
        recorder = _Recorder()
        # No webhook step reaches the real sender: no call, no signing key read.
        services.worker.register(webhooks.DELIVER, recorder.deliver)
        try:
            if brand_templates:
                with services.db.write() as conn:
                    for template_id, content in brand_templates.items():
                        message_templates.save(conn, template_id, content, "simulator", start)
            for segment_id, source in sorted((brand_segments or {}).items()):
                if segment_id not in scripted:
                    segments.save(services.db, source, "simulator", start, mode="create")
            for segment_id in sorted(scripted):
                try:
                    segments.save(
                        services.db, _stand_in(segment_id), "simulator", start, mode="create"
                    )
                except DefinitionError as exc:
                    raise ScriptError(f"segment {segment_id!r}: {exc}") from None
            services.worker.run_due()  # the segments' evaluations, of nobody yet
            if history:
                services.writer.append_sync([_history_event(doc, start) for doc in history])
            journeys_api.publish(
                services.db, journey_source, "simulator", "simulator review", start
            )
            memberships: dict[str, set[str]] = {}
            for item in items:
                _run_until(services, clock, item.at)
                services.writer.append_sync([_scripted_event(item, memberships)])
                services.worker.run_due()
            _run_until(services, clock, start + days * 86_400_000)
            return _timeline(services, {item.customer for item in items} | {SIM_USER}, recorder)
        finally:
            services.close()


def brand_segments(conn: Connection) -> dict[str, str]:
    """The brand's segment definitions (id -> source), for a simulation to copy."""
    return segments.sources(conn)


def brand_in_force(conn: Connection, settings: Settings) -> Settings:
    """`settings` with the brand's time zone as the console's Settings page set it (when
    it did): a simulation waits for local times as the brand's real runs would."""
    stored = brand.send_time(conn)
    if stored is None or not stored.timezone:
        return settings
    return replace(settings, brand_timezone=stored.timezone)


def _scratch_settings(scratch: Path, brand: Settings | None, default_region: str) -> Settings:
    """Settings for the scratch run: the brand's rules, none of its providers, keys,
    webhook keys or database. Every channel is the sandbox."""
    if brand is None:
        return Settings(data_dir=scratch, default_region=default_region)
    return Settings(
        data_dir=scratch,
        default_region=brand.default_region,
        policies_file=brand.policies_file,
        brand_timezone=brand.brand_timezone,
        brand_name=brand.brand_name,
        brand_url=brand.brand_url,
        brand_locale=brand.brand_locale,
        sector=brand.sector,
    )


def _stand_in(segment_id: str) -> str:
    """A scripted segment's definition in the scratch database: its members are those the
    script says are in it."""
    return (
        f"id: {segment_id}\n"
        f"name: {segment_id} (membership scripted by the simulation)\n"
        "conditions:\n"
        f"  - profile.traits.{SCRIPTED_SEGMENTS}: {{contains: {segment_id}}}\n"
    )


def _run_until(services: Scratch, clock: SimulatedClock, end: int) -> None:
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


def _script_items(script: Sequence[ScriptItem | JsonObject], start: int) -> list[_Item]:
    """The script's items, checked, in time order (items at the same time keep theirs)."""
    if not isinstance(script, list):
        raise ScriptError("a script is a list of items", code="not_list")
    items: list[_Item] = []
    for number, item in enumerate(script, 1):
        checked = item if isinstance(item, ScriptItem) else script_item(number, item)
        items.append(_item(number, checked, start))
    return sorted(items, key=lambda item: (item.at, item.number))


def script_item(number: int, item: object) -> ScriptItem:
    """The script's item `number` (from 1), checked; ScriptError says what is wrong."""
    where = f"item {number}"

    def refused(why: str, code: str, **values: str) -> ScriptError:
        return ScriptError(f"{where}: {why}", item=number, code=code, values=values)

    if not isinstance(item, dict):
        raise refused("an item is a mapping such as {at: +2h, event: ...}", "not_mapping")
    unknown = sorted(str(key) for key in set(item) - _ITEM_KEYS)
    if unknown:
        known = ", ".join(sorted(_ITEM_KEYS))
        raise refused(
            f"unknown key {unknown[0]!r} (known: {known})",
            "unknown_key",
            name=unknown[0],
            known=known,
        )
    kind = item.get("type", "track")
    if kind not in EVENT_TYPES:
        known = ", ".join(sorted(EVENT_TYPES))
        raise refused(
            f"type: {kind!r} is not one of {known}", "bad_type", type=str(kind), known=known
        )
    changes = [key for key in ("enters", "leaves") if key in item]
    if len(changes) > 1 or (changes and "event" in item):
        raise refused("say one of event, enters or leaves", "one_of")
    if not changes and kind == "track" and "event" not in item:
        raise refused(
            "needs `event` (a name), `enters` or `leaves` (a segment), or "
            "`type: identify` with traits; optionally `at`, `customer` and `properties`",
            "needs_event",
        )
    for key in changes:
        if not isinstance(item[key], str) or not segments_id_like(item[key]):
            raise refused(
                f"{key}: {item[key]!r} is not a segment id",
                "not_segment",
                name=key,
                value=str(item[key]),
            )
    customer = item.get("customer", SIM_USER)
    if not isinstance(customer, str) or not customer.strip():
        raise refused("customer: a name such as ana (text)", "bad_customer")
    for key in ("properties", "traits", "context"):
        if not isinstance(item.get(key, {}), dict):
            raise refused(f"{key}: must be a mapping", "not_a_mapping", name=key)
    return ScriptItem(
        at=str(item.get("at", "+0s")),
        customer=customer.strip(),
        type=kind,
        event=item.get("event"),
        properties=item.get("properties", {}),
        traits=item.get("traits", {}),
        context=item.get("context", {}),
        enters=item.get("enters"),
        leaves=item.get("leaves"),
    )


def _item(number: int, item: ScriptItem, start: int) -> _Item:
    """A checked item at its moment of the simulation, as the event it becomes."""
    try:
        moment = _moment(item.at, start)
    except ValueError as exc:
        raise ScriptError(
            f"item {number}: at: {exc}",
            item=number,
            line=item.line,
            code="bad_at",
            values={"at": item.at},
        ) from None
    changes = item.enters is not None or item.leaves is not None
    document = {
        "type": "identify" if changes else item.type,
        "event": item.event,
        "properties": item.properties,
        "traits": item.traits,
        "context": item.context,
    }
    return _Item(
        moment,
        item.customer,
        document,
        enters=item.enters,
        leaves=item.leaves,
        number=number,
        line=item.line,
    )


def segments_id_like(value: str) -> bool:
    return bool(value) and all(c.isalnum() or c in "-_" for c in value)


def _moment(at: str, start: int) -> int:
    """`+2h`, `+1d` from the start, or an ISO 8601 time."""
    if at.startswith("+"):
        return start + parse_duration(at[1:]).seconds * 1000
    try:
        return parse_iso(at)
    except ValueError:
        raise ValueError(f"{at!r} is neither +DURATION nor an ISO 8601 time") from None


def _scripted_event(item: _Item, memberships: dict[str, set[str]]) -> Event:
    body = {**item.document, "userId": item.customer, "timestamp": iso(item.at)}
    if item.enters or item.leaves:
        member_of = memberships.setdefault(item.customer, set())
        if item.enters:
            member_of.add(item.enters)
        if item.leaves:
            member_of.discard(item.leaves)
        body["traits"] = {**body["traits"], SCRIPTED_SEGMENTS: sorted(member_of)}
    if body["type"] != "track":
        body.pop("event", None)
    try:
        return parse_event(_encode(body), source="simulator", received_at=item.at)
    except EventError as exc:
        raise ScriptError(
            f"item {item.number} ({item.document.get('event')!r}): {exc}",
            item=item.number,
            line=item.line,
            code="bad_event",
            values={"event": str(item.document.get("event")), "problem": str(exc)},
        ) from None


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
    "Journey Entry Refused": lambda p: (
        f"not entered in {p.get('journey_id')}: {p.get('reason')} (trigger: {p.get('trigger')})"
    ),
    "Journey Waiting": lambda p: (
        f"waits for {p['for']} until {iso(p['until'])}"
        if "for" in p
        else f"waits until {iso(p['until'])}"
        + (f" ({p['time_zone']}: {p['time_zone_reason']})" if "time_zone" in p else "")
    ),
    "Journey Event Received": lambda p: f"{p.get('event')} arrived: goes on",
    "Journey Wait Timed Out": lambda p: f"no {p.get('event')} in time: timeout path",
    "Journey Wait Skipped": lambda p: f"wait skipped: {p.get('reason')}",
    "Journey Branched": lambda p: f"branched at {p.get('step')}: arm {p.get('arm')}",
    "Journey Split": lambda p: f"split at {p.get('step')}: path {p.get('path')}",
    "Message Queued": lambda p: (
        f"would send {p.get('template')} on {p.get('channel')} ({p.get('purpose')})"
    ),
    "Message Held": lambda p: f"held back {p.get('template')}: {p.get('reason')}",
    "Journey Exited": lambda p: f"exited: {p.get('reason')}",
    "Journey Converted": lambda p: f"converted: {p.get('goal')}",
    "Journey Held": lambda p: f"held where it stands: {p.get('reason')}",
    "Task Created": lambda p: f"task for a person: {p.get('title')}",
    "Segment Entered": lambda p: f"enters segment {p.get('segment')}",
    "Segment Exited": lambda p: f"leaves segment {p.get('segment')}",
}


def _timeline(services: Scratch, names: set[str], recorder: _Recorder) -> list[TimelineEntry]:
    with services.db.read() as conn:
        who = _customer_names(conn, names, services.settings.default_region)
        rows = log_queries.from_sources(conn, ("system", "journey"))
        # What each message would have been: the scratch outbox, delivered to the sandbox.
        messages = {m.idempotency_key: m for m in outbox_page(conn, MAX_MESSAGES, None)}
    entries: list[TimelineEntry] = []
    for row in rows:
        properties = _decode(row.payload).get("properties", {})
        customer = who.get(int(row.customer_id), SIM_USER) if row.customer_id else SIM_USER
        step = properties.get("step") if isinstance(properties.get("step"), str) else None
        if row.name == "Webhook Scheduled":
            call = recorder.calls.get(str(properties.get("delivery_id")))
            url = call.url if call else properties.get("url")
            what = f"would call POST {url} (nothing is sent)"
            entries.append(
                TimelineEntry(
                    row.occurred_at, what, customer, call, row.name, step=step, details={"url": url}
                )
            )
            continue
        say = _SAYINGS.get(row.name or "")
        if say is not None:
            message = messages.get(str(properties.get("idempotency_key")))
            entries.append(
                TimelineEntry(
                    row.occurred_at,
                    say(properties),
                    customer,
                    decision=row.name,
                    step=step,
                    channel=message.channel if message else None,
                    message=message.content if message else None,
                    details=properties,
                )
            )
        elif row.source == "journey":
            entries.append(
                TimelineEntry(
                    row.occurred_at,
                    f"emits {row.name or 'a profile update'}",
                    customer,
                    decision=row.name or "Profile Updated",
                    details={"emits": row.name or "Profile Updated"},
                )
            )
    return entries


class TimelineItem(msgspec.Struct, frozen=True, omit_defaults=True):
    """A timeline entry as the API shows it: when, which customer, what (English, stable);
    for a program, the decision by its log name (`Journey Waiting`, `Message Held`...),
    the step it was made at, and its details as the log has them (a reason as the English
    text messaging/reasons.py reads back to a code, a moment in ms...); and for a webhook
    step, the call it would have made (method, URL, headers, body)."""

    at: str
    customer: str
    what: str
    call: SimulatedCall | None = None
    decision: str | None = None
    step: str | None = None
    details: JsonObject | None = None


def timeline_item(entry: TimelineEntry) -> TimelineItem:
    """A timeline entry as the API shows it."""
    at = iso(entry.at)
    assert at is not None
    details = entry.details or None
    return TimelineItem(
        at, entry.customer, entry.what, entry.call, entry.decision, entry.step, details
    )


def _customer_names(conn: Connection, names: set[str], region: str) -> dict[int, str]:
    """The scratch customer id of each name the script used."""
    found: dict[int, str] = {}
    for name in sorted(names):
        try:
            found[customers.resolve(conn, name, region)] = name
        except customers.CustomerNotFound:
            continue
    return found


def load_script(text_value: str) -> list[ScriptItem]:
    """A simulation script (YAML), its items checked; ScriptError says what is wrong."""
    try:  # within the limits of every definition: no anchors, no key given twice...
        document, node = load_yaml(text_value)
    except DefinitionError as exc:
        line = exc.problems[0].line if exc.problems else None
        raise ScriptError(str(exc), line=line) from None
    if isinstance(document, dict):
        document = document.get("events")
        node = next((v for k, v in node.value if k.value == "events"), None)
    if not isinstance(document, list):
        raise ScriptError(
            "a script is a list of events (or a mapping with an `events` list)", code="not_list"
        )
    lines = [item.start_mark.line + 1 for item in node.value]
    items = []
    for number, item in enumerate(document, 1):
        try:
            checked = script_item(number, item)
        except ScriptError as exc:
            raise ScriptError(
                str(exc), item=number, line=lines[number - 1], code=exc.code, values=exc.values
            ) from None
        items.append(replace(checked, line=lines[number - 1]))
    return items


def format_timeline(entries: list[TimelineEntry], start: int) -> str:
    """One line per decision; each names its customer when the script has several."""
    several = len({entry.customer for entry in entries}) > 1
    lines = []
    for entry in entries:
        offset = timedelta(milliseconds=entry.at - start)
        who = f"[{entry.customer}] " if several else ""
        lines.append(f"{iso(entry.at)}  (+{_human(offset)})  {who}{entry.what}")
        if entry.call is not None:
            lines.append(f"    body: {_encode(entry.call.body).decode()}")
    return "\n".join(lines)


def _human(offset: timedelta) -> str:
    seconds = int(offset.total_seconds())
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    return (f"{days}d" if days else "") + f"{hours:02d}:{minutes:02d}"
