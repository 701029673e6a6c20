"""The traffic simulator: which of the stories' events are due on the simulated clock
(`Simulator`, pure), and the thread that takes them through the doors real traffic takes
(`Traffic`): the site's events as the tracking API parses them, the carrier's scans as
its webhook maps them, the "notify me" requests as their endpoint checks and records
them, each then handed to the writer like any request's; and the reviews through the
hosted form's action."""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import msgspec

from parcours.commerce import back_in_stock, reviews
from parcours.customers import profiles as customers
from parcours.demo.stories import slot_plan, story
from parcours.demo.world import CARRIER, NOTIFY_ME, PUSH_SUBSCRIBE, REVIEW_FORM, Planned, World
from parcours.ingest.carriers import CarrierError, webhook_event
from parcours.ingest.writer import Writer, WriterClosed
from parcours.log import Event, Reactions
from parcours.messaging import SubscriptionError, subscriptions
from parcours.runtime.clock import Clock
from parcours.runtime.db import Database
from parcours.tracking import EventError, parse_event

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode

# A story's next step waiting in the heap: (when, slot, story, step).
Step = tuple[int, int, int, int]
TICK_SECONDS = 0.2  # how often the traffic looks for due events, in real time
SAVE_EVERY_SECONDS = 2.0  # how often its position is saved, in real time
CHUNK = 500  # events handed to the writer at once


class Simulator:
    """The stories' events in the order of their times: each slot's stories begin when the
    clock reaches the slot, and only each story's next step is kept (in a heap), so the
    position to save is small and a story is drawn again from its name when its next step
    is due."""

    def __init__(self, world: World, next_slot: int = 0, pending: Iterable[Step] = ()) -> None:
        self.world = world
        self.next_slot = next_slot
        self._heap: list[Step] = [tuple(step) for step in pending]  # type: ignore[misc]
        heapq.heapify(self._heap)
        # Recent stories, kept while their steps come close together.
        self._story = lru_cache(maxsize=1024)(lambda slot, index: story(world, slot, index))

    def due(self, now: int) -> list[Planned]:
        """The events due at `now` (the clock's time) not handed out yet, oldest first."""
        while self.world.slot_start(self.next_slot) <= now:
            slot = self.next_slot
            for index in range(len(slot_plan(self.world, slot))):
                events = self._story(slot, index)
                if events:
                    heapq.heappush(self._heap, (events[0].at, slot, index, 0))
            self.next_slot += 1
        found: list[Planned] = []
        while self._heap and self._heap[0][0] <= now:
            _, slot, index, step = heapq.heappop(self._heap)
            events = self._story(slot, index)
            found.append(events[step])
            if step + 1 < len(events):
                heapq.heappush(self._heap, (events[step + 1].at, slot, index, step + 1))
        return found

    def pending(self) -> list[Step]:
        """The stories' next steps, to save (with `next_slot`)."""
        return sorted(self._heap)


def as_event(planned: Planned, received_at: int) -> Event:
    """The event a planned one becomes at its door (EventError or CarrierError when it
    does not pass, as a request would be refused)."""
    if planned.door == CARRIER:
        document = webhook_event(_encode(planned.document))
        return parse_event(
            _encode(document), source="carrier", received_at=received_at, identity_required=False
        )
    # The catalog's reports name no customer (as Shopify's product webhooks do not).
    return parse_event(
        _encode(planned.document),
        source="api",
        received_at=received_at,
        identity_required="userId" in planned.document,
    )


@dataclass(frozen=True)
class Doors:
    """What the traffic goes in through: the writer, as the tracking API, the carrier
    webhook and the "notify me" endpoint hand it their events; the database and the
    log's reactions, for the review form's action."""

    db: Database
    writer: Writer
    reactions: Reactions


def notify_me_events(db: Database, planned: Planned, received_at: int) -> list[Event]:
    """A "notify me" request as its endpoint records it (BackInStockError when refused)."""
    asked = back_in_stock.check_request(planned.document, "")
    with db.read() as conn:
        variant = back_in_stock.variant_asked(conn, asked)
    return back_in_stock.request_events(asked, variant, received_at)


