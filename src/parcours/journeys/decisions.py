"""The decisions of the journey interpreter: what a run's next instruction, or an event
about its customer, decides. Frozen values; the runner carries them out in order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Move:
    """The run goes to this instruction (and waits for nothing)."""

    pc: int


@dataclass(frozen=True, slots=True)
class Wait:
    """The run waits: for a timer, an event, a trait's date, or a held message's moment."""

    kind: str  # timer | event | trait | held
    until: int
    event: str | None = None  # the event (or the trait) waited for
    key: str | None = None  # the entry's key value the event must carry


@dataclass(frozen=True, slots=True)
class Schedule:
    """The run's next step job runs at this moment."""

    at: int


@dataclass(frozen=True, slots=True)
class Save:
    """Write the run now, before what follows may read it."""


@dataclass(frozen=True, slots=True)
class Log:
    """A decision in the customer's trace (`Journey Waiting`, `Journey Branched`, ...),
    counted for the stats when it names a step."""

    name: str
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Consume:
    """A wait_for took this event (by its seq): no later wait_for of the run takes it."""

    seq: int


@dataclass(frozen=True, slots=True)
class RememberTimeout:
    """The run timed out of the wait_for at `pc` whose deadline was `until`: an event dated
    before it that arrives late still takes the event's path, until the run acts."""

    pc: int
    until: int


@dataclass(frozen=True, slots=True)
class ForgetTimeout:
    """The late event came: the timed-out wait is settled."""


@dataclass(frozen=True, slots=True)
class HoldOut:
    """A split held the customer out as control: measured, sent nothing."""


@dataclass(frozen=True, slots=True)
class Exit:
    """The run ends with the reason. Ended by a goal or an exit (`stop_messages`), its
    messages not yet handed to a provider are cancelled."""

    reason: str
    converted: bool = False
    stop_messages: bool = False


@dataclass(frozen=True, slots=True)
class Send:
    """A message intent for the outbox, on the channel the policies chose."""

    key: str  # idempotency key: run, step and attempt
    channel: str
    template: str
    purpose: str
    step_id: str
    address: str | None
    extras: dict[str, Any]  # what delivery needs later: fallbacks, if_held, the entry event


@dataclass(frozen=True, slots=True)
class Held:
    """A message held back by the policies (counted; the trace says why in a `Log`)."""

    channel: str
    passed_over: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Emit:
    """An event about the customer, into the log for other journeys and segments to see."""

    kind: str  # track | identify
    name: str | None
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CallWebhook:
    """A signed webhook delivery, scheduled; the run goes on at once."""

    delivery_id: str
    step_id: str
    url: str
    data: Any
    secret: str | None
    retries: int


Decision = (
    Move
    | Wait
    | Schedule
    | Save
    | Log
    | Consume
    | RememberTimeout
    | ForgetTimeout
    | HoldOut
    | Exit
    | Send
    | Held
    | Emit
    | CallWebhook
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The decisions of one instruction, and the run's time to go on with (None: the run
    waits or has ended)."""

    decisions: list[Decision]
    go_on: int | None
