"""Identities: the ids, emails and phones that point at one person, normalised."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email

# When an event's identities point at several customers, the customer of the most specific
# identity is the one the event belongs to.
KIND_PRIORITY = ("user_id", "anonymous_id", "email", "phone")


class BadEmail(ValueError):
    """Not an email address; the message says what is wrong with it."""


@dataclass(frozen=True)
class Email:
    address: str  # lowercased, Unicode kept (NFC): the identity, and where mail goes
    ascii: str | None  # the same with its domain in IDNA; None: the mailbox needs SMTPUTF8


def check_email(value: Any) -> Email:
    """The one check of an email address (identities, test sends, every send): the
    syntax of RFC 5322/6531 as email-validator reads it (no DNS lookup), trimmed and
    lowercased. Raises BadEmail naming what is wrong."""
    if not isinstance(value, str):
        raise BadEmail("an email address must be text")
    if len(value) > _LONGEST_EMAIL_TEXT:
        raise BadEmail("it is far too long for an email address (at most 254 characters)")
    found = _check_email_cached(value.strip().lower())
    if isinstance(found, str):
        raise BadEmail(found)
    return found


def _check_email(value: str) -> Email | str:
    try:
        valid = validate_email(value, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        return str(exc)
    return Email(valid.normalized.lower(), valid.ascii_email.lower() if valid.ascii_email else None)


# An identify carries its email every time: validating costs about 20 µs, a cache hit
# well under one. Bounded in entries, and in the length of what it keeps.
_LONGEST_EMAIL_TEXT = 320
_check_email_cached = lru_cache(maxsize=16_384)(_check_email)


def normalise_email(value: Any) -> str | None:
    """The address as check_email gives it; None when it is not one."""
    try:
        return check_email(value).address
    except BadEmail:
        return None


def normalise_phone(value: Any, default_region: str) -> str | None:
    """E.164 (`+33612345678`); None when it is not a possible number."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        return None
    if len(value) > _CACHED_PHONE_LENGTH:
        return _parse_phone(value, default_region)
    return _parse_phone_cached(value, default_region)


def _parse_phone(value: str, default_region: str) -> str | None:
    try:
        number = phonenumbers.parse(value, default_region.upper())
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


# A customer's phone comes back on every identify: parsing it costs about 50 µs, a
# cache hit well under one. Bounded in entries and in the length of what it keeps.
_CACHED_PHONE_LENGTH = 64
_parse_phone_cached = lru_cache(maxsize=16_384)(_parse_phone)


def identity_of(kind: str, value: str, default_region: str) -> tuple[str, str] | None:
    """Normalise an identity given by a person (API lookups, erasure requests)."""
    if kind == "email":
        email = normalise_email(value)
        return ("email", email) if email else None
    if kind == "phone":
        phone = normalise_phone(value, default_region)
        return ("phone", phone) if phone else None
    return (kind, value) if value else None


def traits_identities(traits: dict[str, Any], default_region: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    email = normalise_email(traits.get("email"))
    if email:
        found.append(("email", email))
    phone = normalise_phone(traits.get("phone"), default_region)
    if phone:
        found.append(("phone", phone))
    return found


def priority(kind: str) -> int:
    try:
        return KIND_PRIORITY.index(kind)
    except ValueError:
        return 2  # external ids (a shop's customer id) rank with the anonymous id


@lru_cache(maxsize=16_384)
def phone_country(number: str) -> str | None:
    """The country (ISO 3166 alpha-2) of a number in E.164, or None. Cached: quiet hours
    and SMS pricing ask it at every send, and parsing costs about 50 µs."""
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(number))
    except phonenumbers.NumberParseException:
        return None
    return str(region) if region else None
