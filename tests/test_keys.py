"""API keys: an admin key is one named person; keys from the settings rotate."""

from __future__ import annotations

import pytest

from parcours.runtime.db import Database, migrate
from parcours.runtime.keys import (
    KeyChecker,
    KeyNameTaken,
    create_key,
    ensure_key,
    list_keys,
    revoke_key,
)


@pytest.fixture
def db(database_url: str) -> Database:
    database = Database(database_url)
    migrate(database)
    return database


def test_two_live_admin_keys_never_share_a_name_whatever_its_case(db: Database) -> None:
    first = create_key(db, "admin", "Ana Lima")
    with pytest.raises(KeyNameTaken):
        create_key(db, "admin", "  ana LIMA ")
    with pytest.raises(ValueError, match="needs a name"):
        create_key(db, "admin", "   ")
    create_key(db, "write", "shop")
    create_key(db, "write", "shop")  # write keys are sources, not people
    (ana,) = [k for k in list_keys(db) if k.kind == "admin"]
    assert revoke_key(db, ana.id)
    second = create_key(db, "admin", "Ana Lima")  # her new key, the old one revoked
    checker = KeyChecker(db)
    assert checker.holder("admin", first) is None
    holder = checker.holder("admin", second)
    assert holder is not None and holder.name == "Ana Lima" and holder.key_id != ana.id
    db.dispose()


def test_a_new_admin_key_in_the_settings_replaces_the_old_one(db: Database) -> None:
    ensure_key(db, "admin", "pc_admin_old_0123456789", "admin key from settings")
    ensure_key(db, "admin", "pc_admin_old_0123456789", "admin key from settings")  # a restart
    ensure_key(db, "admin", "pc_admin_new_0123456789", "admin key from settings")  # rotated
    checker = KeyChecker(db)
    assert checker.holder("admin", "pc_admin_old_0123456789") is None
    assert checker.holder("admin", "pc_admin_new_0123456789") is not None
    assert [k.revoked_at is None for k in list_keys(db)] == [False, True]
    db.dispose()


def test_the_database_itself_refuses_a_second_live_admin_key_of_a_name(db: Database) -> None:
    """The check before the insert is not the only guard: two processes making "Ana" and
    "ana" at once meet the unique index."""
    from sqlalchemy import insert
    from sqlalchemy.exc import IntegrityError

    from parcours.runtime.keys import api_keys

    create_key(db, "admin", "Ana Lima")
    with pytest.raises(IntegrityError), db.write() as conn:
        conn.execute(
            insert(api_keys).values(kind="admin", name="ANA LIMA", key_hash="x", created_at=1)
        )
    with db.write() as conn:  # a revoked key, or a write key, may share it
        conn.execute(
            insert(api_keys).values(
                kind="admin", name="ana lima", key_hash="y", created_at=1, revoked_at=2
            )
        )
        conn.execute(
            insert(api_keys).values(kind="write", name="ana lima", key_hash="z", created_at=1)
        )
    db.dispose()
