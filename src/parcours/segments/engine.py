"""Keeps memberships true: on each event, when time alone changes them, and in batch.

- The event log's reaction enqueues a `segments.evaluate` job for the customers whose
  new events or traits some segment depends on (only those segments), in the transaction
  that stored the events; a merge re-evaluates the surviving profile on every segment.
- Evaluating a customer records an entry or an exit (a membership row and a `Segment
  Entered` / `Segment Exited` event through the one door to the log) and, for segments
  over time windows, schedules a `segments.recheck` at the moment the membership would
  change by itself (one live job per customer and segment, by unique key).
- A new or changed segment is evaluated for every customer, a chunk per job
  (`segments.backfill`); its entries and exits carry `backfill: true`.

Work on one customer is serialised by an advisory lock (PostgreSQL; SQLite has one writer).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import Connection

from parcours.customers import MERGE_EVENT
from parcours.customers import profiles as customers
from parcours.log import QUIET, Event, Reactions, append_events, internal_event
from parcours.log import queries as log_queries
from parcours.runtime.clock import Clock
from parcours.runtime.db import chunks, lock_keys, select_in, sql
from parcours.runtime.queue import Job, Worker, enqueue
from parcours.segments import catalog
from parcours.segments.definition import CompiledSegment, compile_segment
from parcours.segments.evaluation import Facts, Occurrence, is_member, next_change, occurrence

CUSTOMERS_PER_JOB = 100
BACKFILL_CHUNK = 500
NO_LONGER = "conditions no longer hold"
CHANGED = "segment changed"
GONE = "customer erased"
LOCK_SPACE = 5_101  # the segments' advisory locks (runtime/db.py lock_keys)

_decode = msgspec.json.Decoder().decode


class SegmentEngine:
    def __init__(self, clock: Clock, default_region: str) -> None:
        self.clock = clock
        self.region = default_region
        self._compiled: dict[str, tuple[int, CompiledSegment]] = {}
        self._lock = threading.Lock()
        self._reactions = QUIET

    def install(self, worker: Worker, reactions: Reactions) -> None:
        worker.register(catalog.EVALUATE, self.evaluate)
        worker.register(catalog.RECHECK, self.recheck)
        worker.register(catalog.BACKFILL, self.backfill)
        reactions.react("segments", self.on_events)
        reactions.read_ahead(DEFINITIONS)
        # Entries and exits go through the same reactions, so that journeys see them.
        self._reactions = reactions

    # ---- the reaction to an append ---------------------------------------------------

    def on_events(self, conn: Connection, events: list[Event], now: int) -> None:
        """Enqueue the evaluation of each customer on the segments their events may change."""
        segments = self.segments(conn)
        if not segments:
            return
        work: dict[int, set[str]] = {}
        merged: dict[int, list[int]] = {}
        for event in events:
            customer = event.customer_id
            if customer is None:
                continue
            if event.name == MERGE_EVENT and event.source == "system":
                survivor = int(event.properties["survivor_id"])
                merged.setdefault(survivor, []).append(int(event.properties["merged_id"]))
                work.setdefault(survivor, set()).update(s.id for s in segments)
                continue
            context_traits = event.context.get("traits")
            affected = {
                s.id
                for s in segments
                if _affects(s, event.name, event.source, event.type, event.traits, context_traits)
            }
            if affected:
                work.setdefault(customer, set()).update(affected)
        items = [
            {"customer": c, "segments": sorted(ids), "merged": merged.get(c, [])}
            for c, ids in sorted(work.items())
        ]
        for part in chunks(items, CUSTOMERS_PER_JOB):
            enqueue(
                conn,
                catalog.EVALUATE,
                {"customers": list(part)},
                run_at=now,
                now=now,
                queue=catalog.QUEUE,
            )

    # ---- jobs --------------------------------------------------------------------------------

    def evaluate(self, conn: Connection, job: Job) -> None:
        items: list[dict[str, Any]] = job.payload["customers"]
        now = self.clock.now_ms()
        everyone = {int(i["customer"]) for i in items} | {
            int(m) for i in items for m in i.get("merged", [])
        }
        _serialise(conn, everyone)
        for item in items:
            for gone in item.get("merged", []):
                self._follow_merge(conn, int(item["customer"]), int(gone), now)
        by_segment: dict[str, list[int]] = {}
        for item in items:
            for segment_id in item["segments"]:
                by_segment.setdefault(segment_id, []).append(int(item["customer"]))
        known = {s.id: s for s in self.segments(conn)}
        for segment_id, ids in sorted(by_segment.items()):
            if segment_id in known:
                self.evaluate_customers(conn, known[segment_id], ids, now)

    def recheck(self, conn: Connection, job: Job) -> None:
        """The moment a member's status would change with no event has come."""
        customer = int(job.payload["customer"])
        segment = self._segment(conn, str(job.payload["segment"]))
        if segment is None:
            return
        _serialise(conn, {customer})
        self.evaluate_customers(conn, segment, [customer], self.clock.now_ms())

    def backfill(self, conn: Connection, job: Job) -> None:
        """Evaluate a chunk of every customer on a new or changed segment, then the next."""
        payload = job.payload
        segment = self._segment(conn, str(payload["segment"]))
        if segment is None or self._generation(segment.id) != int(payload["generation"]):
            return  # changed again since: a newer batch evaluation has started
        now = self.clock.now_ms()
        ids = customers.ids_after(conn, int(payload["after"]), BACKFILL_CHUNK)
        _serialise(conn, set(ids))
        self.evaluate_customers(conn, segment, ids, now, backfill_since=int(payload["since_seq"]))
        if len(ids) == BACKFILL_CHUNK:
            enqueue(
                conn,
                catalog.BACKFILL,
                {**payload, "after": ids[-1]},
                run_at=now,
                now=now,
                queue=catalog.QUEUE,
                unique_key=f"segment-backfill:{segment.id}",
            )
        else:
            sql(
                conn,
                "UPDATE segments SET evaluated_at = :now WHERE id = :id AND generation = :g",
                {"now": now, "id": segment.id, "g": int(payload["generation"])},
            )

    # ---- evaluating --------------------------------------------------------------------------

    def evaluate_customers(
        self,
        conn: Connection,
        segment: CompiledSegment,
        customer_ids: Sequence[int],
        now: int,
        *,
        backfill_since: int | None = None,
    ) -> None:
        """Enter or exit each customer as the segment says now; schedule the moment it
        would change by itself. The caller holds the customers' locks. A batch evaluation
        gives `backfill_since`, the last event when the segment was saved: its changes are
        marked `backfill` unless the customer has acted on the segment since."""
        facts = load_facts(conn, segment, customer_ids, now)
        current = {
            int(customer): int(membership)
            for customer, membership in select_in(
                conn,
                "SELECT customer_id, id FROM segment_memberships WHERE segment_id = {mark} "
                "AND exited_at IS NULL AND customer_id IN ({marks})",
                list(customer_ids),
                (segment.id,),
            )
        }
        entering: list[int] = []
        leaving: list[int] = []
        for customer in customer_ids:
            found = facts.get(customer)
            member = found is not None and is_member(segment, found, now)
            if member and customer not in current:
                entering.append(customer)
            elif not member and customer in current:
                leaving.append(customer)
            if found is not None and segment.time_dependent:
                moment = next_change(segment, found, now)
                if moment is not None:
                    enqueue(
                        conn,
                        catalog.RECHECK,
                        {"segment": segment.id, "customer": customer},
                        run_at=moment,
                        now=now,
                        queue=catalog.QUEUE,
                        unique_key=f"segment-recheck:{segment.id}:{customer}",
                        customer_id=customer,
                    )
                # Without a moment, a recheck left from an earlier state fires, finds nothing
                # to change and schedules nothing: cheaper than a delete on every evaluation.
        gone = [c for c in leaving if c not in facts]
        if gone:
            # A profile merged away keeps its stays until the merge moves them to the
            # survivor (a job after this one): the person has not left the segment.
            moved = customers.merged_away(conn, gone)
            leaving = [c for c in leaving if c not in moved]
        if not entering and not leaving:
            return
        own = set(entering + leaving)
        if backfill_since is not None:
            own = _acted_since(conn, segment, sorted(own), backfill_since)
        exits = [
            (c, current[c], GONE if c not in facts else NO_LONGER if c in own else CHANGED)
            for c in leaving
        ]
        recorded = self._enter(conn, segment.id, entering, own, now)
        recorded += self._exit(conn, segment.id, exits, own, now)
        append_events(conn, [recorded], now, self._reactions)

    def _enter(
        self, conn: Connection, segment_id: str, customers: list[int], own: set[int], now: int
    ) -> list[Event]:
        """New memberships, one statement per chunk; those not in `own` are the batch's."""
        recorded: list[Event] = []
        for part in chunks(customers, BACKFILL_CHUNK):
            params: dict[str, Any] = {"s": segment_id, "now": now}
            rows = []
            for number, customer in enumerate(part):
                params[f"c{number}"], params[f"b{number}"] = customer, int(customer not in own)
                rows.append(f"(:c{number}, :s, :now, :b{number})")
            inserted = sql(
                conn,
                "INSERT INTO segment_memberships (customer_id, segment_id, entered_at, backfill) "
                f"VALUES {', '.join(rows)} RETURNING customer_id, id",
                params,
            ).all()
            for row in sorted(inserted):
                customer = int(row.customer_id)
                properties = _change(segment_id, backfill=customer not in own)
                message_id = f"segment:{row.id}:entered"
                recorded.append(
                    internal_event(
                        customer, catalog.SEGMENT_ENTERED, properties, now, message_id, "system"
                    )
                )
        return recorded

    def _exit(
        self,
        conn: Connection,
        segment_id: str,
        exits: list[tuple[int, int, str]],
        own: set[int],
        now: int,
    ) -> list[Event]:
        """(customer, membership, reason) stays ended, one statement per reason."""
        for reason in sorted({reason for _, _, reason in exits}):
            ids = [membership for _, membership, why in exits if why == reason]
            for part in chunks(ids, BACKFILL_CHUNK):
                marks = ", ".join(f":m{n}" for n in range(len(part)))
                sql(
                    conn,
                    "UPDATE segment_memberships SET exited_at = :now, exit_reason = :r "
                    f"WHERE id IN ({marks})",
                    {"now": now, "r": reason, **{f"m{n}": m for n, m in enumerate(part)}},
                )
        return [
            internal_event(
                customer,
                catalog.SEGMENT_EXITED,
                {**_change(segment_id, backfill=customer not in own), "reason": reason},
                now,
                f"segment:{membership}:exited",
                "system",
            )
            for customer, membership, reason in exits
        ]

    def _follow_merge(self, conn: Connection, survivor: int, merged: int, now: int) -> None:
        """Two profiles became one person: the merged profile's memberships are the
        survivor's (no event: the person was in those segments already). In a segment both
        were in, the earlier stay goes on. The survivor is then evaluated on every segment."""
        rows = sql(
            conn,
            "SELECT id, customer_id, segment_id, entered_at FROM segment_memberships "
            "WHERE customer_id IN (:a, :b) AND exited_at IS NULL ORDER BY entered_at, id",
            {"a": survivor, "b": merged},
        ).all()
        kept: set[str] = set()
        for row in rows:
            if row.segment_id in kept:
                sql(
                    conn,
                    "UPDATE segment_memberships SET exited_at = :now, exit_reason = :r "
                    "WHERE id = :id",
                    {
                        "now": now,
                        "r": f"profiles merged into {customers.public_id(survivor)}",
                        "id": row.id,
                    },
                )
            kept.add(row.segment_id)
        sql(
            conn,
            "UPDATE segment_memberships SET customer_id = :new WHERE customer_id = :old",
            {"new": survivor, "old": merged},
        )

    # ---- definitions -------------------------------------------------------------------------

    def segments(self, conn: Connection) -> list[CompiledSegment]:
        """Every segment, compiled once per generation (several processes may change them:
        the generations are read each time, the sources only when one changed)."""
        found: list[CompiledSegment] = []
        for segment_id, generation in definitions(conn):
            with self._lock:
                cached = self._compiled.get(segment_id)
            if cached is not None and cached[0] == generation:
                found.append(cached[1])
                continue
            compiled = self._load(conn, segment_id)
            if compiled is not None:
                found.append(compiled)
        return found

    def _segment(self, conn: Connection, segment_id: str) -> CompiledSegment | None:
        for segment in self.segments(conn):
            if segment.id == segment_id:
                return segment
        return None

    def _load(self, conn: Connection, segment_id: str) -> CompiledSegment | None:
        stored = catalog.source_of(conn, segment_id)
        if stored is None:
            return None
        generation, source = stored
        compiled = compile_segment(catalog.parse(source))
        with self._lock:
            self._compiled[segment_id] = (generation, compiled)
        return compiled

    def _generation(self, segment_id: str) -> int | None:
        with self._lock:
            cached = self._compiled.get(segment_id)
        return None if cached is None else cached[0]


