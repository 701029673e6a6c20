"""Passwords: argon2id hashes (argon2-cffi's defaults), and what a password must be."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from parcours.accounts.errors import AccountError

MIN_LENGTH = 10
MAX_LENGTH = 1024  # argon2 takes any length; a megabyte "password" is a denial of service
_hasher = PasswordHasher()
# Checked against when the email is unknown, so that a wrong address takes as long as a
# wrong password (no way to learn who has an account by timing the answer).
_DECOY = _hasher.hash("parcours-decoy-password")


def check_password(password: str, email: str) -> None:
    if len(password) < MIN_LENGTH:
        raise AccountError("accounts.password_short", "password", length=str(MIN_LENGTH))
    if len(password) > MAX_LENGTH:
        raise AccountError("accounts.password_long", "password", length=str(MAX_LENGTH))
    if password.strip().lower() == email.strip().lower():
        raise AccountError("accounts.password_is_email", "password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether `password` matches `stored` (None: an unknown user, checked against a decoy
    hash all the same)."""
    try:
        return _hasher.verify(stored or _DECOY, password[:MAX_LENGTH]) and stored is not None
    except (VerificationError, InvalidHashError):
        return False
