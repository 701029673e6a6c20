"""The console's users: the owner's setup link, invitations, roles, disabling. Each action
checks the actor's permission, writes, and records its audit entry in one transaction."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, func, insert, select, update

from parcours.accounts import audit
from parcours.accounts.audit import Actor
from parcours.accounts.errors import AccountError, NotAllowed
from parcours.accounts.passwords import check_password, hash_password
from parcours.accounts.roles import Permission, is_role, may
from parcours.accounts.tables import console_sessions, user_invitations, users
from parcours.customers import BadEmail, check_email
from parcours.runtime.db import Database

SETUP_VALID_MS = 24 * 3600 * 1000
INVITATION_VALID_MS = 7 * 24 * 3600 * 1000
MAX_NAME = 200


@dataclass(frozen=True)
class User:
    id: int
    email: str
    name: str
    role: str
    locale: str | None
    second_factor: bool
    created_at: int
    disabled_at: int | None

    @property
    def actor(self) -> Actor:
        return Actor(self.id, self.email, self.role)

    def may(self, permission: Permission) -> bool:
        return self.disabled_at is None and may(self.role, permission)


@dataclass(frozen=True)
class Invitation:
    id: int
    email: str | None
    role: str
    invited_by: int | None
    created_at: int
    expires_at: int

    @property
    def is_setup(self) -> bool:
        """The owner's setup link: made by nobody, for the first owner."""
        return self.invited_by is None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _user(row: Row[Any]) -> User:
    return User(
        id=row.id,
        email=row.email,
        name=row.name,
        role=row.role,
        locale=row.locale,
        second_factor=row.totp_secret is not None,
        created_at=row.created_at,
        disabled_at=row.disabled_at,
    )


def _invitation(row: Row[Any]) -> Invitation:
    return Invitation(
        id=row.id,
        email=row.email,
        role=row.role,
        invited_by=row.invited_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


def require(actor: User, permission: Permission) -> None:
    """Refuse, whatever the page showed, when the actor may not do this."""
    if not actor.may(permission):
        raise NotAllowed("accounts.not_allowed", permission=permission)


def has_owner(conn: Connection) -> bool:
    found = conn.execute(
        select(users.c.id).where(users.c.role == "owner", users.c.disabled_at.is_(None)).limit(1)
    ).first()
    return found is not None


def setup_link_token(db: Database, now: int) -> str | None:
    """A new one-time token for the owner's setup link while no owner exists (None once
    one does). Each start makes its own; all stop working when the owner is created."""
    with db.write() as conn:
        if has_owner(conn):
            return None
        token = secrets.token_urlsafe(32)
        conn.execute(
            insert(user_invitations).values(
                token_hash=token_hash(token),
                email=None,
                role="owner",
                invited_by=None,
                created_at=now,
                expires_at=now + SETUP_VALID_MS,
            )
        )
        return token


def _live_invitation(conn: Connection, token: str, now: int) -> Invitation:
    row = conn.execute(
        select(user_invitations).where(user_invitations.c.token_hash == token_hash(token))
    ).first()
    if (
        row is None
        or row.accepted_at is not None
        or row.revoked_at is not None
        or row.expires_at <= now
    ):
        raise AccountError("accounts.link_invalid", "token")
    invitation = _invitation(row)
    if invitation.is_setup and has_owner(conn):
        raise AccountError("accounts.link_invalid", "token")
    return invitation


def invitation_for(db: Database, token: str, now: int) -> Invitation:
    """The live invitation of this link; AccountError when it is unknown, used, revoked
    or expired (one answer for all four)."""
    with db.read() as conn:
        return _live_invitation(conn, token, now)


def _clean_name(name: str) -> str:
    cleaned = " ".join(name.split())
    if not cleaned:
        raise AccountError("accounts.name_required", "name")
    if len(cleaned) > MAX_NAME:
        raise AccountError("accounts.name_long", "name", length=str(MAX_NAME))
    return cleaned


def _clean_email(email: str) -> str:
    try:
        return check_email(email).address
    except BadEmail as exc:
        raise AccountError("accounts.email_invalid", "email", reason=str(exc)) from None


def accept_invitation(
    db: Database,
    token: str,
    *,
    email: str,
    name: str,
    password: str,
    now: int,
    locale: str | None = None,
) -> User:
    """Become the user the invitation (or the setup link) names. The email is the
    invitation's when it names one."""
    with db.write() as conn:
        invitation = _live_invitation(conn, token, now)
        address = _clean_email(invitation.email or email)
        clean_name = _clean_name(name)
        check_password(password, address)
        if _user_by_email(conn, address) is not None:
            raise AccountError("accounts.email_taken", "email")
        user_id = conn.execute(
            insert(users)
            .values(
                email=address,
                name=clean_name,
                role=invitation.role,
                password_hash=hash_password(password),
                locale=locale,
                created_at=now,
                invited_by=invitation.invited_by,
            )
            .returning(users.c.id)
        ).scalar_one()
        conn.execute(
            update(user_invitations)
            .where(user_invitations.c.id == invitation.id)
            .values(accepted_at=now)
        )
        if invitation.is_setup:  # every other setup link stops working
            conn.execute(
                update(user_invitations)
                .where(
                    user_invitations.c.invited_by.is_(None),
                    user_invitations.c.accepted_at.is_(None),
                    user_invitations.c.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )
        user = _by_id(conn, user_id)
        audit.record(
            conn,
            user.actor,
            "user.created",
            f"user:{user.id}",
            now,
            after={"email": address, "name": clean_name, "role": invitation.role},
        )
        return user


def invite(db: Database, actor: User, *, email: str, role: str, now: int) -> tuple[Invitation, str]:
    """An invitation for `email` to join with `role`, and its one-time token (shown once)."""
    require(actor, "users.manage")
    if not is_role(role):
        raise AccountError("accounts.role_unknown", "role", role=role)
    address = _clean_email(email)
    token = secrets.token_urlsafe(32)
    with db.write() as conn:
        if _user_by_email(conn, address) is not None:
            raise AccountError("accounts.email_taken", "email")
        invitation_id = conn.execute(
            insert(user_invitations)
            .values(
                token_hash=token_hash(token),
                email=address,
                role=role,
                invited_by=actor.id,
                created_at=now,
                expires_at=now + INVITATION_VALID_MS,
            )
            .returning(user_invitations.c.id)
        ).scalar_one()
        audit.record(
            conn,
            actor.actor,
            "invitation.created",
            f"invitation:{invitation_id}",
            now,
            after={"email": address, "role": role},
        )
        row = conn.execute(
            select(user_invitations).where(user_invitations.c.id == invitation_id)
        ).one()
    return _invitation(row), token


def revoke_invitation(db: Database, actor: User, invitation_id: int, now: int) -> None:
    require(actor, "users.manage")
    with db.write() as conn:
        row = conn.execute(
            update(user_invitations)
            .where(
                user_invitations.c.id == invitation_id,
                user_invitations.c.invited_by.is_not(None),
                user_invitations.c.accepted_at.is_(None),
                user_invitations.c.revoked_at.is_(None),
            )
            .values(revoked_at=now)
            .returning(user_invitations.c.email, user_invitations.c.role)
        ).first()
        if row is None:
            raise AccountError("accounts.invitation_unknown", "invitation")
        audit.record(
            conn,
            actor.actor,
            "invitation.revoked",
            f"invitation:{invitation_id}",
            now,
            before={"email": row.email, "role": row.role},
        )


def pending_invitations(conn: Connection, now: int) -> list[Invitation]:
    rows = conn.execute(
        select(user_invitations)
        .where(
            user_invitations.c.invited_by.is_not(None),
            user_invitations.c.accepted_at.is_(None),
            user_invitations.c.revoked_at.is_(None),
            user_invitations.c.expires_at > now,
        )
        .order_by(user_invitations.c.id)
    )
    return [_invitation(row) for row in rows]


def _other_owners(conn: Connection, user_id: int) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(users)
            .where(users.c.role == "owner", users.c.disabled_at.is_(None), users.c.id != user_id)
        ).scalar_one()
    )


