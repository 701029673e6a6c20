"""A journey version drawn as its steps, with how many runs reached each, wait there now,
ended there, and what happened there (messages queued, held and why, the way a branch
or a split sent them): what the console draws as a graph (docs/console.md).

Runs only move forward through a version's program, so every step's count follows from
two tables: where each run stands or ended (`journey_runs.pc`), and the way each branch,
split and wait sent runs (`journey_step_visits`). The runs that reached a step of a
sequence are those that reached the step before it, less those that stopped within it
(ended or standing there, in it or in the ways nested in it)."""

from __future__ import annotations

from collections import defaultdict

import msgspec
from sqlalchemy import Connection, func, select

from parcours.journeys.definition import Entry, Goal, Step
from parcours.journeys.program import Program, compile_journey
from parcours.journeys.tables import journey_runs
from parcours.journeys.versions import JourneyStats, parse, stats, version_view

QUEUED = "Message Queued"
HELD = "Message Held"
BRANCHED = "Journey Branched"
SPLIT = "Journey Split"
RECEIVED = "Journey Event Received"
TIMED_OUT = "Journey Wait Timed Out"


class StepCounts(msgspec.Struct, frozen=True):
    """What happened at one step of a version."""

    reached: int  # runs that reached it
    waiting: int  # active runs standing at it now (a wait, a message held until later)
    ended: int  # runs that ended at it (an exit; a goal or an exit event while there)
    converted: int  # of the runs that ended or stand at it, those converted
    sent: int  # messages it queued for delivery
    held: dict[str, int]  # messages it held back, by the kind of reason (consent...)
    outcomes: dict[str, int]  # every decision recorded at it, as the stats name them


class GraphArm(msgspec.Struct, frozen=True):
    """One way out of a branch, a split or a wait for an event."""

    kind: str  # when | otherwise | none | path | holdout | event | timeout
    label: str  # the conditions (JSON), the path's name, the event awaited
    taken: int  # runs that went this way
    ends: bool  # the way ends the run (a holdout, a wait's `exit`)
    weight: int | None = None  # a split path's share, in percent
    steps: list[GraphStep] = []


class GraphStep(msgspec.Struct, frozen=True):
    """A step as drawn: what it is, what it does, its counts, and its ways out."""

    step_id: str
    kind: str  # wait | wait_until | wait_for | branch | split | send | update_profile |
    # emit | task | webhook | exit | end (the end every run reaches that goes through)
    detail: str  # what it does, in the definition's own words
    counts: StepCounts
    arms: list[GraphArm] = []


class JourneyGraph(msgspec.Struct, frozen=True):
    """A version as a graph: its entry, its steps (the last one the end), its goals and
    exits, and the version's figures (entered, converted, treated and control...)."""

    journey_id: str
    version: int
    name: str
    entry_kind: str  # event | segment | date_trait | api
    entry_detail: str
    steps: list[GraphStep]
    goals: list[str]
    exits: list[str]
    stats: JourneyStats


def journey_graph(conn: Connection, journey_id: str, version: int) -> JourneyGraph:
    """The version's steps as a graph with each step's counts. Raises UnknownJourney, or
    LookupError for a version that does not exist."""
    journey = parse(version_view(conn, journey_id, version).source)
    program = compile_journey(journey, version)
    figures = stats(conn, journey_id, version, detailed=True)
    reader = _Reader(program, _positions(conn, journey_id, version), figures.steps)
    steps, end = reader.block(journey.steps, 0, figures.entered)
    reached_end = max(0, figures.entered - sum(reader.stopped(0, end)))
    steps.append(reader.node("end", "", end, reached_end))
    kind, detail = _entry(journey.entry)
    return JourneyGraph(
        journey_id=journey_id,
        version=version,
        name=journey.name,
        entry_kind=kind,
        entry_detail=detail,
        steps=steps,
        goals=[_goal(goal) for goal in journey.goals],
        exits=[_goal(goal) for goal in journey.exits],
        stats=figures,
    )


