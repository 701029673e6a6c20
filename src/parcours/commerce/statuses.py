"""One shipment status taxonomy, the words that map onto it, and the rule that never moves
a shipment backwards (docs/commerce.md, "The shipment status taxonomy"). Pure: no
database."""

from __future__ import annotations

from dataclasses import dataclass

INFO_RECEIVED = "info_received"
IN_TRANSIT = "in_transit"
OUT_FOR_DELIVERY = "out_for_delivery"
FAILED_ATTEMPT = "failed_attempt"
AVAILABLE_FOR_PICKUP = "available_for_pickup"
DELIVERED = "delivered"
EXCEPTION = "exception"
RETURNED_TO_SENDER = "returned_to_sender"
EXPIRED = "expired"

# Each stage's rank; `exception` is no stage (below).
RANKS: dict[str, int] = {
    INFO_RECEIVED: 0,
    IN_TRANSIT: 1,
    OUT_FOR_DELIVERY: 2,
    FAILED_ATTEMPT: 2,
    AVAILABLE_FOR_PICKUP: 2,
    EXPIRED: 3,
    DELIVERED: 4,
    RETURNED_TO_SENDER: 4,
}
STATUSES = (*RANKS, EXCEPTION)
FINAL = frozenset({DELIVERED, RETURNED_TO_SENDER})

# A reported word -> its status (None: recorded, moves nothing). The taxonomy's own words,
# Parcours' older shipment words (docs/events.md) and Shopify's `shipment_status` values.
WORDS: dict[str, str | None] = {
    **{status: status for status in STATUSES},
    "created": INFO_RECEIVED,
    "label_created": INFO_RECEIVED,
    "label_printed": INFO_RECEIVED,
    "label_purchased": INFO_RECEIVED,
    "confirmed": INFO_RECEIVED,
    "carrier_picked_up": IN_TRANSIT,
    "delivery_attempted": FAILED_ATTEMPT,
    "attempted_delivery": FAILED_ATTEMPT,
    "ready_for_pickup": AVAILABLE_FOR_PICKUP,
    "picked_up": DELIVERED,
    "failed": EXCEPTION,
    "failure": EXCEPTION,
    "delayed": None,
}


def status_of(word: str) -> str | None:
    """The status a reported word stands for (None: none, or a word not known)."""
    return WORDS.get(word.strip().lower())


def is_known(word: str) -> bool:
    return word.strip().lower() in WORDS


@dataclass(frozen=True)
class Position:
    """Where a shipment stands: its status, the furthest stage's rank, and when."""

    status: str
    progress: int
    at: int


def first_position(status: str | None, at: int) -> Position:
    """A shipment's first report (one naming no stage starts it at `info_received`)."""
    chosen = status or INFO_RECEIVED
    return Position(chosen, RANKS.get(chosen, 0), at)


def advance(current: Position, status: str | None, at: int) -> Position | None:
    """The new position after a report of `status` at `at`, or None when it does not move
    the shipment: nothing moves a final one; an `exception` shows when it is not older
    than the current status; a stage moves it when it is further than the furthest
    reached, or as far and not older."""
    if status is None or current.status in FINAL:
        return None
    if status == EXCEPTION:
        return Position(EXCEPTION, current.progress, at) if at >= current.at else None
    rank = RANKS[status]
    if rank > current.progress or (rank == current.progress and at >= current.at):
        if status == current.status and rank == current.progress:
            return None  # the same again: history only
        return Position(status, max(rank, current.progress), at)
    return None