def subscribe_to_push(doors: Doors, forms: list[dict[str, Any]], now: int) -> int:
    """Browsers' push subscriptions as `POST /v1/push/subscribe` takes them: each checked,
    a `Push Subscribed` logged, then kept for the customer holding that user id (the demo
    vouches for its user ids, as the shop's identity hash would); how many were kept."""
    if not forms:
        return 0
    checked = [(form, subscriptions.check(form["subscription"])) for form in forms]
    events = [
        parse_event(
            _encode(
                {
                    "type": "track",
                    "event": "Push Subscribed",
                    "userId": form["userId"],
                    "messageId": form["messageId"],
                    "properties": {
                        "channel": "push",
                        "endpoint_host": str(subscription["endpoint"]).split("/")[2],
                    },
                    "context": {"userAgent": form["userAgent"]},
                }
            ),
            source="api",
            received_at=now,
        )
        for form, subscription in checked
    ]
    for first in range(0, len(events), CHUNK):
        doors.writer.append_sync(events[first : first + CHUNK])
    kept = 0
    with doors.db.write() as conn:
        for form, subscription in checked:
            found = customers.customers_with_identity(conn, "user_id", str(form["userId"]))
            if found:
                subscriptions.save(
                    conn,
                    found[0],
                    subscription,
                    str(form["userAgent"]),
                    now,
                    verified_user_id=str(form["userId"]),
                )
                kept += 1
    return kept


def submit_review(doors: Doors, planned: Planned, now: int) -> None:
    """A review as the hosted form submits it (ReviewRefused when refused)."""
    form = planned.document
    with doors.db.write() as conn:
        reviews.submit_review(
            conn,
            str(form["order_id"]),
            {str(k): int(v) for k, v in form["ratings"].items()},
            str(form["text"]),
            None,
            str(form["locale"]),
            now,
            doors.reactions,
        )


class Traffic:
    """Takes what the simulator says is due through its doors, as the clock moves, until
    stopped; saves its position every `SAVE_EVERY_SECONDS` (real) and when it stops."""

    def __init__(
        self,
        simulator: Simulator,
        clock: Clock,
        doors: Doors,
        save: Callable[[Simulator, bool], None],
    ) -> None:
        self.simulator = simulator
        self.clock = clock
        self.doors = doors
        self._save = save  # (simulator, stopped)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.appended = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="parcours-demo-traffic", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop and save where it is (what was handed to the writer is stored: it answers
        before this returns)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def _run(self) -> None:
        saved_at = time.monotonic()
        try:
            while not self._stopping.is_set():
                try:
                    self.step()
                except WriterClosed:
                    raise
                except Exception:  # the database away for a moment: the next tick goes on
                    log.exception("the demo's traffic lost a step's events; it goes on")
                if time.monotonic() - saved_at >= SAVE_EVERY_SECONDS:
                    self._save(self.simulator, False)
                    saved_at = time.monotonic()
                self._stopping.wait(TICK_SECONDS)
        except WriterClosed:
            pass  # the process is stopping
        finally:
            self._save(self.simulator, True)

    def step(self) -> int:
        """Take what is due now through its doors; how many events were stored."""
        now = self.clock.now_ms()
        events: list[Event] = []
        stored = 0
        for planned in self.simulator.due(now):
            try:
                if planned.door == REVIEW_FORM:
                    stored += self._append(events)  # what came before it, first
                    events = []
                    submit_review(self.doors, planned, now)
                elif planned.door == NOTIFY_ME:
                    events += notify_me_events(self.doors.db, planned, now)
                elif planned.door == PUSH_SUBSCRIBE:
                    stored += self._append(events)  # the customer's sign-up, first
                    events = []
                    subscribe_to_push(self.doors, [planned.document], now)
                else:
                    events.append(as_event(planned, now))
            except (
                EventError,
                CarrierError,
                back_in_stock.BackInStockError,
                reviews.ReviewRefused,
                SubscriptionError,
            ) as exc:
                log.warning("the demo sent what its door refuses (%s): %s", planned.door, exc)
        stored += self._append(events)
        self.appended += stored
        return stored

    def _append(self, events: list[Event]) -> int:
        stored = 0
        for first in range(0, len(events), CHUNK):
            stored += self.doors.writer.append_sync(events[first : first + CHUNK]).stored
        return stored
