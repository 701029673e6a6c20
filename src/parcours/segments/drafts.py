"""A segment's draft counted before it is saved: how many customers it would hold now, and a
few of them, evaluated with the same evaluator as the saved segments (evaluation.py), in
chunks of customers, within a time budget. Nothing is written: a read transaction only.

What it costs: one chunk (500 customers) is one query for the profiles and one per
`events:` condition, as in a batch evaluation (docs/architecture.md gives the rates:
1,400-6,400 customers a second). Past `budget_ms` or `max_customers` it stops and says how
many customers it looked at; the count is then theirs, with an estimate for everyone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from parcours.customers import profiles as customers
from parcours.customers import public_id
from parcours.runtime.db import Database
from parcours.segments.definition import compile_segment, load_segment
from parcours.segments.engine import BACKFILL_CHUNK, load_facts
from parcours.segments.evaluation import is_member

BUDGET_MS = 1_500
MAX_CUSTOMERS = 50_000
SAMPLE = 5


@dataclass(frozen=True)
class DraftCount:
    """Who a draft would hold now: `members` among the `examined` customers (all of
    them when `complete`), the first few of them, and how many customers there are."""

    members: int
    examined: int
    customers: int
    complete: bool
    sample: tuple[str, ...]  # cus_N, in id order

    @property
    def estimate(self) -> int:
        """The members among everyone, scaled from those examined when not complete."""
        if self.complete or self.examined == 0:
            return self.members
        return round(self.members * self.customers / self.examined)


def count_draft(
    db: Database,
    source: str,
    now: int,
    *,
    sample: int = SAMPLE,
    budget_ms: int = BUDGET_MS,
    max_customers: int = MAX_CUSTOMERS,
) -> DraftCount:
    """Evaluate the definition `source` for the customers as they are now, without saving
    it; SegmentError (naming each problem's line) when it cannot be used."""
    compiled = compile_segment(load_segment(source))
    deadline = time.monotonic() + budget_ms / 1000
    members = examined = 0
    found: list[str] = []
    after = 0
    with db.read() as conn:
        everyone = customers.count_customers(conn)
        while True:
            asked = min(BACKFILL_CHUNK, max_customers - examined)
            ids = customers.ids_after(conn, after, asked) if asked > 0 else []
            if not ids:  # everyone seen, or the limit reached
                complete = asked > 0 or not customers.ids_after(conn, after, 1)
                return DraftCount(members, examined, everyone, complete, tuple(found))
            facts = load_facts(conn, compiled, ids, now)
            for customer in ids:
                held = facts.get(customer)
                if held is not None and is_member(compiled, held, now):
                    members += 1
                    if len(found) < sample:
                        found.append(public_id(customer))
            examined += len(facts)
            after = ids[-1]
            if len(ids) < asked:
                return DraftCount(members, examined, everyone, True, tuple(found))
            if time.monotonic() >= deadline:
                return DraftCount(members, examined, everyone, False, tuple(found))


__all__ = ["DraftCount", "count_draft"]
