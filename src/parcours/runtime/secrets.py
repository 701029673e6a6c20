"""Secrets Parcours makes for itself on first start (link signing, VAPID keys, the key of
signed email tags), kept in the database so that every process on every machine shares
them; and a value made once beside them (`email-tags-signed-from`, where signed email tags
start, written by migration 0018)."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from sqlalchemy import BigInteger, Column, Select, Table, Text, select
from sqlalchemy.dialects import postgresql, sqlite

from parcours.runtime.db import Database, metadata

instance_secrets = Table(
    "instance_secrets",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)


def _select_value(name: str) -> Select[str]:
    return select(instance_secrets.c.value).where(instance_secrets.c.name == name)


def existing_secret(db: Database, name: str) -> str | None:
    """The secret called `name` if it was made, without making it."""
    with db.read() as conn:
        value = conn.execute(_select_value(name)).scalar()
    return None if value is None else str(value)


def instance_secret(
    db: Database, name: str, now: int, make: Callable[[], str] = lambda: secrets.token_hex(32)
) -> str:
    """The secret called `name`, made once: two processes starting together agree on it."""
    value = existing_secret(db, name)
    if value is not None:
        return value
    with db.write() as conn:
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        conn.execute(
            insert(instance_secrets)
            .values(name=name, value=make(), created_at=now)
            .on_conflict_do_nothing(index_elements=[instance_secrets.c.name])
        )
        return conn.execute(_select_value(name)).scalar_one()