# ---- the reads on the hot path, straight through the driver -------------------------------


DEFINITIONS = "SELECT id, generation FROM segments"


def definitions(conn: Connection) -> list[tuple[str, int]]:
    """(id, generation) of every segment. Read for each group of events ingested (sent
    ahead by the writer: `install`)."""
    rows = sql(conn, DEFINITIONS).all()
    return [(r.id, int(r.generation)) for r in rows]


def membership_flags(conn: Connection, customer_id: int) -> dict[str, bool]:
    """segment id -> whether the customer is in it now, for every defined segment: what
    journey conditions read as `segment.<id>` (`{eq: false}` holds for a non-member). Read
    at each journey entry and step that looks at segments."""
    rows = sql(
        conn,
        "SELECT s.id, m.id AS membership FROM segments s LEFT JOIN segment_memberships m "
        "ON m.segment_id = s.id AND m.customer_id = :c AND m.exited_at IS NULL",
        {"c": customer_id},
    ).all()
    return {r.id: r.membership is not None for r in rows}


def load_facts(
    conn: Connection, segment: CompiledSegment, customer_ids: Sequence[int], now: int
) -> dict[int, Facts]:
    """The facts of many customers at once: one query for the profiles and one per
    aggregate, each on the customers' own rows (index by customer). Customers merged away
    or erased have none."""
    profiles = customers.condition_views(conn, customer_ids)
    live = sorted(profiles)
    found: dict[int, list[list[Occurrence]]] = {c: [[] for _ in segment.aggregates] for c in live}
    for number, aggregate in enumerate(segment.aggregates):
        if not live:
            break
        if aggregate.only_last:
            for customer, last in log_queries.last_times(conn, aggregate.name, live).items():
                found[customer][number].append((last, None))
            continue
        rows = log_queries.occurrences(
            conn,
            aggregate.name,
            live,
            after=None if aggregate.within_ms is None else now - aggregate.within_ms,
            with_payload=aggregate.needs_payload,
        )
        for row in rows:
            event = _decode(row.payload) if row.payload is not None else None
            counted = occurrence(aggregate, int(row.occurred_at), event)
            if counted is not None:
                found[int(row.customer_id)][number].append(counted)
    return {
        customer: Facts(
            profiles[customer], tuple(sorted(lists, key=_time) for lists in found[customer])
        )
        for customer in live
    }


