"""The console's accounts (docs/console.md): the owner's setup link, invitations, roles,
sign-in with its limit and second factor, sessions, and the audit log of each change."""

from __future__ import annotations

import argon2
import pyotp
import pytest

from parcours import accounts
from parcours.accounts import AccountError, NotAllowed, SignInRefused, User
from parcours.runtime.db import Database
from parcours.services import Services

PASSWORD = "correct horse battery"


def _owner(db: Database, now: int) -> User:
    token = accounts.setup_link_token(db, now)
    assert token is not None
    return accounts.accept_invitation(
        db, token, email="Owner@Brand.example", name="Olivia Owner", password=PASSWORD, now=now
    )


def _join(db: Database, owner: User, email: str, role: str, now: int) -> User:
    _, token = accounts.invite(db, owner, email=email, role=role, now=now)
    return accounts.accept_invitation(
        db, token, email="ignored@example.com", name=email.split("@")[0], password=PASSWORD, now=now
    )


def test_the_setup_link_makes_the_first_owner_once(services: Services) -> None:
    db, now = services.db, services.clock.now_ms()
    first = accounts.setup_link_token(db, now)
    second = accounts.setup_link_token(db, now)  # another start, another link
    assert first and second and first != second
    owner = accounts.accept_invitation(
        db,
        second,
        email="Owner@Brand.example",
        name="  Olivia   Owner ",
        password=PASSWORD,
        now=now,
    )
    assert (owner.email, owner.name, owner.role) == ("owner@brand.example", "Olivia Owner", "owner")
    # Every setup link stops working once the owner exists, and no new one is made.
    for token in (first, second):
        with pytest.raises(AccountError) as refused:
            accounts.accept_invitation(
                db, token, email="x@brand.example", name="X", password=PASSWORD, now=now
            )
        assert refused.value.key == "accounts.link_invalid"
    assert accounts.setup_link_token(db, now) is None


def test_a_setup_link_expires_after_a_day(services: Services) -> None:
    db, now = services.db, services.clock.now_ms()
    token = accounts.setup_link_token(db, now)
    assert token is not None
    with pytest.raises(AccountError, match=r"accounts.link_invalid"):
        accounts.invitation_for(db, token, now + 24 * 3600 * 1000)
    assert accounts.invitation_for(db, token, now + 3600 * 1000).is_setup


@pytest.mark.parametrize(
    ("password", "key"),
    [
        ("short", "accounts.password_short"),
        ("owner@brand.example", "accounts.password_is_email"),
        ("x" * 2000, "accounts.password_long"),
    ],
)
def test_a_weak_password_is_refused_and_nothing_is_written(
    services: Services, password: str, key: str
) -> None:
    db, now = services.db, services.clock.now_ms()
    token = accounts.setup_link_token(db, now)
    assert token is not None
    with pytest.raises(AccountError) as refused:
        accounts.accept_invitation(
            db, token, email="owner@brand.example", name="O", password=password, now=now
        )
    assert (refused.value.key, refused.value.field) == (key, "password")
    with db.read() as conn:
        assert accounts.all_users(conn) == []
    assert accounts.invitation_for(db, token, now).is_setup  # still usable


def test_invitations_give_the_role_and_the_invited_address(services: Services) -> None:
    db, now = services.db, services.clock.now_ms()
    owner = _owner(db, now)
    marketer = _join(db, owner, "mia@brand.example", "marketer", now)
    assert (marketer.email, marketer.role) == ("mia@brand.example", "marketer")
    with pytest.raises(AccountError, match=r"accounts.email_taken"):
        accounts.invite(db, owner, email="MIA@brand.example", role="viewer", now=now)
    with pytest.raises(AccountError, match=r"accounts.role_unknown"):
        accounts.invite(db, owner, email="x@brand.example", role="admin", now=now)
    with pytest.raises(AccountError, match=r"accounts.email_invalid"):
        accounts.invite(db, owner, email="not an address", role="viewer", now=now)


