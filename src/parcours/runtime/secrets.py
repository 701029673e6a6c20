"""Secrets Parcours makes for itself on first start (link signing, VAPID keys, the key of
signed email tags), kept in the database so that every process on every machine shares
them; and a value made once beside them (`email-tags-signed-from`, where signed email tags
start, written by migration 0018)."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from sqlalchemy import BigInteger, Column, Table, Text

from parcours.runtime.db import Database, metadata, sql

instance_secrets = Table(
    "instance_secrets",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)
_READ = "SELECT value FROM instance_secrets WHERE name = :n"


def instance_secret(
    db: Database, name: str, now: int, make: Callable[[], str] = lambda: secrets.token_hex(32)
) -> str:
    """The secret called `name`, made once: two processes starting together agree on it."""
    with db.read() as conn:
        value = sql(
            conn, "SELECT value FROM instance_secrets WHERE name = :n", {"n": name}
        ).scalar()
    if value is not None:
        return str(value)
    with db.write() as conn:
        sql(
            conn,
            "INSERT INTO instance_secrets (name, value, created_at) VALUES (:n, :v, :now) "
            "ON CONFLICT (name) DO NOTHING",
            {"n": name, "v": make(), "now": now},
        )
        return str(
            sql(
                conn, "SELECT value FROM instance_secrets WHERE name = :n", {"n": name}
            ).scalar_one()
        )
