"""`parcours demo`: a fictional brand of the chosen sector with its bilingual catalog and
its customers, every ready-made journey live, and a traffic simulator on an accelerated
clock that drives the whole process (docs/demo.md). A restart goes on where it stopped:
what it needs is kept in `demo.json` in the data directory.

The composition root (cli.py) asks `Demo.prepare` for the settings and the clock to
open the services with, then `start`s it on them, serves `routes()`, and `stop`s it
before closing them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from litestar.handlers import HTTPRouteHandler

from parcours.demo.images import images_route, product_svg
from parcours.demo.people import people
from parcours.demo.sectors import SECTORS, Sector, sector_named
from parcours.demo.seeding import BRAND_LANGUAGE, BRAND_TIMEZONE, refresh_pictures, seed
from parcours.demo.simulator import SAVE_EVERY_SECONDS, Doors, Simulator, Traffic
from parcours.demo.state import DemoState, load_state, save_state, state_path
from parcours.demo.world import BRAND_ZONE, World
from parcours.runtime.clock import AcceleratedClock, iso, to_ms
from parcours.runtime.settings import Settings

if TYPE_CHECKING:
    from parcours.services import Services

__all__ = ["DEFAULT_SPEED", "SECTORS", "Demo", "DemoError", "DemoOptions"]

DEFAULT_SPEED = 360.0  # simulated seconds per real second: an hour every ten seconds
LARGEST_CROWD = 100_000


class DemoError(ValueError):
    """A demo that cannot start as asked; the message says why and what to do."""


@dataclass(frozen=True)
class DemoOptions:
    sector: str = "fashion"
    customers: int = 2000
    speed: float = DEFAULT_SPEED  # simulated seconds per real second
    seed: int = 1


@dataclass
class Demo:
    state: DemoState
    path: Path  # the state file
    clock: AcceleratedClock
    sector: Sector
    said: list[str] = field(default_factory=list)  # for the person at the terminal
    world: World | None = None
    traffic: Traffic | None = None

    @classmethod
    def prepare(cls, settings: Settings, options: DemoOptions) -> tuple[Demo, Settings]:
        """The demo kept in the data directory (or a new one as `options` say), its clock,
        and the settings to open the services with (DemoError on a bad option)."""
        if not 1 <= options.customers <= LARGEST_CROWD:
            raise DemoError(f"--customers must be between 1 and {LARGEST_CROWD}")
        if not options.speed > 0:
            raise DemoError("--speed must be above 0 (simulated seconds per real second)")
        try:
            sector = sector_named(options.sector)
        except ValueError as exc:
            raise DemoError(str(exc)) from None
        path = state_path(settings.data_dir)
        try:
            state = load_state(path)
        except ValueError as exc:
            raise DemoError(f"{exc}; remove it to start a new demo") from None
        said: list[str] = []
        if state is None:
            start = _first_morning(time.time())
            state = DemoState(
                seed=options.seed,
                sector=sector.key,
                customers=options.customers,
                start_ms=start,
                clock_ms=start,
            )
        else:
            kept = (state.sector, state.customers, state.seed)
            if kept != (sector.key, options.customers, options.seed):
                said.append(
                    f"This data directory holds a demo of sector {state.sector} with "
                    f"{state.customers} customers and seed {state.seed}: it goes on as it was "
                    "(start another in a new --data-dir)."
                )
            sector = SECTORS[state.sector]
        clock = AcceleratedClock(state.clock_ms, options.speed)
        demo_settings = settings.with_overrides(
            brand_name=sector.brand,
            brand_url=f"https://{sector.slug}.example",
            sector=sector.preset,
            brand_timezone=BRAND_TIMEZONE,
            brand_locale=BRAND_LANGUAGE,
            # A send's lease is counted on the simulated clock: as long as it may be, or
            # a send slower than a few real seconds would be made twice. (Heartbeats are
            # on real time, runtime/heartbeats.py: their staleness needs no change.)
            delivery_lease_seconds=86_400,
        )
        return cls(state, path, clock, sector, said), demo_settings

    def start(self, services: Services) -> None:
        """Seed on the first run, then let the traffic run."""
        state = self.state
        world = World.build(
            state.seed,
            self.sector,
            people(state.seed, state.customers),
            state.start_ms,
            services.settings.resolved_public_url,
        )
        self.world = world
        if not state.seeded:
            stored = seed(services, world)
            state.seeded, state.public_url = True, world.public_url
            self._save(None, stopped=True)
            self.said.append(
                f"Seeded the demo: {world.sector.brand} ({self.sector.key}), "
                f"{state.customers} customers, {len(world.catalog)} products ({stored} events)."
            )
        elif state.public_url != world.public_url:
            refresh_pictures(services, world)
            state.public_url = world.public_url
            self.said.append(f"The catalog's pictures are now served from {world.public_url}.")
        simulator = Simulator(world, state.next_slot, state.pending)
        doors = Doors(services.db, services.writer, services.reactions)
        self.traffic = Traffic(simulator, self.clock, doors, self._save)
        self.traffic.start()
        hour = 3600 / self.clock.factor
        self.said.append(
            f"Simulated time {iso(self.clock.now_ms())}, {self.clock.factor:g} times real time "
            f"(a simulated hour every {hour:.3g} s); Ctrl-C stops, a restart goes on from here."
        )

    def routes(self) -> list[HTTPRouteHandler]:
        """What the demo serves besides Parcours: its products' pictures."""
        world = self.world
        assert world is not None, "start the demo first"
        pictures = {
            item.product_id: product_svg(
                world.sector, item.product_id, world.sector.name(item.spec, BRAND_LANGUAGE)
            )
            for item in world.catalog
        }
        return [images_route(pictures)]

    def stop(self) -> None:
        """Stop the traffic and save where the demo is (before the services close)."""
        if self.traffic is not None:
            self.traffic.stop()
            self.traffic = None

    def stopped(self) -> str:
        """What to tell the person at the terminal once `stop` saved."""
        return (
            f"The demo stopped at simulated time {iso(self.state.clock_ms)}, saved in "
            f"{self.path}: a restart goes on from there."
        )

    def _save(self, simulator: Simulator | None, stopped: bool) -> None:
        state = self.state
        now = self.clock.now_ms()
        if simulator is not None:
            state.next_slot = simulator.next_slot
            state.pending = simulator.pending()
        # Between saves the clock goes on, and Parcours writes its times: should the
        # process be killed, a restart begins no earlier than the next save would have.
        ahead = 0 if stopped else int(2 * SAVE_EVERY_SECONDS * 1000 * self.clock.factor)
        state.clock_ms = now + ahead
        save_state(self.path, state)


def _first_morning(real_now: float) -> int:
    """Where a new demo's simulated time begins: nine in the morning, in the brand's time
    zone, of the real day (so that the shop is busy within its first minute)."""
    today = datetime.fromtimestamp(real_now, BRAND_ZONE).date()
    morning = datetime(today.year, today.month, today.day, 9, tzinfo=BRAND_ZONE)
    return to_ms(morning)
