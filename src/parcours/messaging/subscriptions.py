"""Web Push subscriptions: saved when a browser subscribes, read to send, removed when the
push service says they are gone."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from parcours.runtime.db import sql


class SubscriptionError(ValueError):
    """A subscription that cannot be used; `field` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def check(subscription: Any) -> dict[str, Any]:
    """The browser's PushSubscription.toJSON(): an https endpoint and its two keys."""
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
    subscription: dict[str, Any],
    user_agent: str | None,
    now: int,
    *,
    verified_user_id: str | None = None,
) -> None:
    """Add the subscription, or move it to this customer (the same browser, signed in),
    recording the user id it was made with once its identity hash proved it (None: made
    anonymously; a browser that subscribes again anonymously loses its proof)."""
    sql(
        conn,
        "INSERT INTO push_subscriptions (customer_id, endpoint, p256dh, auth, user_agent, "
        "created_at, verified_user_id) VALUES (:c, :e, :p, :a, :ua, :now, :v) "
        "ON CONFLICT (endpoint) DO UPDATE SET customer_id = excluded.customer_id, "
        "p256dh = excluded.p256dh, auth = excluded.auth, user_agent = excluded.user_agent, "
        "created_at = excluded.created_at, verified_user_id = excluded.verified_user_id",
        {
            "c": customer_id,
            "e": subscription["endpoint"],
            "p": subscription["keys"]["p256dh"],
            "a": subscription["keys"]["auth"],
            "ua": (user_agent or "")[:300] or None,
            "now": now,
            "v": verified_user_id,
        },
    )


def newest_endpoint(
    conn: Connection, customer_id: int, *, verified_only: bool = False
) -> str | None:
    """The endpoint of the customer's newest subscription; with `verified_only`, of the
    newest made with a verified user id (a signed-in customer, with identity verification
    set up: docs/security.md, Web Push)."""
    verified = " AND verified_user_id IS NOT NULL" if verified_only else ""
    value = sql(
        conn,
        f"SELECT endpoint FROM push_subscriptions WHERE customer_id = :c{verified} "
        "ORDER BY created_at DESC, id DESC LIMIT 1",
        {"c": customer_id},
    ).scalar()
    return None if value is None else str(value)


def by_endpoint(conn: Connection, endpoint: str) -> dict[str, Any] | None:
    row = sql(
        conn,
        "SELECT endpoint, p256dh, auth FROM push_subscriptions WHERE endpoint = :e",
        {"e": endpoint},
    ).first()
    if row is None:
        return None
    return {"endpoint": row.endpoint, "keys": {"p256dh": row.p256dh, "auth": row.auth}}


def remove(conn: Connection, endpoint: str) -> None:
    sql(conn, "DELETE FROM push_subscriptions WHERE endpoint = :e", {"e": endpoint})


def reassign(conn: Connection, old: int, new: int) -> None:
    """Profiles merged: the merged customer's subscriptions are the survivor's."""
    sql(
        conn,
        "UPDATE push_subscriptions SET customer_id = :new WHERE customer_id = :old",
        {"new": new, "old": old},
    )
