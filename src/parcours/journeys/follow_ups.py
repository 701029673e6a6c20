"""What the journeys made of some triggering events (the console's Carts page: each
abandoned cart's `Cart Abandoned`): the runs each entered, the messages each run wrote and
how far they got, those held back with their reason, and why an entry was refused, read
in a few statements for a whole page of events, never one per event."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import msgspec
from sqlalchemy import Connection, case, select

from parcours.journeys.entries import REFUSED
from parcours.journeys.graph import HELD
from parcours.journeys.program import entry_event
from parcours.journeys.tables import journey_runs, journey_versions
from parcours.journeys.versions import parse
from parcours.log import queries as log_queries
from parcours.messaging import RunMessage, messages_of_runs

_decode = msgspec.json.Decoder().decode


class FollowUpMessage(msgspec.Struct, frozen=True):
    """A message of a run: written to the outbox (`outbox_id`), or held back before it was
    (`state` held, with the reason, and when it is tried again if it waits)."""

    step: str | None
    channel: str
    template: str
    state: str  # pending | sending | sent | failed | cancelled | held
    status: str | None  # the furthest feedback: sent, delivered, opened, clicked...
    at: int  # sent, else written, else held
    outbox_id: int | None  # None: held before it was written
    reason: str | None  # why it was held, cancelled or failed (English: messaging.reasons)
    until: int | None = None  # a held message's next try


class FollowUp(msgspec.Struct, frozen=True):
    """A journey a triggering event entered (`run_id`), or refused to (`state` refused,
    with the reason)."""

    trigger_message_id: str
    journey_id: str
    run_id: int | None
    state: str  # active | ended | refused
    at: int  # entered, or refused
    ended_at: int | None
    end_reason: str | None  # why it ended, or why the entry was refused
    converted: bool
    control: bool  # in the control group: sent nothing, by design
    messages: tuple[FollowUpMessage, ...]


class FollowUps(msgspec.Struct, frozen=True):
    """What each triggering event led to (by its message id; an event that led nowhere is
    left out), and the journeys live now that the event's name enters."""

    by_trigger: dict[str, tuple[FollowUp, ...]]
    live: tuple[str, ...]


# A live version's YAML -> the event that enters it, parsed once (the text is the key: two
# databases may hold versions of the same number that differ).
_TRIGGERS: dict[str, str | None] = {}
_LOCK = threading.Lock()
_KEPT = 256


def _entered_by(source: str) -> str | None:
    with _LOCK:
        if source in _TRIGGERS:
            return _TRIGGERS[source]
    try:
        trigger = entry_event(parse(source))
    except Exception:  # a version that no longer parses enters nobody
        trigger = None
    with _LOCK:
        if len(_TRIGGERS) >= _KEPT:
            _TRIGGERS.clear()
        _TRIGGERS[source] = trigger
    return trigger


def follow_ups(conn: Connection, event: str, triggers: Sequence[tuple[int, str, int]]) -> FollowUps:
    """What these events named `event` (each its customer, message id and time) led to.
    Four statements for any number: the journeys' versions (their ids, and the live ones'
    definitions), the runs they entered (by the index of journey and entry message), the
    runs' messages (messaging: by the customers' index of creation times), and the held
    messages and refused entries of the customers since the first event (the log)."""
    versions = conn.execute(
        select(
            journey_versions.c.journey_id,
            journey_versions.c.status,
            case((journey_versions.c.status == "live", journey_versions.c.source)).label("source"),
        )
    ).all()
    live = sorted(
        {r.journey_id for r in versions if r.status == "live" and _entered_by(r.source) == event}
    )
    if not triggers:
        return FollowUps({}, tuple(live))
    journey_ids = sorted({r.journey_id for r in versions})
    message_ids = sorted({message_id for _, message_id, _ in triggers})
    customer_ids = sorted({customer for customer, _, _ in triggers})
    since = min(at for _, _, at in triggers)
    runs = (
        conn.execute(
            select(journey_runs)
            .where(
                journey_runs.c.journey_id.in_(journey_ids),
                journey_runs.c.entry_message_id.in_(message_ids),
            )
            .order_by(journey_runs.c.id)
        ).all()
        if journey_ids
        else []
    )
    run_ids = [int(r.id) for r in runs]
    written = messages_of_runs(conn, sorted({int(r.customer_id) for r in runs}), run_ids, since)
    by_run: dict[int, list[FollowUpMessage]] = {}
    steps_written: set[tuple[int, str | None]] = set()
    for m in written:
        by_run.setdefault(m.run_id, []).append(_written(m))
        steps_written.add((m.run_id, m.step_id))
    held: dict[tuple[int, str | None], FollowUpMessage] = {}
    refused: dict[str, list[FollowUp]] = {}
    wanted_runs, wanted_triggers = set(run_ids), set(message_ids)
    for logged in log_queries.named_since(conn, customer_ids, [HELD, REFUSED], since):
        properties = _decode(logged.payload).get("properties") or {}
        if logged.name == REFUSED:
            trigger = properties.get("trigger_message_id")
            if trigger in wanted_triggers:
                refused.setdefault(str(trigger), []).append(
                    FollowUp(
                        trigger_message_id=str(trigger),
                        journey_id=str(properties.get("journey_id") or ""),
                        run_id=None,
                        state="refused",
                        at=logged.occurred_at,
                        ended_at=None,
                        end_reason=_text(properties.get("reason")),
                        converted=False,
                        control=False,
                        messages=(),
                    )
                )
            continue
        run_id = properties.get("run_id")
        # A message cancelled once written says so in its outbox row.
        if run_id not in wanted_runs or properties.get("message_id"):
            continue
        step = _text(properties.get("step"))
        if (run_id, step) in steps_written:
            continue  # held, then sent when its moment came
        until = properties.get("until")
        held[(run_id, step)] = FollowUpMessage(  # the latest of a step's holds
            step=step,
            channel=str(properties.get("channel") or ""),
            template=str(properties.get("template") or ""),
            state="held",
            status=None,
            at=logged.occurred_at,
            outbox_id=None,
            reason=_text(properties.get("reason")),
            until=until
            if isinstance(until, int) and properties.get("outcome") == "deferred"
            else None,
        )
    for (run_id, _), message in held.items():
        by_run.setdefault(run_id, []).append(message)
    by_trigger: dict[str, list[FollowUp]] = {}
    for r in runs:
        messages = sorted(by_run.get(int(r.id), []), key=lambda m: m.at)
        by_trigger.setdefault(r.entry_message_id, []).append(
            FollowUp(
                trigger_message_id=r.entry_message_id,
                journey_id=r.journey_id,
                run_id=int(r.id),
                state=r.state,
                at=int(r.entered_at),
                ended_at=r.ended_at,
                end_reason=r.end_reason,
                converted=bool(r.converted),
                control=bool(r.control),
                messages=tuple(messages),
            )
        )
    for trigger, found in refused.items():
        by_trigger.setdefault(trigger, []).extend(found)
    return FollowUps({trigger: tuple(found) for trigger, found in by_trigger.items()}, tuple(live))


def _written(m: RunMessage) -> FollowUpMessage:
    return FollowUpMessage(
        step=m.step_id,
        channel=m.channel,
        template=m.template,
        state=m.state,
        status=m.status,
        at=m.sent_at or m.created_at,
        outbox_id=m.outbox_id,
        reason=m.error if m.state in ("cancelled", "failed") else None,
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


__all__ = ["FollowUp", "FollowUpMessage", "FollowUps", "follow_ups"]
