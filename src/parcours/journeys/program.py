"""A journey compiled to a flat program: the position of a run is one integer.

Nested steps (branches, split paths, wait-for outcomes) become jumps, so a run's place in
a journey version is a program counter that never changes meaning for that version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from parcours.journeys.definition import Journey, Step, parse_duration
from parcours.segments import SEGMENT_ENTERED, SEGMENT_EXITED

# The event `POST /api/journeys/{id}/runs` appends; an `api: true` journey enters on it.
ENTRY_REQUESTED = "Journey Entry Requested"


@dataclass
class Instruction:
    op: str  # wait | wait_until | wait_for | branch | split | action | exit | goto
    step_id: str
    spec: Any = None
    # Jump targets, filled in as the program is laid out.
    targets: list[int] = field(default_factory=list)
    otherwise: int | None = None


@dataclass
class Program:
    journey: Journey
    instructions: list[Instruction]
    version: int = 0

    def at(self, pc: int) -> Instruction:
        return self.instructions[pc]


def compile_journey(journey: Journey, version: int = 0) -> Program:
    code: list[Instruction] = []
    _emit_steps(journey.steps, code, "s")
    code.append(Instruction("exit", "end", spec="completed"))
    return Program(journey, code, version)


def waited_traits(journey: Journey) -> set[str]:
    """The traits whose date some step waits for (a change reschedules the wait)."""
    found: set[str] = set()
    pending = list(journey.steps)
    while pending:
        step = pending.pop()
        if step.wait_until is not None and step.wait_until.trait:
            found.add(step.wait_until.trait)
        if step.wait_for is not None:
            pending += step.wait_for.then + step.wait_for.otherwise
        for arm in step.branch or []:
            pending += arm.steps + (arm.otherwise or [])
        if step.split is not None:
            for option in step.split.paths:
                pending += option.steps
    return found


def entry_event(journey: Journey) -> str | None:
    """The event whose arrival may enter a customer: the entry's own, a segment entry's
    `Segment Entered` (or `Segment Exited` with `on: leave`), an API entry's request; None
    for a date-trait entry (the engine schedules those)."""
    entry = journey.entry
    if entry.event is not None:
        return entry.event
    if entry.segment is not None:
        return SEGMENT_ENTERED if entry.on == "enter" else SEGMENT_EXITED
    if entry.api:
        return ENTRY_REQUESTED
    return None


def enters_on(journey: Journey, name: str | None, event: dict[str, Any]) -> bool:
    """Whether this event is the journey's entry trigger (before `where` and re-entry):
    for a segment, that segment's change, not one made by a batch evaluation unless the
    entry says `backfill: true`; for the API, a request for this journey."""
    trigger = entry_event(journey)
    if trigger is None or name != trigger:
        return False
    entry = journey.entry
    properties = event.get("properties") or {}
    if entry.segment is not None:
        return properties.get("segment") == entry.segment and (
            entry.backfill or not properties.get("backfill")
        )
    if entry.api:
        return properties.get("journey_id") == journey.id
    return True


def listened_events(journey: Journey) -> set[str]:
    """Every event name whose arrival can change a run of this journey (not entry)."""
    names = {goal.event for goal in journey.goals} | {goal.event for goal in journey.exits}
    pending = list(journey.steps)
    while pending:
        step = pending.pop()
        if step.wait_for is not None:
            names.add(step.wait_for.event)
            pending += step.wait_for.then + step.wait_for.otherwise
        for arm in step.branch or []:
            pending += arm.steps + (arm.otherwise or [])
        if step.split is not None:
            for option in step.split.paths:
                pending += option.steps
    return names


def _emit_steps(steps: list[Step], code: list[Instruction], prefix: str) -> None:
    for index, step in enumerate(steps):
        _emit_step(step, code, step.id or f"{prefix}{index + 1}")


def _emit_step(step: Step, code: list[Instruction], step_id: str) -> None:
    if step.wait is not None:
        code.append(Instruction("wait", step_id, spec=parse_duration(step.wait)))
    elif step.wait_until is not None:
        code.append(Instruction("wait_until", step_id, spec=step.wait_until))
    elif step.wait_for is not None:
        _emit_wait_for(step, code, step_id)
    elif step.branch is not None:
        _emit_branch(step, code, step_id)
    elif step.split is not None:
        _emit_split(step, code, step_id)
    elif step.exit is not None:
        code.append(Instruction("exit", step_id, spec=step.exit.reason))
    else:
        code.append(Instruction("action", step_id, spec=step))


def _emit_wait_for(step: Step, code: list[Instruction], step_id: str) -> None:
    spec = step.wait_for
    assert spec is not None
    wait = Instruction("wait_for", step_id, spec=spec)
    code.append(wait)
    exits: list[Instruction] = []
    # targets[0]: where the event leads; otherwise: where the timeout leads.
    wait.targets = [_block(spec.then, spec.on_event, code, f"{step_id}.then", exits)]
    wait.otherwise = _block(spec.otherwise, spec.on_timeout, code, f"{step_id}.else", exits)
    for jump in exits:
        jump.targets = [len(code)]


def _block(
    steps: list[Step],
    outcome: str,
    code: list[Instruction],
    prefix: str,
    exits: list[Instruction],
) -> int:
    start = len(code)
    if outcome == "exit":
        code.append(Instruction("exit", prefix, spec=f"{prefix.rsplit('.', 1)[0]} ended the run"))
        return start
    _emit_steps(steps, code, f"{prefix}.")
    jump = Instruction("goto", f"{prefix}.end")
    code.append(jump)
    exits.append(jump)
    return start


def _emit_branch(step: Step, code: list[Instruction], step_id: str) -> None:
    arms = step.branch or []
    branch = Instruction("branch", step_id, spec=[])
    code.append(branch)
    exits: list[Instruction] = []
    for number, arm in enumerate(arms):
        start = len(code)
        if arm.otherwise is not None:
            _emit_steps(arm.otherwise, code, f"{step_id}.otherwise.")
            branch.otherwise = start
        else:
            conditions = arm.when if isinstance(arm.when, list) else [arm.when or {}]
            branch.spec.append(conditions)
            branch.targets.append(start)
            _emit_steps(arm.steps, code, f"{step_id}.{number + 1}.")
        jump = Instruction("goto", f"{step_id}.end")
        code.append(jump)
        exits.append(jump)
    end = len(code)
    if branch.otherwise is None:
        branch.otherwise = end
    for jump in exits:
        jump.targets = [end]


def _emit_split(step: Step, code: list[Instruction], step_id: str) -> None:
    split = step.split
    assert split is not None
    instruction = Instruction("split", step_id, spec=split)
    code.append(instruction)
    exits: list[Instruction] = []
    for number, option in enumerate(split.paths):
        instruction.targets.append(len(code))
        _emit_steps(option.steps, code, f"{step_id}.{option.name or number + 1}.")
        jump = Instruction("goto", f"{step_id}.end")
        code.append(jump)
        exits.append(jump)
    instruction.otherwise = len(code)  # the holdout group leaves here
    code.append(Instruction("exit", f"{step_id}.holdout", spec="holdout (control group)"))
    for jump in exits:
        jump.targets = [len(code)]
