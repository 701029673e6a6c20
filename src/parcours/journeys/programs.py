"""The compiled programs of the journey versions that may have runs, and what they listen
to: the events that enter, move or end runs, the traits whose dates they wait for.

Compiled once per version and shared by the engine's threads; what they listen to is
worked out again only when the set of running versions changes."""

from __future__ import annotations

import threading

from sqlalchemy import Connection

from parcours.journeys import store
from parcours.journeys import versions as journeys_api
from parcours.journeys.program import (
    Program,
    compile_journey,
    entry_event,
    listened_events,
    waited_traits,
)
from parcours.journeys.times import window_ms


class Programs:
    def __init__(self) -> None:
        self._compiled: dict[tuple[str, int], Program] = {}
        self._lock = threading.Lock()
        self._interest: tuple[tuple[tuple[str, int, str], ...], set[str]] | None = None
        self.waited_traits: set[str] = set()
        self.entry_traits: dict[str, list[str]] = {}  # date trait -> journeys entered on it
        self.goal_names: set[str] = set()  # goals of versions that may still have runs
        self.longest_window = 0  # the longest goal window among them, in ms

    def get(self, conn: Connection, journey_id: str, version: int) -> Program:
        key = (journey_id, version)
        with self._lock:
            program = self._compiled.get(key)
        if program is None:
            source = journeys_api.version_source(conn, journey_id, version)
            program = compile_journey(journeys_api.parse(source), version)
            with self._lock:
                self._compiled[key] = program
        return program

    def live(self, conn: Connection) -> list[Program]:
        return [self.get(conn, j, v) for j, v, _ in store.live_versions(conn)]

    def live_one(self, conn: Connection, journey_id: str) -> Program | None:
        for program in self.live(conn):
            if program.journey.id == journey_id:
                return program
        return None

    def paused(self, conn: Connection) -> list[Program]:
        """Paused versions: they take no entry, and say so in the customer's trace."""
        return [
            self.get(conn, j, v)
            for j, v, status in store.running_versions(conn)
            if status == "paused"
        ]

    def listened_names(self, conn: Connection) -> set[str]:
        """Entry events of live journeys, and every event that can move or end a run of a
        version that may still have runs (live, paused or superseded). Also keeps
        `waited_traits`, `entry_traits`, `goal_names` and `longest_window` up to date."""
        versions = tuple(store.running_versions(conn))
        with self._lock:
            known = self._interest
        if known is not None and known[0] == versions:
            return known[1]  # read for every group of events: the same versions, the same set
        names: set[str] = set()
        traits: set[str] = set()
        entry_traits: dict[str, list[str]] = {}
        goals: set[str] = set()
        longest = 0
        for journey_id, version, status in versions:
            journey = self.get(conn, journey_id, version).journey
            trigger = entry_event(journey)
            if status in ("live", "paused") and trigger:
                names.add(trigger)  # a paused journey records the refusal
            for goal in journey.goals:
                goals.add(goal.event)
                if goal.window is not None:
                    longest = max(longest, window_ms(goal.window))
            if status == "live" and journey.entry.date_trait:
                entry_traits.setdefault(journey.entry.date_trait, []).append(journey_id)
            names |= listened_events(journey)
            traits |= waited_traits(journey)
        with self._lock:
            self.waited_traits = traits
            self.entry_traits = entry_traits
            self.goal_names, self.longest_window = goals, longest
            self._interest = (versions, names)
        return names
