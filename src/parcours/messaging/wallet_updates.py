"""Keeping what customers hold in their Wallets in step, through the durable queue: Wallet
orders follow their order's events (issued when it is placed; what it shows is commerce's
order and shipments, and a change of them, told by an order or shipment event, moves its
tag on); the devices holding a pass or an order that changed are told
through APNs; a pass's Google Wallet object is patched through Google's REST API. Each
call outside the database is made after its job's commit and retried with backoff
(runtime/queue.py, `CallAfterCommit`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection

from parcours.channels import DeliveryFailure, WalletIssuer
from parcours.customers import profiles as customers
from parcours.log import Event, Reactions
from parcours.messaging import passes, wallet_orders
from parcours.messaging.outbox import QUEUE
from parcours.runtime.clock import Clock
from parcours.runtime.i18n import pick_locale
from parcours.runtime.queue import CallAfterCommit, Job, Outcome, Worker, enqueue

log = logging.getLogger(__name__)

FOLLOW = "messaging.wallet_orders"  # bring Wallet orders in step after order and shipment events


class WalletUpdates:
    def __init__(
        self,
        clock: Clock,
        issuer: WalletIssuer | Callable[[], WalletIssuer | None] | None,
        brand_locale: str,
    ) -> None:
        """`issuer`: the Wallet issuer, or what gives the one in force at each use (a
        Wallet set up in the console may change while Parcours runs)."""
        self.clock = clock
        self._issuer = issuer
        self.brand_locale = brand_locale

    @property
    def issuer(self) -> WalletIssuer | None:
        return self._issuer() if callable(self._issuer) else self._issuer

    @property
    def follows_orders(self) -> bool:
        return self.issuer is not None and self.issuer.orders is not None

    def install(self, worker: Worker, reactions: Reactions) -> None:
        worker.register(FOLLOW, self.follow)
        CallAfterCommit(worker, passes.PUSH, self._push_request, self._push)
        CallAfterCommit(worker, passes.GOOGLE_SYNC, self._google_request, self._google)
        reactions.react("wallet updates", self.on_events)

    # ---- events -------------------------------------------------------------------------

    def on_events(self, conn: Connection, events: list[Event], now: int) -> None:
        """Reaction to an append: the Wallet orders of the orders that order and shipment
        events name are brought in step by a job.
        (Merged profiles carry their passes and orders along: messaging.people.)"""
        if not self.follows_orders:
            return
        relevant = [
            {
                "name": e.name,
                "customer_id": e.customer_id,
                "occurred_at": e.occurred_at,
                "properties": {"order_id": e.properties["order_id"]},  # what is shown: commerce's
            }
            for e in events
            if wallet_orders.follows(e.name)
            and e.customer_id is not None
            and e.properties.get("order_id") is not None
        ]
        if relevant:
            enqueue(conn, FOLLOW, {"events": relevant}, run_at=now, now=now, queue=QUEUE)

    def follow(self, conn: Connection, job: Job) -> None:
        """Issue the Wallet orders of placed orders; bring each order the events name in
        step with commerce (what it shows is read from commerce's face, which the append
        that enqueued this job already projected); ask for the devices holding a changed
        order to be told."""
        now = self.clock.now_ms()
        events = job.payload["events"]
        placed: dict[str, int] = {}  # order id -> the customer who placed it
        named: dict[str, None] = {}  # the orders named, first named first
        for event in events:
            order_id = str(event["properties"]["order_id"])
            named.setdefault(order_id)
            if event["name"] == wallet_orders.PLACED:
                placed.setdefault(order_id, int(event["customer_id"]))
        for order_id in named:
            if order_id in placed:
                customer_id = placed[order_id]
                locale = self._locale(conn, customer_id)
                wallet_orders.issue(conn, customer_id, order_id, locale, now)
            changed = wallet_orders.refresh(conn, order_id, now)
            if changed is not None:
                passes.request_push(
                    conn, changed.identifier, changed.customer_id, now, kind="order"
                )

    def _locale(self, conn: Connection, customer_id: int) -> str:
        """The customer's language for the order's texts, else the brand's."""
        try:
            locale = customers.conditions_view(conn, customer_id)["traits"].get("locale")
        except customers.CustomerNotFound:
            locale = None
        return pick_locale(locale if isinstance(locale, str) else None, self.brand_locale)

    # ---- telling the devices (APNs) ----------------------------------------------------

    def _push_request(self, conn: Connection, job: Job) -> dict[str, Any] | None:
        serial = str(job.payload["serial"])
        tokens = passes.push_tokens(conn, serial)
        kind = job.payload.get("kind", "pass")
        return {"serial": serial, "kind": kind, "tokens": tokens} if tokens else None

    def _push(self, request: dict[str, Any]) -> Outcome:
        serial: str = request["serial"]
        issuer = self.issuer
        pusher = None
        if issuer is not None and request["kind"] == "order":
            pusher = issuer.orders.pusher if issuer.orders is not None else None
        elif issuer is not None:
            pusher = issuer.pusher
        if pusher is None:
            return Outcome()  # no APNs configured: devices see the change when they look
        gone: list[str] = []
        for token in request["tokens"]:
            try:
                if not pusher.push(token):
                    gone.append(token)
            except DeliveryFailure as exc:
                return Outcome(error=exc.reason, record=_forget(serial, gone))
        return Outcome(record=_forget(serial, gone))

    # ---- Google Wallet -----------------------------------------------------------------

    def _google_request(self, conn: Connection, job: Job) -> dict[str, Any] | None:
        record = passes.get(conn, str(job.payload["serial"]))
        google = self.issuer.google if self.issuer is not None else None
        if record is None or not record.google_object_id or google is None:
            return None
        assert self.issuer is not None
        return google.card(record.record(), self.issuer.organization_name)

    def _google(self, card: dict[str, Any]) -> Outcome:
        assert self.issuer is not None and self.issuer.google is not None
        try:
            self.issuer.google.upsert(card)
        except DeliveryFailure as exc:
            return Outcome(error=exc.reason, retry=not exc.permanent)
        return Outcome()


def _forget(serial: str, tokens: list[str]) -> Any:
    if not tokens:
        return None

    def record(conn: Connection) -> None:
        passes.forget_push_tokens(conn, serial, tokens)

    return record
