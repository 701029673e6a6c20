"""A batch of messages being handed to their providers, after the claim has committed and
outside any transaction (docs/channels.md, "Delivery")."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from parcours.channels import DeliveryFailure, OutgoingMessage, Provider, TransientFailure
from parcours.messaging.outbox import public_message_id

log = logging.getLogger(__name__)


@dataclass
class Sending:
    message: OutgoingMessage
    provider: Provider


Outcome = str | DeliveryFailure  # the provider's message id, or why it was not sent


def send_one(sending: Sending) -> Outcome:
    """What the provider said; whatever it raises is a failure, never a lost message."""
    try:
        return sending.provider.send(sending.message)
    except DeliveryFailure as failure:
        return failure
    except Exception as exc:  # a provider's bug must not lose the message
        log.exception(
            "provider %s failed on %s",
            sending.provider.name,
            public_message_id(sending.message.outbox_id),
        )
        return TransientFailure(f"provider error: {exc!r}")


class LeaseKeeper:
    """While a batch is being sent, `renew` runs every `every` seconds (the first time
    only after that long: a batch sent in time costs nothing), so that the batch's
    leases never run out under a worker that is still making its calls; were they to,
    another worker, or this one, would send the messages again."""

    def __init__(self, renew: Callable[[], None], every: float) -> None:
        self._renew = renew
        self._every = every
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="parcours-lease", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._every):
            try:
                self._renew()
            except Exception:  # the next turn tries again; a lost turn costs a re-send
                log.exception("renewing the leases of a batch being sent failed")

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


class Sends:
    """A batch being handed to its providers: each provider gets as many threads as it
    has connections, each thread taking the next message as soon as it is done with one
    (no future and hand-off per message, as a thread pool would have); its leases kept
    while it lasts (`keeper`)."""

    def __init__(self, batch: list[Sending], keeper: LeaseKeeper | None = None) -> None:
        self.batch = batch
        self.keeper = keeper
        self.outcomes: list[Outcome | None] = [None] * len(batch)
        by_provider: dict[int, list[int]] = {}
        for index, sending in enumerate(batch):
            by_provider.setdefault(id(sending.provider), []).append(index)
        self.threads = []
        for indexes in by_provider.values():
            turns = iter(indexes)  # next() on a list iterator is atomic: no lock needed
            width = max(1, min(batch[indexes[0]].provider.connections, len(indexes)))
            self.threads += [
                threading.Thread(target=self._send_in_turn, args=(turns,), name="parcours-send")
                for _ in range(width)
            ]
        for thread in self.threads:
            thread.start()

    def _send_in_turn(self, turns: Iterator[int]) -> None:
        for index in turns:
            self.outcomes[index] = send_one(self.batch[index])

    def results(self) -> list[tuple[Sending, Outcome]]:
        """Every message with its outcome, once all are sent."""
        for thread in self.threads:
            thread.join()
        if self.keeper is not None:
            self.keeper.stop()
        results = []
        for sending, outcome in zip(self.batch, self.outcomes, strict=True):
            assert outcome is not None  # send_one catches everything a provider raises
            results.append((sending, outcome))
        return results


__all__ = ["LeaseKeeper", "Outcome", "Sending", "Sends", "send_one"]
