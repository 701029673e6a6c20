"""Messaging's part when two profiles merge or a person is erased (customers.people):
messages, suppressions, bounces, inbound mail, push subscriptions and Wallet passes and
orders follow the person."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, delete

from parcours.messaging import passes, subscriptions, wallet_orders
from parcours.messaging.outbox import reassign_intents
from parcours.messaging.tables import (
    bounces,
    inbound_ignored,
    outbox,
    push_subscriptions,
    suppressions,
    wallet_passes,
    wallet_registrations,
)
from parcours.messaging.tables import (
    wallet_orders as wallet_orders_table,
)

_ERASED = (
    outbox,
    suppressions,
    bounces,
    inbound_ignored,
    push_subscriptions,
    wallet_passes,
    wallet_registrations,
    wallet_orders_table,
)
TABLES = tuple(table.name for table in _ERASED)


def follow_merge(conn: Connection, merged_id: int, survivor_id: int, now: int) -> None:
    """Profiles merged: the merged customer's messages, browsers, Wallet passes, devices
    and orders are the survivor's. Suppressions, bounces and inbound mail stay with the id
    they were recorded for (an erasure of the person still reaches them)."""
    reassign_intents(conn, merged_id, survivor_id)
    subscriptions.reassign(conn, merged_id, survivor_id)
    passes.reassign(conn, merged_id, survivor_id)
    wallet_orders.reassign(conn, merged_id, survivor_id)


def erase(conn: Connection, customer_ids: Sequence[int]) -> dict[str, int]:
    """A person erased: every message, suppression, bounce, inbound mail, subscription,
    Wallet pass, device and order about them."""
    ids = list(customer_ids)
    return {
        table.name: conn.execute(delete(table).where(table.c.customer_id.in_(ids))).rowcount
        for table in _ERASED
    }
