"""Moving runs: the runner asks the interpreter what a run's instructions (or an event)
decide, answers its questions from the job's journal and the database, and applies the
decisions: the run written, its next step job scheduled, intents in the outbox, events in
the log, webhook deliveries scheduled. Everything in the transaction of the job."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from parcours import brand
from parcours.customers import profiles as customers
from parcours.journeys import decisions as decide
from parcours.journeys import interpreter, store, webhooks
from parcours.journeys import metrics as journey_metrics
from parcours.journeys.decisions import Decision
from parcours.journeys.interpreter import SendPlan
from parcours.journeys.journal import Journal
from parcours.journeys.programs import Programs
from parcours.journeys.runs import LoggedEvent, Run, conversion_after_end
from parcours.messaging import (
    Intent,
    Policies,
    add_intent,
    cancel_run_intents,
    choice,
    public_message_id,
)
from parcours.messaging import metrics as messaging_metrics
from parcours.messaging import templates as message_templates
from parcours.runtime.queue import cancel, enqueue
from parcours.segments import membership_flags

QUEUE = "journeys"
STEP = "journeys.step"
MAX_INSTRUCTIONS_PER_JOB = 200


class Runner:
    def __init__(
        self,
        journal: Journal,
        programs: Programs,
        policies: Policies,
        *,
        region: str,
        sector: str,
        timezone: str,
    ) -> None:
        self.journal = journal
        self.programs = programs
        self.policies = policies
        self.region = region
        self.sector = sector
        self.timezone = timezone  # the configuration's (`brand_timezone`): see `zone`

    def zone(self, conn: Connection) -> str:
        """The brand's time zone, for the local times of customers with no valid zone of
        their own: the one saved on the console's Settings page, else the configuration's.
        Read through the brand's short cache (`brand.send_time`, as the send-time policies
        read it), so a step asks the database for it at most every few seconds."""
        stored = brand.send_time(conn)
        return stored.timezone if stored is not None and stored.timezone else self.timezone

    # ---- instructions -------------------------------------------------------------------

    def advance(self, conn: Connection, run: Run, now: int, logical: int) -> None:
        """Run the run's instructions until it waits or ends; the run is written once.
        `logical` is the run's own time: when it entered, or when its timer was due."""
        program = self.programs.get(conn, run.journey_id, run.version)
        facts = _Facts(self, conn, run, now)
        timezone = self.zone(conn)
        for _ in range(MAX_INSTRUCTIONS_PER_JOB):
            instruction = program.at(run.pc)
            journey_metrics.step_run(program, instruction)
            outcome = interpreter.execute(
                program, run, instruction, facts, now=now, logical=logical, timezone=timezone
            )
            self.apply(conn, run, outcome.decisions, now)
            if outcome.go_on is None:
                break  # waiting or ended
            logical = outcome.go_on
        else:
            self.schedule(conn, run, now, now)  # a very long chain: go on in a new job
        if run.dirty:
            self.save(conn, run)

    def on_event(
        self, conn: Connection, event: LoggedEvent, document: dict[str, Any], now: int
    ) -> None:
        """An event about a customer (`document`, decoded): what it does to each of their
        active runs."""
        for run in store.active_runs(conn, event.customer_id):
            program = self.programs.get(conn, run.journey_id, run.version)
            self.apply(conn, run, interpreter.on_event(program, run, event, document, now), now)

    def convert_ended(
        self, conn: Connection, event: LoggedEvent, document: dict[str, Any], now: int
    ) -> None:
        """A goal event for runs that have ended: their conversion when within the goal's
        window (or, without one, dated before the run ended)."""
        ended = store.ended_runs_to_convert(
            conn, event.customer_id, event.occurred_at, self.programs.longest_window
        )
        for run, ended_at in ended:
            journey = self.programs.get(conn, run.journey_id, run.version).journey
            goal = conversion_after_end(
                journey, run, event.name, document, event.occurred_at, ended_at
            )
            if goal is not None and store.mark_converted(conn, run.id):
                converted = {"goal": goal.event, "control": run.control, "after_end": True}
                self.journal.log(conn, run, "Journey Converted", now, converted)

    # ---- decisions ----------------------------------------------------------------------

    def apply(self, conn: Connection, run: Run, decisions: list[Decision], now: int) -> None:
        """Carry out the interpreter's decisions, in order."""
        for decision in decisions:
            match decision:
                case decide.Move(pc):
                    run.pc, run.waiting, run.wait_event, run.wait_key = pc, None, None, None
                    run.due_at, run.dirty = None, True
                case decide.Wait(kind, until, event, key):
                    run.waiting, run.due_at, run.wait_event, run.wait_key = kind, until, event, key
                    run.dirty = True
                case decide.Log(name, details):
                    self.journal.log(conn, run, name, now, details)
                case decide.Schedule(at):
                    self.schedule(conn, run, at, now)
                case decide.Save():
                    self.save(conn, run)
                case decide.Consume(seq):
                    run.consumed_seq = seq
                case decide.RememberTimeout(pc, until):
                    run.race_pc, run.race_until = pc, until
                case decide.ForgetTimeout():
                    run.race_pc = run.race_until = None
                case decide.HoldOut():
                    run.control = True
                case decide.Exit(reason, converted, stop_messages):
                    self.end(conn, run, reason, now, converted, stop_messages=stop_messages)
                case _:
                    self._act(conn, run, decision, now)

    def _act(self, conn: Connection, run: Run, decision: Decision, now: int) -> None:
        """The decisions that reach beyond the run: a message, an event, a webhook."""
        match decision:
            case decide.Send():
                self._queue_message(conn, run, decision, now)
            case decide.Held(channel, passed_over):
                messaging_metrics.held(channel, passed_over)
            case decide.Emit(kind, name, body):
                if run.dirty:  # what it emits may move this customer's runs
                    self.save(conn, run)
                self.journal.append(conn, run, now, kind, name, body, source="journey")
            case decide.CallWebhook():
                self._schedule_webhook(conn, run, decision, now)
            case _:
                raise AssertionError(f"unknown decision {decision!r}")

    def _queue_message(self, conn: Connection, run: Run, send: decide.Send, now: int) -> None:
        intent = Intent(
            send.key,
            run.customer_id,
            send.channel,
            send.template,
            send.purpose,
            run.journey_id,
            run.id,
            send.step_id,
        )
        add_intent(conn, intent, now, send.extras, send.address)

    def _schedule_webhook(
        self, conn: Connection, run: Run, hook: decide.CallWebhook, now: int
    ) -> None:
        webhooks.schedule_delivery(
            conn,
            delivery_id=hook.delivery_id,
            url=hook.url,
            envelope=webhooks.envelope(
                delivery_id=hook.delivery_id,
                now=now,
                journey_id=run.journey_id,
                run_id=run.id,
                step=hook.step_id,
                customer_id=customers.public_id(run.customer_id),
                entry_event=run.entry_event.get("event"),
                data=hook.data,
            ),
            secret=hook.secret,
            retries=hook.retries,
            now=now,
            customer_id=run.customer_id,
        )

    # ---- the run's record and its job ---------------------------------------------------

    def schedule(self, conn: Connection, run: Run, at: int, now: int) -> None:
        """The run's one step job, at `at` (replacing the one it had)."""
        run.has_job = True
        enqueue(
            conn,
            STEP,
            {"run": run.id},
            run_at=at,
            now=now,
            queue=QUEUE,
            unique_key=f"run:{run.id}",
            customer_id=run.customer_id,
        )

    def save(self, conn: Connection, run: Run) -> None:
        self.journal.forget_run(conn, run)
        store.save_run(conn, run)

    def end(
        self,
        conn: Connection,
        run: Run,
        reason: str,
        now: int,
        converted: bool = False,
        *,
        stop_messages: bool = False,
    ) -> None:
        """End the run with the reason; its job goes with it. Ended by a goal or an exit
        (`stop_messages`), its messages not yet handed to a provider are cancelled, in the
        same transaction."""
        store.end_run(conn, run, reason, now, converted)
        self.journal.forget_run(conn, run)
        if run.has_job is not False:
            cancel(conn, f"run:{run.id}")  # its timer, if any, goes with it
        if stop_messages:
            self._cancel_messages(conn, run, reason, now)
        details: dict[str, Any] = {"reason": reason, "converted": converted}
        if run.control:
            details["control"] = True
        self.journal.log(conn, run, "Journey Exited", now, details)

    def _cancel_messages(self, conn: Connection, run: Run, reason: str, now: int) -> None:
        # In the customer's trace as delivery records a message it finds unwanted
        # (messaging/delivery.py); the step's counts keep it as queued.
        for message in cancel_run_intents(conn, run.customer_id, run.id, reason, now):
            properties = {
                "message_id": public_message_id(message.outbox_id),
                "channel": message.channel,
                "template": message.template,
                "purpose": message.purpose,
                "step": message.step_id,
                "reason": reason,
                "outcome": "cancelled",
            }
            body = {"properties": properties}
            self.journal.append(conn, run, now, "track", "Message Held", body, source="system")


