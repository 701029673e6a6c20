"""Referrals: a code for every customer who orders, and the friend's first order with it
credits them, once.

The log's reaction hands every `Order Completed` to a `loyalty.referrals` job, in the
transaction that stored it. The job issues the customer's code if they have none
(`Referral Code Issued`, which sets the trait `referral_code`), and when the order
carries a code of someone else's and is the friend's first order, credits that referrer
(`Referral Converted`, with a reward code); a credit refused is `Referral Not Credited`
with its reason. Each change of the loyalty tables is written with its event, through
the log's one door, in one transaction. See docs/loyalty.md.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection

from parcours import commerce
from parcours.customers import order_key
from parcours.customers import profiles as customers
from parcours.log import Event, Reactions, append_events, internal_event
from parcours.loyalty import codes
from parcours.loyalty.tables import referral_codes
from parcours.runtime.clock import Clock
from parcours.runtime.db import insert_rows, select_in, sql, try_lock_buckets
from parcours.runtime.queue import Job, Worker, enqueue

ORDER_EVENT = "Order Completed"
ISSUED_EVENT = "Referral Code Issued"
CONVERTED_EVENT = "Referral Converted"
NOT_CREDITED_EVENT = "Referral Not Credited"
CODE_TRAIT = "referral_code"
SOURCE = "loyalty"
# The referrals' advisory locks: a space apart from the writer's and the customers', on
# LOCK_BUCKETS buckets of the customer id, only ever tried (runtime/db.py
# try_lock_buckets). A batch never waits for another's: the buyers whose bucket another
# worker holds go to a job DEFER_MS later. So two workers' batches cannot deadlock here,
# and all of them together hold at most LOCK_BUCKETS of these locks (a flash sale's
# 10,000 buyers took one each, more than PostgreSQL's lock table holds by default for
# every session together: bench/RESULTS.md, session 20).
LOCK_SPACE = 5_102
LOCK_BUCKETS = 1_024
DEFER_MS = 1_000
JOB = "loyalty.referrals"
# Why a code on an order credited nobody (`reason` of Referral Not Credited).
SELF_REFERRAL = "self_referral"
NOT_FIRST_ORDER = "not_first_order"
ALREADY_CREDITED = "already_credited"
_FRESH_ATTEMPTS = 20
# The codes of plain orders are issued at the next whole GATHER_MS, so that the orders of
# that span are served by one batch (docs/loyalty.md, "The referral code").
GATHER_MS = 1_000


class Referrals:
    def __init__(self, clock: Clock, default_region: str, reactions: Reactions) -> None:
        self.clock = clock
        self.region = default_region
        # What `prepare` did for the batch running in this thread: its connection, the
        # live profile of each customer, the customers whose codes it issued.
        self._local = threading.local()
        # The appends of this module run every hook, so journeys see what it records.
        self.reactions = reactions

    def install(self, worker: Worker, reactions: Reactions) -> None:
        worker.register(JOB, self.react, prepare=self.prepare)
        reactions.react("referrals", self.on_events)

    # ---- in the append transaction ------------------------------------------------------

    def on_events(self, conn: Connection, events: list[Event], now: int) -> None:
        """Reaction to an append: orders go to a job. (Codes follow merged profiles:
        loyalty.people.)"""
        orders: list[dict[str, Any]] = []
        for event in events:
            if event.type == "track" and event.name == ORDER_EVENT and event.customer_id:
                orders.append(
                    {
                        "customer_id": event.customer_id,
                        "occurred_at": event.occurred_at,
                        "order_id": order_key(event.properties, event.message_id),
                        "codes": codes.codes_in_order(event.properties),
                    }
                )
        # An order carrying a code is credited at once. The others only need the buyer's
        # code, which can wait: their jobs are due at the next whole GATHER_MS, so that the
        # jobs of every commit in that span fall due together and the preparer issues all
        # their codes in one append. (Due GATHER_MS after each commit, they fell due one
        # by one, and the worker, woken for each, ran them one by one.)
        crediting = [order for order in orders if order["codes"]]
        if crediting:
            enqueue(conn, JOB, {"orders": crediting}, run_at=now, now=now)
        if len(crediting) < len(orders):
            issuing = [order for order in orders if not order["codes"]]
            due = (now // GATHER_MS + 1) * GATHER_MS
            enqueue(conn, JOB, {"orders": issuing}, run_at=due, now=now)

    # ---- the job ------------------------------------------------------------------------

    def prepare(self, conn: Connection, jobs: list[Job]) -> None:
        """Before a batch of these jobs: the codes of all their buyers, issued at once (one
        append for the batch, where each job made its own). Each job then credits what its
        orders earn and finds its buyers served. An optimisation only (docs/queue.md): if
        it fails, it is rolled back and each job issues its own codes."""
        self._local.prepared = None
        orders = [order for job in jobs for order in job.payload["orders"]]
        live = customers.live_customers(conn, [order["customer_id"] for order in orders])
        ordered_at = _first_orders(orders, live)
        if ordered_at:
            self._issue(conn, ordered_at, self.clock.now_ms())
        self._local.prepared = (conn, live, set(ordered_at))

    def react(self, conn: Connection, job: Job) -> None:
        orders: list[dict[str, Any]] = job.payload["orders"]
        prepared = getattr(self._local, "prepared", None)
        if prepared is not None and prepared[0] is conn:
            _, live, served = prepared
        else:
            live = customers.live_customers(conn, [order["customer_id"] for order in orders])
            served = set()
        now = self.clock.now_ms()
        for order in sorted(orders, key=lambda order: order["occurred_at"]):
            customer = live.get(int(order["customer_id"]))
            if customer is not None and order["codes"]:
                self._credit(conn, customer, order, now)
        ordered_at = {
            customer: at
            for customer, at in _first_orders(orders, live).items()
            if customer not in served
        }
        if ordered_at:
            self._issue(conn, ordered_at, now)

    def _issue(self, conn: Connection, ordered_at: dict[int, int], now: int) -> None:
        """A code for each of these customers who has none, dated by the order it was issued
        for (so that importing history issues codes and sends nothing); one append for the
        whole job. Two workers holding orders of the same customer take turns: the
        customers whose lock another holds are issued by a job a little later, which finds
        the code if the other issued it."""
        mine = _try_lock(conn, ordered_at)
        if len(mine) < len(ordered_at):
            later: list[dict[str, Any]] = [
                {"customer_id": c, "occurred_at": at, "order_id": None, "codes": []}
                for c, at in ordered_at.items()
                if c not in mine
            ]
            _defer(conn, later, now)
        wanted = sorted(mine - _holders(conn, mine))
        first_names: dict[int, str | None] = {}
        for customer, traits in customers.traits_of(conn, wanted).items():
            name = traits.get("first_name") or traits.get("firstName")
            first_names[customer] = name if isinstance(name, str) else None
        issued = _fresh_codes(conn, first_names)
        if not issued:
            return
        insert_rows(
            conn,
            referral_codes,
            ("code", "customer_id", "issued_at"),
            [(code, customer, now) for customer, code in issued.items()],
        )
        # One event per code: the fact, and the trait it gives (`context.traits`).
        events = [
            internal_event(
                customer,
                ISSUED_EVENT,
                {"code": code},
                ordered_at[customer],
                f"referral:code:{code}",
                SOURCE,
                context_traits={CODE_TRAIT: code},
                received_at=now,
            )
            for customer, code in issued.items()
        ]
        self._append(conn, events, now)

    def _credit(self, conn: Connection, referee: int, order: dict[str, Any], now: int) -> None:
        owners = dict(
            select_in(
                conn,
                "SELECT code, customer_id FROM referral_codes WHERE code IN ({marks})",
                order["codes"],
            )
        )
        code = next((c for c in order["codes"] if c in owners), None)
        if code is None:
            return  # a discount code of the shop's, or a mistyped one: nobody to credit
        referrer = customers.live_customers(conn, [owners[code]]).get(int(owners[code]))
        if referrer is None:
            return  # the code's owner was erased
        # Several workers may hold orders of the same friend (one order reported by the shop
        # and by the site): they take turns, the second a little later; the referee's primary
        # key is the last guard.
        if _try_lock(conn, (referee, referrer)) != {referee, referrer}:
            _defer(conn, [{**order, "customer_id": referee}], now)
            return
        order_id = str(order["order_id"])
        at = int(order["occurred_at"])
        details = {"code": code, "referee_id": customers.public_id(referee), "order_id": order_id}
        reason = _refusal(conn, referee, referrer, order_id)
        if reason == "":
            return  # this very order was already credited (reported twice)
        if reason is not None:
            event = internal_event(
                referrer,
                NOT_CREDITED_EVENT,
                {**details, "reason": reason},
                at,
                f"referral:not-credited:{referee}:{order_id}",
                SOURCE,
                received_at=now,
            )
            self._append(conn, [event], now)
            return
        reward = _fresh_reward_code(conn)
        inserted = sql(
            conn,
            "INSERT INTO referral_conversions (referee_id, referrer_id, code, order_id, "
            "reward_code, converted_at) VALUES (:referee, :referrer, :code, :o, :reward, :at) "
            "ON CONFLICT (referee_id) DO NOTHING RETURNING referee_id",
            {
                "referee": referee,
                "referrer": referrer,
                "code": code,
                "o": order_id,
                "reward": reward,
                "at": now,
            },
        ).first()
        if inserted is None:
            return
        count = sql(
            conn,
            "SELECT count(*) FROM referral_conversions WHERE referrer_id = :r",
            {"r": referrer},
        ).scalar_one()
        event = internal_event(
            referrer,
            CONVERTED_EVENT,
            {**details, "reward_code": reward, "referrals_count": int(count)},
            at,
            f"referral:converted:{referee}",
            SOURCE,
            received_at=now,
        )
        self._append(conn, [event], now)

    def _append(self, conn: Connection, events: list[Event], now: int) -> None:
        append_events(conn, [events], now, self.reactions)


def _try_lock(conn: Connection, customers: Iterable[int]) -> set[int]:
    """Those of these customers whose referral lock this transaction holds or could take
    without waiting."""
    wanted = set(customers)
    held = try_lock_buckets(conn, LOCK_SPACE, {c % LOCK_BUCKETS for c in wanted})
    return {c for c in wanted if c % LOCK_BUCKETS in held}


def _defer(conn: Connection, orders: list[dict[str, Any]], now: int) -> None:
    """These orders' referral work, left to a job DEFER_MS later: another worker holds
    their customers' locks (a job due at once could be claimed by this very batch, which
    would find them held again)."""
    enqueue(conn, JOB, {"orders": orders}, run_at=now + DEFER_MS, now=now)


def _first_orders(orders: list[dict[str, Any]], live: dict[int, int]) -> dict[int, int]:
    """Each live customer of these orders -> the time of their first order among them
    (erased customers are left out)."""
    first: dict[int, int] = {}
    for order in orders:
        customer = live.get(int(order["customer_id"]))
        if customer is not None:
            at = int(order["occurred_at"])
            first[customer] = min(at, first.get(customer, at))
    return first


def _refusal(conn: Connection, referee: int, referrer: int, order_id: str) -> str | None:
    """Why this order credits nobody: a reason; "" for an order already credited; None
    when it credits the referrer."""
    if referee == referrer:
        return SELF_REFERRAL
    credited = sql(
        conn,
        "SELECT order_id FROM referral_conversions WHERE referee_id = :r",
        {"r": referee},
    ).scalar()
    if credited == order_id:
        return ""
    if commerce.first_order(conn, referee) != order_id:
        return NOT_FIRST_ORDER
    if credited is not None:
        return ALREADY_CREDITED  # a first order again: profiles merged after the credit
    return None


def _holders(conn: Connection, candidates: set[int]) -> set[int]:
    """Which of these customers hold a referral code."""
    return {
        int(customer)
        for (customer,) in select_in(
            conn,
            "SELECT DISTINCT customer_id FROM referral_codes WHERE customer_id IN ({marks})",
            sorted(candidates),
        )
    }


def _fresh_codes(conn: Connection, first_names: dict[int, str | None]) -> dict[int, str]:
    """A new referral code for each customer, none already taken nor given twice here (a
    race for the same one is the primary key's to refuse; the job is then retried)."""
    chosen: dict[int, str] = {}
    pending = dict(first_names)
    for _ in range(_FRESH_ATTEMPTS):
        if not pending:
            return chosen
        offered: dict[str, int] = {}
        for customer, name in pending.items():
            offered.setdefault(codes.new_referral_code(name), customer)
        taken = {
            code
            for (code,) in select_in(
                conn, "SELECT code FROM referral_codes WHERE code IN ({marks})", list(offered)
            )
        }
        for code, customer in offered.items():
            if code not in taken:
                chosen[customer] = code
                del pending[customer]
    if pending:
        raise RuntimeError(f"no free referral code after {_FRESH_ATTEMPTS} attempts")
    return chosen


def _fresh_reward_code(conn: Connection) -> str:
    for _ in range(_FRESH_ATTEMPTS):
        candidate = codes.new_reward_code()
        if (
            sql(
                conn,
                "SELECT 1 FROM referral_conversions WHERE reward_code = :v",
                {"v": candidate},
            ).first()
            is None
        ):
            return candidate
    raise RuntimeError(f"no free reward code after {_FRESH_ATTEMPTS} attempts")