class _Position(msgspec.Struct, frozen=True):
    active: int = 0
    ended: int = 0
    converted: int = 0


def _positions(conn: Connection, journey_id: str, version: int) -> dict[int, _Position]:
    """Where the version's runs stand or ended: per instruction, how many."""
    found: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for pc, state, converted, count in conn.execute(
        select(journey_runs.c.pc, journey_runs.c.state, journey_runs.c.converted, func.count())
        .where(journey_runs.c.journey_id == journey_id, journey_runs.c.version == version)
        .group_by(journey_runs.c.pc, journey_runs.c.state, journey_runs.c.converted)
    ).all():
        here = found[int(pc)]
        here["active" if state == "active" else "ended"] += int(count)
        if converted:
            here["converted"] += int(count)
    return {pc: _Position(**values) for pc, values in found.items()}


class _Reader:
    """Walks the definition beside its compiled program (the same layout as
    `program.compile_journey`), counting as it goes."""

    def __init__(
        self, program: Program, positions: dict[int, _Position], visits: dict[str, dict[str, int]]
    ) -> None:
        self.program = program
        self.positions = positions
        self.visits = visits

    def stopped(self, start: int, end: int) -> list[int]:
        """The runs that stand or ended at each instruction of [start, end)."""
        return [
            self.positions[pc].active + self.positions[pc].ended
            for pc in range(start, end)
            if pc in self.positions
        ]

    def node(
        self, kind: str, detail: str, pc: int, reached: int, arms: list[GraphArm] | None = None
    ) -> GraphStep:
        step_id = self.program.at(pc).step_id
        outcomes = dict(sorted(self.visits.get(step_id, {}).items()))
        held: dict[str, int] = {}
        for outcome, count in outcomes.items():
            if outcome == HELD or outcome.startswith(f"{HELD}: "):
                reason = outcome.removeprefix(HELD).removeprefix(": ") or "other"
                held[reason] = held.get(reason, 0) + count
        here = self.positions.get(pc, _Position())
        counts = StepCounts(
            reached=max(0, reached),
            waiting=here.active,
            ended=here.ended,
            converted=here.converted,
            sent=outcomes.get(QUEUED, 0),
            held=held,
            outcomes=outcomes,
        )
        return GraphStep(step_id, kind, detail, counts, arms or [])

    def block(self, steps: list[Step], pc: int, entered: int) -> tuple[list[GraphStep], int]:
        """A sequence of steps from instruction `pc`, reached by `entered` runs: its nodes,
        and the instruction after it."""
        nodes: list[GraphStep] = []
        reached = entered
        for step in steps:
            node, after = self.step(step, pc, reached)
            nodes.append(node)
            reached = max(0, reached - sum(self.stopped(pc, after)))
            pc = after
        return nodes, pc

    def step(self, step: Step, pc: int, reached: int) -> tuple[GraphStep, int]:
        kind, detail = _describe(step)
        if step.wait_for is not None:
            return self._wait_for(step, pc, reached, detail)
        if step.branch is not None:
            return self._branch(step, pc, reached)
        if step.split is not None:
            return self._split(step, pc, reached, detail)
        return self.node(kind, detail, pc, reached), pc + 1

    def _count(self, pc: int, outcome: str) -> int:
        return self.visits.get(self.program.at(pc).step_id, {}).get(outcome, 0)

    def _way(
        self, kind: str, label: str, steps: list[Step], pc: int, taken: int, ends: bool
    ) -> tuple[GraphArm, int]:
        """A way out made of `steps` then a jump past the step (or an exit, if it ends)."""
        if ends:
            return GraphArm(kind, label, taken, True), pc + 1
        nodes, after = self.block(steps, pc, taken)
        return GraphArm(kind, label, taken, False, steps=nodes), after + 1  # the jump

    def _wait_for(self, step: Step, pc: int, reached: int, detail: str) -> tuple[GraphStep, int]:
        spec = step.wait_for
        assert spec is not None
        event, after = self._way(
            "event",
            spec.event,
            spec.then,
            pc + 1,
            self._count(pc, RECEIVED),
            spec.on_event == "exit",
        )
        timeout, after = self._way(
            "timeout",
            spec.timeout,
            spec.otherwise,
            after,
            self._count(pc, TIMED_OUT),
            spec.on_timeout == "exit",
        )
        return self.node("wait_for", detail, pc, reached, [event, timeout]), after

    def _branch(self, step: Step, pc: int, reached: int) -> tuple[GraphStep, int]:
        arms: list[GraphArm] = []
        after = pc + 1
        for number, arm in enumerate(step.branch or []):
            if arm.otherwise is not None:
                way, after = self._way(
                    "otherwise",
                    "",
                    arm.otherwise,
                    after,
                    self._count(pc, f"{BRANCHED}: otherwise"),
                    False,
                )
            else:
                label = msgspec.json.encode(arm.when).decode()
                taken = self._count(pc, f"{BRANCHED}: {number + 1}")
                way, after = self._way("when", label, arm.steps, after, taken, False)
            arms.append(way)
        if not any(arm.kind == "otherwise" for arm in arms):
            taken = self._count(pc, f"{BRANCHED}: otherwise")
            arms.append(GraphArm("none", "", taken, False))
        return self.node("branch", "", pc, reached, arms), after

    def _split(self, step: Step, pc: int, reached: int, detail: str) -> tuple[GraphStep, int]:
        split = step.split
        assert split is not None
        total = sum(option.weight for option in split.paths) or 1
        arms: list[GraphArm] = []
        after = pc + 1
        for number, option in enumerate(split.paths):
            name = option.name or str(number + 1)
            taken = self._count(pc, f"{SPLIT}: {name}")
            way, after = self._way("path", name, option.steps, after, taken, False)
            share = round(option.weight * (100 - split.holdout) / total)
            arms.append(
                GraphArm(way.kind, way.label, way.taken, way.ends, weight=share, steps=way.steps)
            )
        holdout = self._count(pc, f"{SPLIT}: holdout")
        if split.holdout:
            arms.append(GraphArm("holdout", "", holdout, True, weight=split.holdout))
        return self.node("split", detail, pc, reached, arms), after + 1  # the holdout exit


