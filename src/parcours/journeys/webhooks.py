"""Webhook steps: a signed POST to the brand's URL, retried with backoff, at least once.

The step enqueues a delivery job in the run's transaction; the job makes the call. A
call that succeeded but whose commit was lost is made again, so receivers deduplicate on
the `X-Parcours-Delivery` header, which is the same for every attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

import httpx
import msgspec
from sqlalchemy import Connection

from parcours.runtime.queue import Job, enqueue

DELIVER = "journeys.webhook"
_encode = msgspec.json.Encoder().encode


def schedule_delivery(
    conn: Connection,
    *,
    delivery_id: str,
    url: str,
    body: dict[str, Any],
    secret_env: str | None,
    retries: int,
    now: int,
    customer_id: int,
) -> None:
    enqueue(
        conn,
        DELIVER,
        {"delivery_id": delivery_id, "url": url, "body": body, "secret_env": secret_env},
        run_at=now,
        now=now,
        queue="journeys",
        unique_key=f"webhook:{delivery_id}",
        on_conflict="ignore",
        customer_id=customer_id,
        max_attempts=max(1, retries + 1),
    )


def signature(secret: str, body: bytes) -> str:
    """`sha256=` and the hex HMAC-SHA256 of the exact body with the shared secret."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def deliver(_conn: Connection, job: Job) -> None:
    """The delivery job's handler: any answer but 2xx raises, so the queue retries."""
    payload = job.payload
    body = _encode(payload["body"])
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Parcours-Webhook/1",
        "X-Parcours-Delivery": payload["delivery_id"],
    }
    secret_env = payload.get("secret_env")
    if secret_env:
        secret = os.environ.get(secret_env)
        if not secret:
            raise LookupError(
                f"the environment variable {secret_env} holding the webhook secret is not set"
            )
        headers["X-Parcours-Signature"] = signature(secret, body)
    response = httpx.post(payload["url"], content=body, headers=headers, timeout=10)
    if not 200 <= response.status_code < 300:
        raise RuntimeError(f"{payload['url']} answered {response.status_code}")
