"""Web Push subscriptions: saved when a browser subscribes, read to send, removed when the
push service says they are gone."""

from __future__ import annotations

from sqlalchemy import Connection, delete, update
from sqlalchemy.dialects import postgresql, sqlite

from parcours.messaging import outbox_rows
from parcours.messaging.tables import push_subscriptions
from parcours.runtime.documents import JsonObject


class SubscriptionError(ValueError):
    """A subscription that cannot be used; `field` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def check(subscription: object) -> JsonObject:
    """The browser's PushSubscription.toJSON(): an https endpoint and its two keys (the
    document the Push API defines, handed as it is to the push service's client)."""
    if not isinstance(subscription, dict):
        raise SubscriptionError("subscription", "expected the browser's PushSubscription JSON")
    endpoint = subscription.get("endpoint")
    keys = subscription.get("keys")
    if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
        raise SubscriptionError("subscription.endpoint", "must be the push service's URL")
    if len(endpoint) > 2000:
        raise SubscriptionError("subscription.endpoint", "is longer than 2000 characters")
    if not isinstance(keys, dict):
        raise SubscriptionError("subscription.keys", "must hold p256dh and auth")
    for name in ("p256dh", "auth"):
        value = keys.get(name)
        if not isinstance(value, str) or not value or len(value) > 200:
            raise SubscriptionError(f"subscription.keys.{name}", "must be base64url text")
    return {"endpoint": endpoint, "keys": {"p256dh": keys["p256dh"], "auth": keys["auth"]}}


def save(
    conn: Connection,
    customer_id: int,
    subscription: JsonObject,
    user_agent: str | None,
    now: int,
    *,
    verified_user_id: str | None = None,
) -> None:
    """Add the subscription, or move it to this customer (the same browser, signed in),
    recording the user id it was made with once its identity hash proved it (None: made
    anonymously; a browser that subscribes again anonymously loses its proof)."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(push_subscriptions).values(
        customer_id=customer_id,
        endpoint=subscription["endpoint"],
        p256dh=subscription["keys"]["p256dh"],
        auth=subscription["keys"]["auth"],
        user_agent=(user_agent or "")[:300] or None,
        created_at=now,
        verified_user_id=verified_user_id,
    )
    new = statement.excluded
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[push_subscriptions.c.endpoint],
            set_={
                "customer_id": new.customer_id,
                "p256dh": new.p256dh,
                "auth": new.auth,
                "user_agent": new.user_agent,
                "created_at": new.created_at,
                "verified_user_id": new.verified_user_id,
            },
        )
    )


def newest_endpoint(
    conn: Connection, customer_id: int, *, verified_only: bool = False
) -> str | None:
    """The endpoint of the customer's newest subscription; with `verified_only`, of the
    newest made with a verified user id (a signed-in customer, with identity verification
    set up: docs/security.md, Web Push). Read at every push sent (outbox_rows.py)."""
    return outbox_rows.newest_push_endpoint(conn, customer_id, verified_only)


def by_endpoint(conn: Connection, endpoint: str) -> JsonObject | None:
    """The subscription as the browser gave it (PushSubscription.toJSON()): the push
    service's client takes it as it is. Read at every push sent (outbox_rows.py)."""
    found = outbox_rows.push_subscription(conn, endpoint)
    if found is None:
        return None
    stored, p256dh, auth = found
    return {"endpoint": stored, "keys": {"p256dh": p256dh, "auth": auth}}


def remove(conn: Connection, endpoint: str) -> None:
    conn.execute(delete(push_subscriptions).where(push_subscriptions.c.endpoint == endpoint))


def reassign(conn: Connection, old: int, new: int) -> None:
    """Profiles merged: the merged customer's subscriptions are the survivor's."""
    conn.execute(
        update(push_subscriptions)
        .where(push_subscriptions.c.customer_id == old)
        .values(customer_id=new)
    )