def change_role(db: Database, actor: User, user_id: int, role: str, now: int) -> User:
    require(actor, "users.manage")
    if not is_role(role):
        raise AccountError("accounts.role_unknown", "role", role=role)
    with db.write() as conn:
        before = _by_id(conn, user_id)
        if before.role == "owner" and role != "owner" and _other_owners(conn, user_id) == 0:
            raise AccountError("accounts.last_owner", "role")
        conn.execute(update(users).where(users.c.id == user_id).values(role=role))
        audit.record(
            conn,
            actor.actor,
            "user.role_changed",
            f"user:{user_id}",
            now,
            before={"role": before.role},
            after={"role": role},
        )
        return _by_id(conn, user_id)


def disable(db: Database, actor: User, user_id: int, now: int) -> User:
    """The user can no longer sign in; their sessions end now."""
    require(actor, "users.manage")
    with db.write() as conn:
        before = _by_id(conn, user_id)
        if before.disabled_at is not None:
            return before
        if before.role == "owner" and _other_owners(conn, user_id) == 0:
            raise AccountError("accounts.last_owner", "user")
        conn.execute(update(users).where(users.c.id == user_id).values(disabled_at=now))
        conn.execute(console_sessions.delete().where(console_sessions.c.user_id == user_id))
        audit.record(
            conn,
            actor.actor,
            "user.disabled",
            f"user:{user_id}",
            now,
            before={"email": before.email, "role": before.role},
        )
        return _by_id(conn, user_id)


def set_locale(db: Database, actor: User, locale: str | None) -> None:
    """The user's own language for the console (None: the browser's)."""
    with db.write() as conn:
        conn.execute(update(users).where(users.c.id == actor.id).values(locale=locale))


def _by_id(conn: Connection, user_id: int) -> User:
    row = conn.execute(select(users).where(users.c.id == user_id)).first()
    if row is None:
        raise AccountError("accounts.user_unknown", "user")
    return _user(row)


def user_by_id(conn: Connection, user_id: int) -> User | None:
    row = conn.execute(select(users).where(users.c.id == user_id)).first()
    return None if row is None else _user(row)


def user_by_email(conn: Connection, address: str) -> User | None:
    """The console's user of this address (whatever its case), disabled or not."""
    return _user_by_email(conn, address)


def _user_by_email(conn: Connection, address: str) -> User | None:
    row = conn.execute(select(users).where(func.lower(users.c.email) == address.lower())).first()
    return None if row is None else _user(row)


def all_users(conn: Connection) -> list[User]:
    return [_user(row) for row in conn.execute(select(users).order_by(users.c.id))]