def _time(found: Occurrence) -> int:
    return found[0]


def _affects(
    segment: CompiledSegment,
    name: str | None,
    source: str,
    kind: str,
    traits: Any,
    context_traits: Any,
) -> bool:
    """Whether an event may change the customer's membership of this segment."""
    depends = segment.depends_on
    if name in depends.events:
        return True
    if source == "system":
        return False  # Parcours' own log lines change no profile
    if depends.any_event:
        return True
    if not depends.traits:
        return False
    if kind == "identify" and isinstance(traits, dict) and not depends.traits.isdisjoint(traits):
        return True
    return isinstance(context_traits, dict) and not depends.traits.isdisjoint(context_traits)


def _acted_since(
    conn: Connection, segment: CompiledSegment, customer_ids: list[int], seq: int
) -> set[int]:
    """The customers who did something bearing on the segment after event `seq` (the last
    one when the segment was saved): the batch evaluation only got to them first, and
    their entry or exit is their own, not the batch's."""
    rows = log_queries.appended_since(conn, seq, customer_ids)
    acted: set[int] = set()
    for customer, kind, name, source, payload in rows:
        if customer in acted:
            continue
        document = _decode(payload)
        context = document.get("context")
        context_traits = context.get("traits") if isinstance(context, dict) else None
        if name == MERGE_EVENT or _affects(
            segment, name, source, kind, document.get("traits"), context_traits
        ):
            acted.add(int(customer))
    return acted


def _change(segment_id: str, *, backfill: bool) -> dict[str, Any]:
    """The properties of a Segment Entered / Exited event."""
    return {"segment": segment_id, "backfill": True} if backfill else {"segment": segment_id}


def _serialise(conn: Connection, customer_ids: set[int]) -> None:
    """Hold each customer's segment lock until the transaction ends (PostgreSQL), in a lock
    space of the segments' own: a batch chunk holds 500 of them and must not make the
    writer wait."""
    lock_keys(conn, [f"segment-member:{c}" for c in customer_ids], space=LOCK_SPACE)