def test_only_those_who_manage_users_may_invite_or_change_roles(services: Services) -> None:
    db, now = services.db, services.clock.now_ms()
    owner = _owner(db, now)
    for role in ("marketer", "reviewer", "support", "viewer"):
        member = _join(db, owner, f"{role}@brand.example", role, now)
        with pytest.raises(NotAllowed):
            accounts.invite(db, member, email="new@brand.example", role="viewer", now=now)
        with pytest.raises(NotAllowed):
            accounts.change_role(db, member, member.id, "owner", now)
    with db.read() as conn:
        assert {u.role for u in accounts.all_users(conn)} == {
            "owner",
            "marketer",
            "reviewer",
            "support",
            "viewer",
        }


def test_the_last_owner_cannot_be_demoted_or_disabled(services: Services) -> None:
    db, now = services.db, services.clock.now_ms()
    owner = _owner(db, now)
    with pytest.raises(AccountError, match=r"accounts.last_owner"):
        accounts.change_role(db, owner, owner.id, "viewer", now)
    with pytest.raises(AccountError, match=r"accounts.last_owner"):
        accounts.disable(db, owner, owner.id, now)
    second = _join(db, owner, "second@brand.example", "owner", now)
    assert accounts.change_role(db, second, owner.id, "viewer", now).role == "viewer"


def test_sign_in_opens_a_session_and_disabling_ends_it(services: Services) -> None:
    db, now = services.db, services.clock.now_ms()
    owner = _owner(db, now)
    viewer = _join(db, owner, "vic@brand.example", "viewer", now)
    signed = accounts.sign_in(
        db, email=" VIC@brand.example", password=PASSWORD, client="10.0.0.1", now=now
    )
    session = accounts.session_of(db, signed.token, now + 1000)
    assert session is not None and session.user.id == viewer.id
    assert not session.pending_second_factor and len(session.csrf_token) >= 24
    assert accounts.session_of(db, signed.token + "x", now) is None
    accounts.disable(db, owner, viewer.id, now)
    assert accounts.session_of(db, signed.token, now + 2000) is None
    with pytest.raises(SignInRefused):
        accounts.sign_in(db, email="vic@brand.example", password=PASSWORD, client="c", now=now)


def test_a_session_ends_after_twelve_idle_hours(services: Services) -> None:
    db, now = services.db, services.clock.now_ms()
    _owner(db, now)
    signed = accounts.sign_in(
        db, email="owner@brand.example", password=PASSWORD, client="c", now=now
    )
    hour = 3600 * 1000
    assert accounts.session_of(db, signed.token, now + 11 * hour) is not None  # seen: renewed
    assert accounts.session_of(db, signed.token, now + 22 * hour) is not None
    assert accounts.session_of(db, signed.token, now + 35 * hour) is None


def test_sign_in_is_limited_per_address_and_answers_alike(services: Services) -> None:
    db, now = services.db, services.clock.now_ms()
    _owner(db, now)
    keys = []
    for _ in range(5):
        with pytest.raises(SignInRefused) as refused:
            accounts.sign_in(
                db, email="owner@brand.example", password="wrong password", client="c", now=now
            )
        keys.append(refused.value.key)
    with pytest.raises(SignInRefused) as unknown:
        accounts.sign_in(db, email="nobody@brand.example", password=PASSWORD, client="c", now=now)
    assert set(keys) == {unknown.value.key} == {"accounts.sign_in_refused"}
    # The sixth attempt is refused even with the right password, for 15 minutes.
    with pytest.raises(SignInRefused, match=r"accounts.too_many_attempts"):
        accounts.sign_in(db, email="owner@brand.example", password=PASSWORD, client="d", now=now)
    later = now + 15 * 60 * 1000 + 1
    assert accounts.sign_in(
        db, email="owner@brand.example", password=PASSWORD, client="d", now=later
    ).token


