"""Signing in to the console: the password (argon2), the optional second factor (TOTP),
a limit on attempts kept in the database, and sessions: a row per session, its token in a
signed cookie, its own CSRF token (docs/console.md, "Sign-in, sessions, CSRF")."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import pyotp
from sqlalchemy import ColumnElement, Connection, func, insert, select, update

from parcours.accounts import audit
from parcours.accounts.errors import AccountError, SignInRefused
from parcours.accounts.passwords import verify_password
from parcours.accounts.tables import console_sessions, login_attempts, users
from parcours.accounts.users import User, _user, token_hash, user_by_id
from parcours.runtime.db import Database

IDLE_MS = 12 * 3600 * 1000
LONGEST_MS = 7 * 24 * 3600 * 1000
SEEN_EVERY_MS = 60 * 1000  # `seen_at` is written at most once a minute per session
ATTEMPT_WINDOW_MS = 15 * 60 * 1000
MAX_FAILURES_PER_EMAIL = 5
MAX_FAILURES_PER_CLIENT = 20
SECOND_FACTOR_MS = 5 * 60 * 1000  # to give the code after the password


@dataclass(frozen=True)
class Session:
    """A signed-in user's session: `user` as they are now, the session's CSRF token, and
    whether the second factor is still to be given."""

    id: int
    user: User
    csrf_token: str
    pending_second_factor: bool
    ends_at: int


@dataclass(frozen=True)
class SignedIn:
    token: str  # the session's secret: goes in the cookie, never stored
    session: Session


def sign_cookie(secret: str, token: str) -> str:
    mac = hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{token}.{mac}"


def token_of_cookie(secret: str, value: str | None) -> str | None:
    """The session token of a cookie value, when its signature holds."""
    if not value or "." not in value:
        return None
    token, _, _mac = value.rpartition(".")
    return token if hmac.compare_digest(sign_cookie(secret, token), value) else None


def _failures(conn: Connection, column: ColumnElement[str], value: str, since: int) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(login_attempts)
            .where(
                column == value,
                login_attempts.c.at > since,
                login_attempts.c.succeeded == 0,
            )
        ).scalar_one()
    )


def sign_in(db: Database, *, email: str, password: str, client: str, now: int) -> SignedIn:
    """A new session for the user with this email and password. SignInRefused, with one
    answer whatever was wrong, when they do not match, the user is disabled, or too many
    attempts failed lately for this email or from this client."""
    address = email.strip().lower()[:320]
    with db.read() as conn:
        since = now - ATTEMPT_WINDOW_MS
        if (
            _failures(conn, login_attempts.c.email, address, since) >= MAX_FAILURES_PER_EMAIL
            or _failures(conn, login_attempts.c.client, client, since) >= MAX_FAILURES_PER_CLIENT
        ):
            raise SignInRefused("accounts.too_many_attempts", "email")
        row = conn.execute(select(users).where(func.lower(users.c.email) == address)).first()
    matched = verify_password(row.password_hash if row is not None else None, password)
    ok = matched and row is not None and row.disabled_at is None
    signed_in: SignedIn | None = None
    with db.write() as conn:  # a refusal is recorded too: it counts towards the limit
        conn.execute(
            insert(login_attempts).values(email=address, client=client, at=now, succeeded=int(ok))
        )
        if ok and row is not None:
            user = _user(row)
            signed_in = _open(conn, user, now, second_factor=row.totp_secret is not None)
            audit.record(conn, user.actor, "user.signed_in", f"user:{user.id}", now)
    if signed_in is None:
        raise SignInRefused("accounts.sign_in_refused", "email")
    return signed_in


def _open(conn: Connection, user: User, now: int, *, second_factor: bool) -> SignedIn:
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    ends_at = now + (SECOND_FACTOR_MS if second_factor else IDLE_MS)
    session_id = conn.execute(
        insert(console_sessions)
        .values(
            token_hash=token_hash(token),
            user_id=user.id,
            csrf_token=csrf,
            created_at=now,
            seen_at=now,
            ends_at=ends_at,
            pending_second_factor=int(second_factor),
        )
        .returning(console_sessions.c.id)
    ).scalar_one()
    return SignedIn(token, Session(session_id, user, csrf, second_factor, ends_at))


def session_of(db: Database, token: str | None, now: int) -> Session | None:
    """The live session of this token, its user as they are now (a disabled user or an
    ended session: None). Its idle time restarts, written at most once a minute."""
    if not token:
        return None
    with db.read() as conn:
        row = conn.execute(
            select(console_sessions).where(
                console_sessions.c.token_hash == token_hash(token),
                console_sessions.c.ends_at > now,
            )
        ).first()
        user = None if row is None else user_by_id(conn, row.user_id)
    if row is None or user is None or user.disabled_at is not None:
        return None
    ends_at = row.ends_at
    if not row.pending_second_factor and now - row.seen_at >= SEEN_EVERY_MS:
        ends_at = min(now + IDLE_MS, row.created_at + LONGEST_MS)
        with db.write() as conn:
            conn.execute(
                update(console_sessions)
                .where(console_sessions.c.id == row.id)
                .values(seen_at=now, ends_at=ends_at)
            )
    return Session(row.id, user, row.csrf_token, bool(row.pending_second_factor), ends_at)


def confirm_second_factor(db: Database, session: Session, code: str, now: int) -> Session:
    """The session, fully signed in once the user's current TOTP code is given."""
    with db.write() as conn:
        secret = conn.execute(
            select(users.c.totp_secret).where(users.c.id == session.user.id)
        ).scalar_one_or_none()
        if secret is None or not pyotp.TOTP(secret).verify(code.strip(), valid_window=1):
            conn.execute(
                insert(login_attempts).values(
                    email=session.user.email.lower(), client="totp", at=now, succeeded=0
                )
            )
            raise AccountError("accounts.code_wrong", "code")
        ends_at = min(now + IDLE_MS, now + LONGEST_MS)
        conn.execute(
            update(console_sessions)
            .where(console_sessions.c.id == session.id)
            .values(pending_second_factor=0, seen_at=now, ends_at=ends_at)
        )
    return Session(session.id, session.user, session.csrf_token, False, ends_at)


