"""The tables the accounts package owns: the console's users, their invitations (the
owner's setup link is one), console sessions, login attempts and the audit log."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Table, Text, func

from parcours.runtime.db import BigId, metadata

users = Table(
    "users",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("email", Text, nullable=False),  # as typed; unique whatever its case
    Column("name", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("locale", Text, nullable=True),
    Column("totp_secret", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("invited_by", BigInteger, nullable=True),
    Column("disabled_at", BigInteger, nullable=True),
)
Index("uq_users_email", func.lower(users.c.email), unique=True)

# An invitation to become a user with a role; the owner's setup link is an invitation to
# be the owner, made by nobody, valid while no owner exists.
user_invitations = Table(
    "user_invitations",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("token_hash", Text, nullable=False, unique=True),
    Column("email", Text, nullable=True),
    Column("role", Text, nullable=False),
    Column("invited_by", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("accepted_at", BigInteger, nullable=True),
    Column("revoked_at", BigInteger, nullable=True),
)

console_sessions = Table(
    "console_sessions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("token_hash", Text, nullable=False, unique=True),
    Column("user_id", BigInteger, nullable=False),
    Column("csrf_token", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("seen_at", BigInteger, nullable=False),
    Column("ends_at", BigInteger, nullable=False),
    # Signed in with the password, the second factor still to give (TOTP).
    Column("pending_second_factor", BigInteger, nullable=False, server_default="0"),
)
Index("ix_console_sessions_user", console_sessions.c.user_id)

login_attempts = Table(
    "login_attempts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("email", Text, nullable=False),  # lower case
    Column("client", Text, nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("succeeded", BigInteger, nullable=False),
)
Index("ix_login_attempts_email", login_attempts.c.email, login_attempts.c.at)
Index("ix_login_attempts_client", login_attempts.c.client, login_attempts.c.at)

audit_entries = Table(
    "audit_entries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("user_id", BigInteger, nullable=True),
    Column("user_email", Text, nullable=True),  # kept when the user is gone
    Column("action", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("before", Text, nullable=True),  # JSON
    Column("after", Text, nullable=True),  # JSON
)
Index("ix_audit_entries_at", audit_entries.c.at)
