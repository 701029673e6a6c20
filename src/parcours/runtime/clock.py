"""The one clock of a process: real in production; simulated in tests, demo and simulator."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class SimulatedClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | int) -> None:
        self._lock = threading.Lock()
        self._now = start if isinstance(start, int) else to_ms(start)

    def now_ms(self) -> int:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self._now += int(delta.total_seconds() * 1000)

    def advance_ms(self, milliseconds: int) -> None:
        with self._lock:
            self._now += milliseconds

    def set(self, moment: datetime) -> None:
        with self._lock:
            self._now = to_ms(moment)


class AcceleratedClock:
    """Simulated time that runs `factor` times faster than real time from `start` (the
    demo's: one simulated hour every ten seconds is a factor of 360). It never goes back:
    it reads the process's monotonic clock."""

    def __init__(
        self,
        start: datetime | int,
        factor: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not factor > 0:
            raise ValueError(f"an accelerated clock's factor must be above 0, got {factor}")
        self.start_ms = start if isinstance(start, int) else to_ms(start)
        self.factor = factor
        self._monotonic = monotonic
        self._origin = monotonic()

    def now_ms(self) -> int:
        return self.start_ms + int((self._monotonic() - self._origin) * self.factor * 1000)


def real_seconds(clock: Clock, milliseconds: float) -> float:
    """How many real seconds `milliseconds` of `clock`'s time take to pass: fewer on an
    accelerated clock (how long a worker may sleep until a job is due)."""
    factor = clock.factor if isinstance(clock, AcceleratedClock) else 1.0
    return milliseconds / 1000 / factor


def clock_ms(clock: Clock, seconds: float) -> float:
    """How many milliseconds of `clock`'s time pass in `seconds` real seconds."""
    factor = clock.factor if isinstance(clock, AcceleratedClock) else 1.0
    return seconds * 1000 * factor


def wall_clock(clock: Clock) -> Clock:
    """The clock of people's own time: their console sessions, sign-in attempts, second
    factor codes, invitations and setup links. The real time when `clock` runs faster than
    it (the demo's: a session would end after two real minutes, and a code of the
    authenticator app would never match), else `clock` itself (tests move it)."""
    return SystemClock() if isinstance(clock, AcceleratedClock) else clock


def to_ms(moment: datetime) -> int:
    """Milliseconds since the epoch for an aware datetime (naive ones are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


_NAIVE_EPOCH = datetime(1970, 1, 1)


def iso(ms: int | None) -> str | None:
    """ISO 8601 UTC with milliseconds, as the API shows every time (through a naive
    datetime: a third cheaper, and this runs for every profile a message is rendered for)."""
    if ms is None:
        return None
    seconds, millis = divmod(ms, 1000)
    moment = _NAIVE_EPOCH + timedelta(0, seconds, millis * 1000)
    return moment.isoformat(timespec="milliseconds") + "Z"


def parse_iso(text: str) -> int:
    """Milliseconds for an ISO 8601 time; a time without zone is UTC. Raises ValueError."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    moment = datetime.fromisoformat(value)
    return to_ms(moment)
