"""What the journey engine counts for Prometheus: steps run, by journey (docs/operations.md)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

from parcours.journeys.program import Instruction, Program
from parcours.runtime.counting import counting

STEPS = Counter(
    "parcours_journey_steps_total",
    "Journey steps run (sends, actions, branches, splits; a wait when it starts and when it "
    "ends), by journey; a step whose job fails and is tried again counts at each attempt",
    ["journey"],
)
_children: dict[str, Any] = {}  # one labelled child per journey, looked up once


def step_run(program: Program, instruction: Instruction) -> None:
    """Count one step of the journey: not a jump, nor the end every run reaches."""
    if instruction.op == "goto" or instruction is program.instructions[-1] or not counting():
        return
    journey_id = program.journey.id
    child = _children.get(journey_id)
    if child is None:
        child = _children[journey_id] = STEPS.labels(journey_id)
    child.inc()
