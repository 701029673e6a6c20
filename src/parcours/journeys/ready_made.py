"""The ready-made journeys shipped with Parcours (`journeys/templates/*.yaml`): the
gallery a brand starts from, in the console and in the demo."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from parcours.journeys.definition import load_journey

READY_MADE_DIR = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class ReadyMade:
    slug: str  # the file's name: abandoned-cart
    journey_id: str
    name: str
    description: str
    source: str  # the YAML, to copy and adapt


@cache
def ready_made() -> tuple[ReadyMade, ...]:
    """Every ready-made journey, by file name."""
    found: list[ReadyMade] = []
    for path in sorted(READY_MADE_DIR.glob("*.yaml")):
        source = path.read_text(encoding="utf-8")
        journey = load_journey(source)
        found.append(ReadyMade(path.stem, journey.id, journey.name, journey.description, source))
    return tuple(found)


def ready_made_source(slug: str) -> str | None:
    return next((item.source for item in ready_made() if item.slug == slug), None)
