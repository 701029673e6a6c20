"""API keys: write keys for ingestion, admin keys (secret) for the admin API. Stored hashed."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Index,
    Table,
    Text,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from parcours.runtime.db import BigId, Database, metadata

KeyKind = Literal["write", "admin"]

# What an admin key may be limited to, one scope per part of the admin API and what it does
# there (web/guards.py says which route needs which). A key limited by none reaches every
# route (its user's role still decides the journeys' lifecycle: web/journeys_api.py).
SCOPES = (
    "customers:read",
    "customers:write",
    "journeys:read",
    "journeys:write",
    "segments:read",
    "segments:write",
    "templates:read",
    "templates:write",
    "messages:read",
    "suppressions:read",
    "suppressions:write",
    "wallet:read",
    "wallet:write",
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("kind", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("key_hash", Text, nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    # The console's user the key belongs to (None: made by the command line or settings).
    Column("user_id", BigInteger, nullable=True),
    # The scopes an admin key is limited to, space-separated; NULL: limited by none.
    Column("scopes", Text, nullable=True),
)
# An admin key is one person: two live admin keys never share a name, whatever its case.
Index(
    "uq_api_keys_live_admin_name",
    func.lower(api_keys.c.name),
    unique=True,
    sqlite_where=text("kind = 'admin' AND revoked_at IS NULL"),
    postgresql_where=text("kind = 'admin' AND revoked_at IS NULL"),
)


@dataclass(frozen=True)
class ApiKey:
    id: int
    kind: str
    name: str
    created_at: int
    revoked_at: int | None
    user_id: int | None = None
    scopes: tuple[str, ...] | None = None  # None: limited by none


@dataclass(frozen=True)
class KeyHolder:
    """Who acts with a key: the key's number and its name (for an admin key, the person
    who holds it, unique among live admin keys), the console's user it belongs to, and
    the scopes it is limited to (None: none, every route)."""

    key_id: int
    name: str
    user_id: int | None = None
    scopes: frozenset[str] | None = None

    def allows(self, scope: str) -> bool:
        return self.scopes is None or scope in self.scopes


class UnknownScope(ValueError):
    """A scope that is not one of SCOPES."""


def _stored_scopes(scopes: Iterable[str] | None) -> str | None:
    """Scopes as the column keeps them (None or nothing chosen: limited by none)."""
    if scopes is None:
        return None
    chosen = sorted(set(scopes))
    unknown = [scope for scope in chosen if scope not in SCOPES]
    if unknown:
        raise UnknownScope(f"unknown scope {unknown[0]!r} (one of {', '.join(SCOPES)})")
    return " ".join(chosen) or None


def _read_scopes(stored: str | None) -> tuple[str, ...] | None:
    return tuple(stored.split()) if stored else None


class KeyNameTaken(ValueError):
    """A live admin key already belongs to a person of that name."""


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret(kind: KeyKind) -> str:
    return f"pc_{kind}_{secrets.token_urlsafe(24)}"


# Run in the transaction of a change, with the key's number: how the console records
# who changed a key in its audit log, with the change or not at all.
AlsoInTransaction = Callable[[Connection, int], None]


def create_key(
    db: Database,
    kind: KeyKind,
    name: str,
    secret: str | None = None,
    *,
    user_id: int | None = None,
    scopes: Iterable[str] | None = None,
    also: AlsoInTransaction | None = None,
) -> str:
    """Store a key and return its secret (shown once; only its hash is kept). An admin
    key's name is the person who holds it: KeyNameTaken if a live admin key has it.
    `user_id`: the console's user the key belongs to; `scopes`: what of the admin API an
    admin key is limited to (None or empty: limited by none; UnknownScope)."""
    secret = secret or new_secret(kind)
    name = name.strip()
    if not name:
        raise ValueError("a key needs a name (for an admin key, the person who holds it)")
    stored_scopes = _stored_scopes(scopes)
    if stored_scopes is not None and kind != "admin":
        raise UnknownScope("only an admin key is limited to scopes")
    try:
        with db.write() as conn:
            if kind == "admin":
                _check_name_free(conn, name)
            key_id = conn.execute(
                insert(api_keys)
                .values(
                    kind=kind,
                    name=name,
                    key_hash=hash_key(secret),
                    created_at=_now_ms(),
                    user_id=user_id,
                    scopes=stored_scopes,
                )
                .returning(api_keys.c.id)
            ).scalar_one()
            if also is not None:
                also(conn, int(key_id))
    except IntegrityError:  # another key of that name committed between check and insert
        if kind != "admin":
            raise
        with db.read() as conn:
            _check_name_free(conn, name)
        raise
    return secret


def ensure_key(db: Database, kind: KeyKind, secret: str, name: str) -> None:
    """Make sure this secret is a live key of this kind (for keys given in the environment).
    A new admin key from the settings replaces the live one of the same name: rotated."""
    digest = hash_key(secret)
    with db.write() as conn:
        row = conn.execute(
            select(api_keys.c.kind, api_keys.c.revoked_at).where(api_keys.c.key_hash == digest)
        ).first()
        if row is None:
            if kind == "admin":
                conn.execute(
                    update(api_keys)
                    .where(
                        api_keys.c.kind == "admin",
                        func.lower(api_keys.c.name) == name.lower(),
                        api_keys.c.revoked_at.is_(None),
                    )
                    .values(revoked_at=_now_ms())
                )
            conn.execute(
                insert(api_keys).values(kind=kind, name=name, key_hash=digest, created_at=_now_ms())
            )
        elif row.kind != kind:
            raise ValueError(f"the {name} is already registered as a {row.kind} key")


def _check_name_free(conn: Connection, name: str) -> None:
    taken = conn.execute(
        select(api_keys.c.id).where(
            api_keys.c.kind == "admin",
            func.lower(api_keys.c.name) == name.lower(),
            api_keys.c.revoked_at.is_(None),
        )
    ).scalar()
    if taken is not None:
        raise KeyNameTaken(
            f"the live admin key {taken} already belongs to {name!r}: an admin key is one "
            "person's; revoke it first (parcours keys revoke) or give this person's full name"
        )


def revoke_key(db: Database, key_id: int, *, also: AlsoInTransaction | None = None) -> bool:
    with db.write() as conn:
        result = conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=_now_ms())
        )
        if result.rowcount and also is not None:
            also(conn, key_id)
        return bool(result.rowcount)


def list_keys(db: Database) -> list[ApiKey]:
    with db.read() as conn:
        rows = conn.execute(select(api_keys).order_by(api_keys.c.id)).all()
    return [
        ApiKey(r.id, r.kind, r.name, r.created_at, r.revoked_at, r.user_id, _read_scopes(r.scopes))
        for r in rows
    ]


class KeyChecker:
    """Answers "is this a live key of this kind" from memory, asking the database again
    every `ttl` seconds so that a revoked key stops working within that time."""

    def __init__(self, db: Database, ttl: float = 10.0) -> None:
        self._db = db
        self._ttl = ttl
        self._lock = threading.Lock()
        self._known: dict[str, tuple[str | None, KeyHolder | None, float]] = {}

    def check(self, kind: KeyKind, secret: str) -> bool:
        return self.holder(kind, secret) is not None

    def holder(self, kind: KeyKind, secret: str) -> KeyHolder | None:
        """The live key of this kind with this secret (who is acting), or None."""
        if not secret:
            return None
        digest = hash_key(secret)
        now = time.monotonic()
        with self._lock:
            cached = self._known.get(digest)
        if cached is None or now - cached[2] > self._ttl:
            with self._db.read() as conn:
                row = conn.execute(
                    select(
                        api_keys.c.id,
                        api_keys.c.kind,
                        api_keys.c.name,
                        api_keys.c.user_id,
                        api_keys.c.scopes,
                    ).where(api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None))
                ).first()
            if row is None:
                cached = (None, None, now)
            else:
                scopes = _read_scopes(row.scopes)
                holder = KeyHolder(
                    int(row.id),
                    row.name,
                    row.user_id,
                    None if scopes is None else frozenset(scopes),
                )
                cached = (row.kind, holder, now)
            with self._lock:
                if len(self._known) > 10_000:
                    self._known.clear()
                self._known[digest] = cached
        return cached[1] if cached[0] == kind else None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