class _Facts:
    """The interpreter's questions about one run's customer, answered from the job's
    journal (what it or its batch read already) or the database."""

    def __init__(self, runner: Runner, conn: Connection, run: Run, now: int) -> None:
        self._runner, self._conn, self._run, self._now = runner, conn, run, now

    def profile(self) -> dict[str, Any]:
        return self._runner.journal.profile(self._conn, self._run.customer_id)

    def segments(self) -> dict[str, bool]:
        return membership_flags(self._conn, self._run.customer_id)

    def events_since(self, name: str, since: int, before: int, after_seq: int) -> list[LoggedEvent]:
        return store.events_since(self._conn, self._run.customer_id, name, since, before, after_seq)

    def ending_events(self, names: frozenset[str], since: int) -> list[LoggedEvent]:
        journal = self._runner.journal
        return journal.ending_events(self._conn, self._run.customer_id, names, since, self._now)

    def plan_send(self, send: Any) -> SendPlan | str:
        runner, conn, customer = self._runner, self._conn, self._run.customer_id
        profile = self.profile()
        try:
            template = message_templates.get(conn, send.template)
        except message_templates.TemplateProblem as exc:
            return str(exc)  # checked when the journey went live; deleted since
        request = choice.Request(
            customer,
            send.template,
            send.purpose,
            send.channel,
            tuple(send.fallback),
            urgent=send.urgent,
        )
        return choice.plan(
            conn,
            runner.policies,
            request,
            profile,
            self._now,
            runner.region,
            template=template,
            sector=runner.sector,
        )