def test_sign_in_is_limited_per_client(services: Services) -> None:
    db, now = services.db, services.clock.now_ms()
    _owner(db, now)
    for attempt in range(20):
        with pytest.raises(SignInRefused):
            accounts.sign_in(
                db, email=f"guess{attempt}@brand.example", password="x", client="bad", now=now
            )
    with pytest.raises(SignInRefused, match=r"accounts.too_many_attempts"):
        accounts.sign_in(db, email="owner@brand.example", password=PASSWORD, client="bad", now=now)
    assert accounts.sign_in(
        db, email="owner@brand.example", password=PASSWORD, client="good", now=now
    ).token


def test_the_second_factor_is_asked_after_the_password(services: Services) -> None:
    db, now = services.db, services.clock.now_ms()
    owner = _owner(db, now)
    secret = accounts.new_totp_secret()
    with pytest.raises(AccountError, match=r"accounts.code_wrong"):
        accounts.enable_second_factor(db, owner, secret, "000000", now)
    accounts.enable_second_factor(db, owner, secret, pyotp.TOTP(secret).now(), now)
    signed = accounts.sign_in(
        db, email="owner@brand.example", password=PASSWORD, client="c", now=now
    )
    assert signed.session.pending_second_factor
    session = accounts.session_of(db, signed.token, now)
    assert session is not None and session.pending_second_factor
    with pytest.raises(AccountError, match=r"accounts.code_wrong"):
        accounts.confirm_second_factor(db, session, "12345x", now)
    confirmed = accounts.confirm_second_factor(db, session, pyotp.TOTP(secret).now(), now)
    assert not confirmed.pending_second_factor
    again = accounts.session_of(db, signed.token, now + 1)
    assert again is not None and not again.pending_second_factor


def test_every_change_is_in_the_audit_log_with_who_and_what(services: Services) -> None:
    db, now = services.db, services.clock.now_ms()
    owner = _owner(db, now)
    member = _join(db, owner, "mia@brand.example", "marketer", now)
    accounts.change_role(db, owner, member.id, "reviewer", now)
    accounts.disable(db, owner, member.id, now)
    with db.read() as conn:
        log = accounts.entries(conn)
    assert [(e.action, e.user_email) for e in log] == [
        ("user.disabled", "owner@brand.example"),
        ("user.role_changed", "owner@brand.example"),
        ("user.created", "mia@brand.example"),
        ("invitation.created", "owner@brand.example"),
        ("user.created", "owner@brand.example"),
    ]
    changed = log[1]
    assert (changed.target, changed.before, changed.after) == (
        f"user:{member.id}",
        {"role": "marketer"},
        {"role": "reviewer"},
    )
    with db.read() as conn:
        assert [e.action for e in accounts.entries(conn, action="user.")][:2] == [
            "user.disabled",
            "user.role_changed",
        ]
        assert len(accounts.entries(conn, before_id=log[1].id)) == 3


def test_roles_grant_what_docs_console_says() -> None:
    assert all(accounts.may("owner", p) for p in accounts.PERMISSIONS)
    # A viewer sees everything and changes nothing.
    assert [p for p in accounts.PERMISSIONS if accounts.may("viewer", p)] == ["audit.read"]
    assert accounts.may("reviewer", "journeys.approve")
    assert not accounts.may("marketer", "journeys.approve")
    assert accounts.may("support", "customers.erase")
    assert not accounts.may("nobody", "audit.read")


def test_passwords_are_hashed_at_argon2_cffis_default_cost() -> None:
    """The cost Parcours hashes with (the test suite lowers it for its own speed, in
    conftest.py): argon2id at argon2-cffi's defaults, RFC 9106's second recommended
    option (64 MiB, three passes), read from a fresh import of the module."""
    import importlib.util

    spec = importlib.util.find_spec("parcours.accounts.passwords")
    assert spec is not None and spec.loader is not None
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)
    parameters = argon2.extract_parameters(fresh.hash_password("a long enough passphrase"))
    assert parameters == argon2.profiles.RFC_9106_LOW_MEMORY
    assert parameters.type is argon2.Type.ID
