"""Who enters a journey: an entry trigger checked against the entry's key, `where`,
lateness and re-entry rules, the run made and its first steps run at once; or the
refusal recorded with its reason. Date-trait entries (a birthday, a renewal) are
scheduled per customer from the trait, and scanned for everyone when a journey goes live."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from parcours.customers import profiles as customers
from parcours.journeys import store
from parcours.journeys.definition import Entry, Journey, WaitUntil, parse_duration
from parcours.journeys.journal import Journal, system_event
from parcours.journeys.program import Program, entry_event
from parcours.journeys.programs import Programs
from parcours.journeys.runner import QUEUE, Runner
from parcours.journeys.runs import Run
from parcours.journeys.times import trait_moment
from parcours.runtime.conditions import matches, normalise_key, resolve_path, uses_root
from parcours.runtime.queue import cancel, enqueue
from parcours.segments import membership_flags

DATE_ENTRY = "journeys.date_entry"
DATE_SCAN = "journeys.date_scan"
SCAN_CHUNK = 500
REFUSED = "Journey Entry Refused"
DUPLICATE = "duplicate"  # the trigger delivered again: no run, and no refusal either


class Entries:
    def __init__(self, journal: Journal, programs: Programs, runner: Runner) -> None:
        self.journal = journal
        self.programs = programs
        self.runner = runner

    def try_enter(
        self,
        conn: Connection,
        program: Program,
        customer: int,
        message_id: str,
        occurred_at: int,
        event: dict[str, Any],
        now: int,
        *,
        paused: bool = False,
    ) -> None:
        """Enter the customer on this trigger, or record why not (in their trace and the
        stats): the trigger too old, the journey paused, already entered, re-entry too soon,
        an active run for this key. A duplicate delivery of the trigger is no refusal."""
        entry = program.journey.entry
        key = ""
        if entry.key:
            value = normalise_key(resolve_path(entry.key, {"event": event}))
            if value is None:
                self.refuse(conn, program, customer, message_id, event, f"no {entry.key}", now)
                return
            key = value
        if entry.where and not self._where_holds(conn, entry, customer, event):
            return
        refused = self._refusal(conn, program, customer, message_id, key, occurred_at, now, paused)
        if refused == DUPLICATE:
            return
        if refused is not None:
            self.refuse(conn, program, customer, message_id, event, refused, now)
            return
        self._enter(conn, program, customer, key, message_id, occurred_at, event, now)

    def _where_holds(
        self, conn: Connection, entry: Entry, customer: int, event: dict[str, Any]
    ) -> bool:
        """The entry's `where`: the profile and memberships are read only when needed."""
        scope = {"event": event, "entry": event, "profile": self.journal.profile(conn, customer)}
        if uses_root(entry.where, "segment"):
            scope["segment"] = membership_flags(conn, customer)
        return matches(entry.where, scope)

    def _refusal(
        self,
        conn: Connection,
        program: Program,
        customer: int,
        message_id: str,
        key: str,
        occurred_at: int,
        now: int,
        paused: bool,
    ) -> str | None:
        lateness = parse_duration(program.journey.entry.lateness).seconds * 1000
        if now - occurred_at > lateness:
            return "trigger too old"  # history: importing old events never sends anything
        if paused:
            return "journey paused"
        return entered_already(
            store.entries_of(conn, program.journey.id, customer),
            program.journey,
            message_id,
            key,
            occurred_at,
        )

    def _enter(
        self,
        conn: Connection,
        program: Program,
        customer: int,
        key: str,
        message_id: str,
        occurred_at: int,
        event: dict[str, Any],
        now: int,
    ) -> None:
        journey = program.journey
        run_id = store.insert_run(
            conn, journey.id, program.version, customer, key, occurred_at, message_id, event
        )
        run = Run(
            id=run_id,
            journey_id=journey.id,
            version=program.version,
            customer_id=customer,
            run_key=key,
            pc=0,
            waiting=None,
            wait_event=None,
            wait_key=None,
            due_at=None,
            entered_at=occurred_at,
            entry_event=event,
            entry_message_id=message_id,
            has_job=False,
        )
        entered = {"trigger": entry_event(journey), "entry_message_id": message_id}
        self.journal.log(conn, run, "Journey Entered", now, entered)
        # The first steps run now, in the reaction's transaction: no second job, no wait.
        # The run's time starts at the entry event's own (corrected) time: a wait counts
        # from it, and one already past when the event is processed goes on at once.
        self.runner.advance(conn, run, now, occurred_at)

    def refuse(
        self,
        conn: Connection,
        program: Program,
        customer: int,
        message_id: str,
        event: dict[str, Any],
        reason: str,
        now: int,
    ) -> None:
        """An entry refused: a `Journey Entry Refused` line in the customer's trace and a
        count for the stats, once per customer, journey and reason in one reaction (a
        history import of a thousand old triggers writes one line, counting them)."""
        refusals = self.journal.pending().refusals
        counted = (program.journey.id, program.version, customer, reason)
        seen = refusals.get(counted)
        if seen is not None:
            seen[0] += 1
            return
        refusals[counted] = [1, now]
        properties = {
            "journey_id": program.journey.id,
            "version": program.version,
            "reason": reason,
            "trigger": event.get("event"),
            "trigger_message_id": message_id,
        }
        refusal_id = f"journey-refused:{program.journey.id}:{message_id}:{now}"
        document = {
            "type": "track",
            "event": REFUSED,
            "properties": properties,
            "messageId": refusal_id,
        }
        line = system_event(customer, refusal_id, "track", REFUSED, properties, {}, now, document)
        self.journal.add(conn, line, now)

    # ---- entries on a date held by a trait (a birthday, a subscription's renewal) ----------

    def date_scan(self, conn: Connection, payload: dict[str, Any], now: int) -> None:
        """A date-trait journey went live: schedule the entry of every customer holding the
        trait, a chunk of customers per job so that no transaction grows with the base."""
        program = self.programs.live_one(conn, payload["journey_id"])
        if program is None or program.version != int(payload["version"]):
            return
        ids = customers.ids_after(conn, int(payload["after"]), SCAN_CHUNK)
        for customer in ids:
            self.schedule_date_entry(conn, program, customer, now)
        if len(ids) == SCAN_CHUNK:
            next_chunk = {**payload, "after": ids[-1]}
            enqueue(conn, DATE_SCAN, next_chunk, run_at=now, now=now, queue=QUEUE)

    def schedule_date_entry(
        self, conn: Connection, program: Program, customer: int, now: int
    ) -> None:
        """The customer's next entry moment from the trait (plus offset, at `at` local
        time, each year with `yearly`); none when the trait is missing or past."""
        entry = program.journey.entry
        key = f"date-entry:{program.journey.id}:{customer}"
        profile = self.journal.profile(conn, customer)
        due, _ = trait_moment(profile, date_spec(entry), now, self.runner.zone(conn))
        if due is None or due < now:
            cancel(conn, key)
            return
        enqueue(
            conn,
            DATE_ENTRY,
            {"journey_id": program.journey.id, "customer": customer, "due": due},
            run_at=due,
            now=now,
            queue=QUEUE,
            unique_key=key,
            customer_id=customer,
        )

    def date_entry(self, conn: Connection, payload: dict[str, Any], now: int) -> None:
        """A customer's date came: enter them (or say why not), and schedule next year's."""
        program = self.programs.live_one(conn, payload["journey_id"])
        paused = False
        if program is None:
            held = [p for p in self.programs.paused(conn) if p.journey.id == payload["journey_id"]]
            if not held:
                return
            program, paused = held[0], True  # no entry; the customer's trace says why
        customer, due = int(payload["customer"]), int(payload["due"])
        entry = program.journey.entry
        assert entry.date_trait is not None
        value = self.journal.profile(conn, customer).get("traits", {}).get(entry.date_trait)
        event = {
            "type": "track",
            "event": "Date Reached",
            "properties": {"trait": entry.date_trait, "date": value, "occurrence": due},
        }
        message_id = f"date:{program.journey.id}:{customer}:{due}"
        self.try_enter(conn, program, customer, message_id, due, event, now, paused=paused)
        if entry.yearly and not paused:
            self.schedule_date_entry(conn, program, customer, due + 1)


def entered_already(
    rows: list[Any], journey: Journey, message_id: str, key: str, occurred_at: int
) -> str | None:
    """Why this trigger makes no run, given the customer's runs of the journey: DUPLICATE
    (the same event delivered again, or a retried reaction), "active run exists" (for this
    key), "already entered" (`reentry: once`), "re-entry too soon" (within `period` of the
    last entry, by event time); None when it enters."""
    if any(row.entry_message_id == message_id for row in rows):
        return DUPLICATE
    reentry = journey.entry.reentry
    period = parse_duration(journey.entry.period).seconds * 1000 if journey.entry.period else 0
    if any(row.state == "active" and row.run_key == key for row in rows):
        return "active run exists"
    if rows and reentry == "once":
        return "already entered"
    if reentry == "once_per_period" and any(row.entered_at > occurred_at - period for row in rows):
        return "re-entry too soon"
    return None


def date_spec(entry: Entry) -> WaitUntil:
    """A date-trait entry read as the wait it amounts to."""
    return WaitUntil(trait=entry.date_trait, offset=entry.offset, at=entry.at, yearly=entry.yearly)