def sign_out(db: Database, session: Session) -> None:
    with db.write() as conn:
        conn.execute(console_sessions.delete().where(console_sessions.c.id == session.id))


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, email: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=issuer)


def enable_second_factor(db: Database, actor: User, secret: str, code: str, now: int) -> None:
    """Turn on the TOTP second factor for the actor, once a code of `secret` proves their
    authenticator app holds it."""
    if not pyotp.TOTP(secret).verify(code.strip(), valid_window=1):
        raise AccountError("accounts.code_wrong", "code")
    with db.write() as conn:
        conn.execute(update(users).where(users.c.id == actor.id).values(totp_secret=secret))
        audit.record(conn, actor.actor, "user.second_factor_on", f"user:{actor.id}", now)


def disable_second_factor(db: Database, actor: User, password: str, now: int) -> None:
    with db.write() as conn:
        stored = conn.execute(
            select(users.c.password_hash).where(users.c.id == actor.id)
        ).scalar_one()
        if not verify_password(stored, password):
            raise AccountError("accounts.password_wrong", "password")
        conn.execute(update(users).where(users.c.id == actor.id).values(totp_secret=None))
        audit.record(conn, actor.actor, "user.second_factor_off", f"user:{actor.id}", now)


def end_sessions_before(db: Database, now: int) -> int:
    """Delete ended sessions and attempts older than the window (housekeeping)."""
    with db.write() as conn:
        ended = conn.execute(
            console_sessions.delete().where(console_sessions.c.ends_at <= now)
        ).rowcount
        conn.execute(login_attempts.delete().where(login_attempts.c.at < now - ATTEMPT_WINDOW_MS))
    return int(ended or 0)