def _describe(step: Step) -> tuple[str, str]:
    """A step's kind and what it does, in the definition's words."""
    if step.wait is not None:
        return "wait", step.wait
    if step.wait_until is not None:
        until = step.wait_until
        if until.trait is not None:
            parts = [until.trait, until.offset or "", until.at or ""]
        else:
            parts = [until.time or "", ",".join(until.weekdays)]
        return "wait_until", " · ".join(p for p in parts if p)
    if step.wait_for is not None:
        return "wait_for", f"{step.wait_for.event} · {step.wait_for.timeout}"
    if step.branch is not None:
        return "branch", ""
    if step.split is not None:
        return "split", ""
    if step.send is not None:
        send = step.send
        channels = " → ".join([send.channel, *send.fallback])
        return "send", f"{send.template} · {channels} · {send.purpose}"
    if step.update_profile is not None:
        change = step.update_profile
        parts = [*change.set, *(f"+{t}" for t in change.add_tags)]
        parts += [f"-{t}" for t in change.remove_tags]
        return "update_profile", ", ".join(parts)
    if step.emit is not None:
        return "emit", step.emit.event
    if step.task is not None:
        return "task", step.task.title
    if step.webhook is not None:
        return "webhook", step.webhook.url
    if step.exit is not None:
        return "exit", step.exit.reason
    return "step", ""


def _entry(entry: Entry) -> tuple[str, str]:
    if entry.event is not None:
        return "event", entry.event
    if entry.segment is not None:
        return "segment", f"{entry.segment} ({entry.on})"
    if entry.date_trait is not None:
        parts = [entry.date_trait, entry.offset or "", entry.at or ""]
        return "date_trait", " · ".join(p for p in parts if p)
    return "api", ""


def _goal(goal: Goal) -> str:
    return goal.event + (f" · {goal.window}" if goal.window else "")
