"""The audit log: who changed what, when, with the state before and after."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select

from parcours.accounts.tables import audit_entries
from parcours.runtime.documents import JsonObject


@dataclass(frozen=True)
class Actor:
    """The user doing something, as the audit log names them."""

    user_id: int
    email: str
    role: str


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: int
    user_id: int | None
    user_email: str | None
    action: str
    target: str
    before: JsonObject | None
    after: JsonObject | None


def record(
    conn: Connection,
    actor: Actor | None,
    action: str,
    target: str,
    now: int,
    *,
    before: JsonObject | None = None,
    after: JsonObject | None = None,
) -> None:
    """Write one entry, in the caller's transaction (`actor` None: Parcours itself, or the
    person who used the setup link, named in `after`)."""
    conn.execute(
        insert(audit_entries).values(
            at=now,
            user_id=actor.user_id if actor else None,
            user_email=actor.email if actor else None,
            action=action,
            target=target,
            before=None if before is None else json.dumps(before, sort_keys=True, default=str),
            after=None if after is None else json.dumps(after, sort_keys=True, default=str),
        )
    )


def entries(
    conn: Connection, *, before_id: int | None = None, limit: int = 50, action: str = ""
) -> list[AuditEntry]:
    """The newest entries first, a page at a time (`before_id`: the last id of the page
    before), optionally of one action or one family of actions (`journey.`)."""
    statement = select(audit_entries).order_by(audit_entries.c.id.desc()).limit(limit)
    if before_id is not None:
        statement = statement.where(audit_entries.c.id < before_id)
    if action.endswith("."):
        statement = statement.where(audit_entries.c.action.startswith(action, autoescape=True))
    elif action:
        statement = statement.where(audit_entries.c.action == action)
    return [
        AuditEntry(
            id=row.id,
            at=row.at,
            user_id=row.user_id,
            user_email=row.user_email,
            action=row.action,
            target=row.target,
            before=None if row.before is None else json.loads(row.before),
            after=None if row.after is None else json.loads(row.after),
        )
        for row in conn.execute(statement)
    ]
