"""Webhook steps: a signed POST to the brand's URL, retried with backoff, at least once.

The step enqueues a delivery job in the run's transaction; the job makes the call after
its own commit. A call that succeeded but whose result was lost is made again, so
receivers deduplicate on the `X-Parcours-Delivery` header, the same for every attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from typing import Any

import httpx
import msgspec
from sqlalchemy import Connection

from parcours.runtime.clock import Clock
from parcours.runtime.db import Database
from parcours.runtime.queue import Job, Worker, backoff_ms, cancel, enqueue

log = logging.getLogger(__name__)

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


LEASE_MS = 5 * 60_000


class WebhookSender:
    """The delivery job's handler. The call is made after the job's transaction commits,
    never inside it (an SQLite write lock is never held across the network); the job is
    first put back for the end of a lease, so a crash during the call means one more
    call with the same delivery id, never none."""

    def __init__(self, db: Database, clock: Clock, worker: Worker) -> None:
        self.db = db
        self.clock = clock
        self.worker = worker
        self._local = threading.local()

    def deliver(self, conn: Connection, job: Job) -> None:
        now = self.clock.now_ms()
        payload = dict(job.payload)
        payload.setdefault("attempt", job.attempt)
        payload["attempt"] = int(payload["attempt"]) + 1
        # Put back for the end of the lease (the rescue), with the attempt counted.
        enqueue(
            conn,
            DELIVER,
            payload,
            run_at=now + LEASE_MS,
            now=now,
            queue=job.queue,
            unique_key=job.unique_key,
            customer_id=job.customer_id,
            max_attempts=job.max_attempts,
        )
        calls: list[tuple[Job, dict[str, Any]]] = self._calls()
        calls.append((job, payload))
        self.worker.after_commit(self._send_all)

    def _calls(self) -> list[tuple[Job, dict[str, Any]]]:
        if not hasattr(self._local, "calls"):
            self._local.calls = []
        calls: list[tuple[Job, dict[str, Any]]] = self._local.calls
        return calls

    def _send_all(self) -> None:
        calls, self._local.calls = self._calls(), []
        outcomes = [(job, payload, _post(payload)) for job, payload in calls]
        with self.db.write() as conn:
            now = self.clock.now_ms()
            for job, payload, error in outcomes:
                if error is None:
                    cancel(conn, str(job.unique_key))
                elif payload["attempt"] >= job.max_attempts:
                    cancel(conn, str(job.unique_key))
                    log.error(
                        "webhook %s to %s failed for good after %s attempts: %s",
                        payload["delivery_id"],
                        payload["url"],
                        payload["attempt"],
                        error,
                    )
                else:
                    log.warning(
                        "webhook %s failed, attempt %s: %s",
                        payload["delivery_id"],
                        payload["attempt"],
                        error,
                    )
                    enqueue(
                        conn,
                        DELIVER,
                        payload,
                        run_at=now + backoff_ms(int(payload["attempt"])),
                        now=now,
                        queue=job.queue,
                        unique_key=job.unique_key,
                        customer_id=job.customer_id,
                        max_attempts=job.max_attempts,
                    )


def _post(payload: dict[str, Any]) -> str | None:
    """Make the call; None when the receiver answered 2xx, else what went wrong."""
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
            return f"the environment variable {secret_env} holding the webhook secret is not set"
        headers["X-Parcours-Signature"] = signature(secret, body)
    try:
        response = httpx.post(payload["url"], content=body, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        return f"{payload['url']}: {exc}"
    if not 200 <= response.status_code < 300:
        return f"{payload['url']} answered {response.status_code}"
    return None
