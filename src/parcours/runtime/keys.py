"""API keys: write keys for ingestion, admin keys (secret) for the admin API. Stored hashed."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import BigInteger, Column, Table, Text, insert, select, update

from parcours.runtime.db import BigId, Database, metadata

KeyKind = Literal["write", "admin"]

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("kind", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("key_hash", Text, nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
)


@dataclass(frozen=True)
class ApiKey:
    id: int
    kind: str
    name: str
    created_at: int
    revoked_at: int | None


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret(kind: KeyKind) -> str:
    return f"pc_{kind}_{secrets.token_urlsafe(24)}"


def create_key(db: Database, kind: KeyKind, name: str, secret: str | None = None) -> str:
    """Store a key and return its secret (shown once; only its hash is kept)."""
    secret = secret or new_secret(kind)
    with db.write() as conn:
        conn.execute(
            insert(api_keys).values(
                kind=kind, name=name, key_hash=hash_key(secret), created_at=_now_ms()
            )
        )
    return secret


def ensure_key(db: Database, kind: KeyKind, secret: str, name: str) -> None:
    """Make sure this secret is a live key of this kind (for keys given in the environment)."""
    digest = hash_key(secret)
    with db.write() as conn:
        row = conn.execute(
            select(api_keys.c.kind, api_keys.c.revoked_at).where(api_keys.c.key_hash == digest)
        ).first()
        if row is None:
            conn.execute(
                insert(api_keys).values(kind=kind, name=name, key_hash=digest, created_at=_now_ms())
            )
        elif row.kind != kind:
            raise ValueError(f"the {name} is already registered as a {row.kind} key")


def revoke_key(db: Database, key_id: int) -> bool:
    with db.write() as conn:
        result = conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=_now_ms())
        )
        return bool(result.rowcount)


def list_keys(db: Database) -> list[ApiKey]:
    with db.read() as conn:
        rows = conn.execute(select(api_keys).order_by(api_keys.c.id)).all()
    return [ApiKey(r.id, r.kind, r.name, r.created_at, r.revoked_at) for r in rows]


class KeyChecker:
    """Answers "is this a live key of this kind" from memory, asking the database again
    every `ttl` seconds so that a revoked key stops working within that time."""

    def __init__(self, db: Database, ttl: float = 10.0) -> None:
        self._db = db
        self._ttl = ttl
        self._lock = threading.Lock()
        self._known: dict[str, tuple[str | None, str | None, float]] = {}

    def check(self, kind: KeyKind, secret: str) -> bool:
        return self.holder(kind, secret) is not None

    def holder(self, kind: KeyKind, secret: str) -> str | None:
        """The name of the live key of this kind with this secret (who is acting), or None."""
        if not secret:
            return None
        digest = hash_key(secret)
        now = time.monotonic()
        with self._lock:
            cached = self._known.get(digest)
        if cached is None or now - cached[2] > self._ttl:
            with self._db.read() as conn:
                row = conn.execute(
                    select(api_keys.c.kind, api_keys.c.name).where(
                        api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None)
                    )
                ).first()
            cached = (row.kind if row else None, row.name if row else None, now)
            with self._lock:
                if len(self._known) > 10_000:
                    self._known.clear()
                self._known[digest] = cached
        return cached[1] if cached[0] == kind else None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
