"""The writer: a single thread that commits events in groups, each through the log's one
door (`parcours.log.append_events`).

`append` returns only once the events are committed, with the profile projections updated
in the same transaction (docs/core.md). Callers from many threads or an event loop share
one writer; their events are committed together (group commit).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from parcours.ingest import metrics as ingest_metrics
from parcours.log import AppendResult, Event, Reactions, append_events
from parcours.runtime.clock import Clock
from parcours.runtime.counting import counting
from parcours.runtime.db import Database, hold_writes, is_transient

log = logging.getLogger(__name__)


class WriterClosed(RuntimeError):
    pass


@dataclass
class _Submission:
    events: list[Event]
    future: Future[AppendResult]


_STOP = object()
_RETRIES = 5


class Writer:
    def __init__(
        self,
        db: Database,
        *,
        clock: Clock,
        reactions: Reactions,
        batch_events: int = 1000,
        threads: int = 1,
    ) -> None:
        self._db = db
        self._clock = clock
        self._reactions = reactions
        self._batch_events = batch_events
        self._queue: queue.SimpleQueue[_Submission | object] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._start_lock = threading.Lock()
        self._thread_count = threads
        self._closed = False
        self._counted = counting()  # False for the journey simulator's own writer

    def start(self) -> None:
        """One thread on SQLite (one writer at a time anyway); on PostgreSQL several, whose
        transactions only wait for each other when they touch the same people."""
        with self._start_lock:
            while len(self._threads) < self._thread_count:
                thread = threading.Thread(
                    target=self._run, name=f"parcours-writer-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, then stop."""
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout)

    def submit(self, events: list[Event]) -> Future[AppendResult]:
        future: Future[AppendResult] = Future()
        if self._closed:
            future.set_exception(WriterClosed("the writer is shutting down"))
            return future
        if not events:
            future.set_result(AppendResult(0, 0))
            return future
        self.start()
        self._queue.put(_Submission(events, future))
        return future

    async def append(self, events: list[Event]) -> AppendResult:
        return await asyncio.wrap_future(self.submit(events))

    @property
    def batch_events(self) -> int:
        return self._batch_events

    def append_sync(self, events: list[Event]) -> AppendResult:
        return self.submit(events).result()

    # ---- the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            assert isinstance(first, _Submission)
            group = [first]
            count = len(first.events)
            while count < self._batch_events:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                assert isinstance(item, _Submission)
                group.append(item)
                count += len(item.events)
            self._commit_group(group)
        # Anything submitted after the stop markers is refused, never silently dropped; the
        # other threads' stop markers are left for them.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                self._queue.put(_STOP)
                break
            if isinstance(item, _Submission):
                item.future.set_exception(WriterClosed("the writer is shutting down"))

    def _commit_group(self, group: list[_Submission]) -> None:
        try:
            results, _ = self._with_retries(group)
        except Exception as exc:
            if len(group) == 1:
                log.exception("append failed")
                group[0].future.set_exception(exc)
                return
            for submission in group:  # a bad submission fails alone
                self._commit_group([submission])
            return
        # Counted before the callers are answered: a scrape right after an answer sees its
        # events and its group's commit (the commit's lag was observed after the answers,
        # and a test scraping at once missed it, once in CI).
        if self._counted:
            ingest_metrics.committed(group[0].events[0].received_at, self._clock.now_ms())
        for submission, result in zip(group, results, strict=True):
            if self._counted:
                ingest_metrics.accepted(
                    submission.events[0].source, result.stored, result.duplicates
                )
            submission.future.set_result(result)

    def _with_retries(self, group: list[_Submission]) -> tuple[list[AppendResult], list[Event]]:
        for attempt in range(_RETRIES):
            try:
                with self._db.write() as conn:
                    hold_writes(conn)  # PostgreSQL: each goes with the statement after it
                    return append_events(
                        conn,
                        [s.events for s in group],
                        self._clock.now_ms(),
                        self._reactions,
                    )
            except Exception as exc:  # SQLAlchemy's errors, and the driver's (`db.run`)
                if attempt == _RETRIES - 1 or not is_transient(exc):
                    raise
                time.sleep(0.01 * 2**attempt + random.random() * 0.01)
        raise AssertionError("unreachable")
