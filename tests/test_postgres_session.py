"""How Parcours' connections to PostgreSQL are set up (runtime/db.py `_configure_postgres`):
lists sent in binary, and the planner told how Parcours reads, unless an operator said
otherwise."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from parcours.customers.tables import customer_name_words
from parcours.runtime.db import (
    Database,
    delete_rows,
    hold_writes,
    holds_writes,
    insert_rows,
    is_transient,
    lock_keys,
    select_in,
    send_ahead,
    sql,
    sql_ahead,
    sql_write,
    try_lock_buckets,
    update_rows,
    upsert_rows,
)

AWKWARD = [
    'she said "hello"',
    "back\\slash and \\\\ two",
    "{braces}, commas, 'quotes'",
    "NULL",
    "",
    "accents: Éloïse, ñ, 日本, 🙂",
    " leading and trailing ",
]


def test_text_of_every_kind_goes_through_the_arrays_unchanged(database_url: str) -> None:
    """Stored many rows at once, read back by an IN list, changed by `update_rows`: text
    with quotes, backslashes, braces, commas, the word NULL, nothing at all and characters
    outside ASCII comes back as it went (on PostgreSQL, as binary arrays)."""
    db = Database(database_url)
    try:
        rows = [(word, number) for number, word in enumerate(AWKWARD, start=1)]
        with db.write() as conn:
            insert_rows(conn, customer_name_words, ("word", "customer_id"), rows)
        with db.read() as conn:
            found = select_in(
                conn,
                "SELECT word, customer_id FROM customer_name_words WHERE word IN ({marks})",
                AWKWARD,
            )
        assert sorted(found) == sorted(rows)
        with db.write() as conn:
            update_rows(
                conn,
                customer_name_words,
                ("word",),
                "customer_id",
                [(f"{word}|{word}", number) for word, number in rows],
            )
        with db.read() as conn:
            found = select_in(
                conn,
                "SELECT word, customer_id FROM customer_name_words WHERE customer_id IN ({marks})",
                [number for _, number in rows],
            )
        assert sorted(found) == sorted([(f"{word}|{word}", number) for word, number in rows])
    finally:
        db.dispose()


def _random_page_cost(db: Database) -> str:
    with db.read() as conn:
        return str(conn.exec_driver_sql("SHOW random_page_cost").scalar_one())


def test_each_connection_tells_the_planner_an_index_probe_costs_little(
    postgres_url: str,
) -> None:
    """random_page_cost 1.1 (PostgreSQL's default, 4, is a spinning disk's; at 4 the
    reads of a group's orders scanned the whole table while it held some thousands of
    rows): in the pool's connections, and again in one made after they were closed."""
    db = Database(postgres_url)
    try:
        assert _random_page_cost(db) == "1.1"
        db.engine.dispose()
        assert _random_page_cost(db) == "1.1"
    finally:
        db.dispose()


def test_an_operators_own_setting_is_kept(postgres_url: str) -> None:
    """A value an operator gave (here in the connection string; in postgresql.conf or on
    the database alike) is not overridden."""
    separator = "&" if "?" in postgres_url else "?"
    db = Database(f"{postgres_url}{separator}options=-c%20random_page_cost%3D2")
    try:
        assert _random_page_cost(db) == "2"
    finally:
        db.dispose()


def test_statements_given_arrays_are_planned_at_each_run(postgres_url: str) -> None:
    """Run many times on one connection (psycopg prepares a statement from its sixth
    run), the reads by an IN list, `update_rows` and a statement of `sql` given a list are
    never prepared: a prepared plan is made once, with the table as it was then, and one
    made while a fresh table was nearly empty scanned it whole as it filled."""
    from parcours.runtime.db import sql

    db = Database(postgres_url)
    try:
        with db.write() as conn:
            for number in range(10):
                select_in(
                    conn,
                    "SELECT word FROM customer_name_words WHERE customer_id IN ({marks})",
                    list(range(number, number + 50)),
                )
                update_rows(conn, customer_name_words, ("word",), "customer_id", [("w", number)])
                sql(
                    conn,
                    "SELECT count(*) FROM customer_name_words WHERE word = ANY(CAST(:w AS text[]))",
                    {"w": ["a", "b"]},
                )
                sql(
                    conn,
                    "SELECT count(*) FROM customer_name_words WHERE customer_id = :c",
                    {"c": 1},
                )
            prepared = [
                row[0]
                for row in conn.exec_driver_sql("SELECT statement FROM pg_prepared_statements")
            ]
        assert any("customer_id = $1" in statement for statement in prepared), prepared
        assert not [s for s in prepared if "ANY(" in s or "unnest(" in s], prepared
    finally:
        db.dispose()


def test_a_list_of_numbers_is_read_as_an_in_list(database_url: str) -> None:
    """Numbers too, from small to the largest a BIGINT holds, and an empty list reads
    nothing."""
    db = Database(database_url)
    try:
        numbers = [1, 2**31 + 5, 2**63 - 1]
        with db.write() as conn:
            insert_rows(
                conn, customer_name_words, ("word", "customer_id"), [("n", n) for n in numbers]
            )
        with db.read() as conn:
            found = select_in(
                conn,
                "SELECT customer_id FROM customer_name_words WHERE customer_id IN ({marks})",
                [*numbers, 7],
            )
            nothing = select_in(
                conn,
                "SELECT customer_id FROM customer_name_words WHERE customer_id IN ({marks})",
                [],
            )
        assert sorted(row[0] for row in found) == numbers
        assert nothing == []
    finally:
        db.dispose()


def _words(db: Database) -> list[tuple[str, int]]:
    with db.read() as conn:
        rows = conn.exec_driver_sql("SELECT word, customer_id FROM customer_name_words")
        return sorted((str(word), int(number)) for word, number in rows)


def test_writes_held_are_read_back_by_the_next_statement(database_url: str) -> None:
    """In a transaction holding its writes (the writer's), what `insert_rows`,
    `upsert_rows` and `update_rows` wrote is there for the next statement, whether ours or
    SQLAlchemy's, and for the commit when no statement follows."""
    from sqlalchemy import func, select

    db = Database(database_url)
    try:
        with db.write() as conn:
            hold_writes(conn)
            insert_rows(conn, customer_name_words, ("word", "customer_id"), [("ana", 1)])
            assert select_in(
                conn, "SELECT customer_id FROM customer_name_words WHERE word IN ({marks})", ["ana"]
            ) == [(1,)]
            update_rows(conn, customer_name_words, ("word",), "customer_id", [("anna", 1)])
            rows = [(f"w{n}", n) for n in range(2, 40)]  # COPY's size, were it not held
            insert_rows(conn, customer_name_words, ("word", "customer_id"), rows)
            counted = conn.execute(select(func.count()).select_from(customer_name_words))
            assert counted.scalar_one() == 39
            upsert_rows(
                conn,
                customer_name_words,
                ("word", "customer_id"),
                [("zoe", 40)],
                conflict=("word", "customer_id"),
            )
        assert _words(db) == sorted([("anna", 1), *rows, ("zoe", 40)])
    finally:
        db.dispose()


def test_a_held_write_that_fails_fails_its_transaction_whole(database_url: str) -> None:
    """A held write the database refuses (a row stored twice) fails the statement it went
    with: nothing of the transaction is kept, and the next transaction on the same
    connection writes at once again."""
    import sqlite3

    import pytest
    from psycopg.errors import UniqueViolation
    from sqlalchemy.exc import IntegrityError

    db = Database(database_url)
    try:
        with db.write() as conn:
            insert_rows(conn, customer_name_words, ("word", "customer_id"), [("kept", 1)])
        with (
            pytest.raises((IntegrityError, UniqueViolation, sqlite3.IntegrityError)),
            db.write() as conn,
        ):
            hold_writes(conn)
            insert_rows(conn, customer_name_words, ("word", "customer_id"), [("new", 2)])
            insert_rows(conn, customer_name_words, ("word", "customer_id"), [("kept", 1)])
            select_in(conn, "SELECT word FROM customer_name_words WHERE word IN ({marks})", ["x"])
        assert _words(db) == [("kept", 1)]
        with (  # nothing read after it: the commit fails
            pytest.raises((IntegrityError, UniqueViolation, sqlite3.IntegrityError)),
            db.write() as conn,
        ):
            hold_writes(conn)
            insert_rows(conn, customer_name_words, ("word", "customer_id"), [("new", 2)])
            insert_rows(conn, customer_name_words, ("word", "customer_id"), [("kept", 1)])
        assert _words(db) == [("kept", 1)]
        with db.write() as conn:
            insert_rows(conn, customer_name_words, ("word", "customer_id"), [("after", 3)])
            assert not holds_writes(conn)
        assert _words(db) == [("after", 3), ("kept", 1)]
    finally:
        db.dispose()


def test_a_rollback_drops_the_writes_held(database_url: str) -> None:
    db = Database(database_url)
    try:
        try:
            with db.write() as conn:
                hold_writes(conn)
                insert_rows(conn, customer_name_words, ("word", "customer_id"), [("gone", 1)])
                raise RuntimeError("changed my mind")
        except RuntimeError:
            pass
        assert _words(db) == []
    finally:
        db.dispose()


def test_deletes_and_statements_nobody_reads_are_held_and_in_order(database_url: str) -> None:
    """`delete_rows` and `sql_write` are held too, and everything held goes in the order it
    was written: a row deleted then written again is there; one written then deleted is
    not; the next read sees it all."""
    db = Database(database_url)
    try:
        with db.write() as conn:
            insert_rows(conn, customer_name_words, ("word", "customer_id"), [("old", 1), ("x", 2)])
        with db.write() as conn:
            hold_writes(conn)
            delete_rows(conn, customer_name_words, "customer_id", [1, 2])
            sql_write(
                conn,
                "INSERT INTO customer_name_words (word, customer_id) VALUES (:w, :c)",
                {"w": "new", "c": 1},
            )
            insert_rows(conn, customer_name_words, ("word", "customer_id"), [("gone", 3)])
            delete_rows(conn, customer_name_words, "customer_id", [3])
            assert sql(conn, "SELECT count(*) FROM customer_name_words").scalar_one() == 1
        assert _words(db) == [("new", 1)]
    finally:
        db.dispose()


def test_the_locks_a_transaction_holding_its_writes_takes_are_sent_at_once(
    postgres_url: str,
) -> None:
    """In the writer's transaction (`hold_writes`), `lock_keys` goes down the pipeline at
    once and nobody waits for it: the server holds the locks before the transaction reads
    anything, and keeps them until the transaction ends."""
    import time

    db = Database(postgres_url)
    try:

        def locks_of(pid: int) -> int:
            with db.read() as other:
                query = (
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    f"AND pid = {int(pid)}"
                )
                return int(other.exec_driver_sql(query).scalar_one())

        with db.write() as conn:
            pid = int(sql(conn, "SELECT pg_backend_pid()").scalar_one())
            hold_writes(conn)
            lock_keys(conn, ["email:ana@example.com", "user_id:ana"])
            deadline = time.monotonic() + 10
            while locks_of(pid) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert locks_of(pid) == 2  # taken with no statement read after them
            assert sql(conn, "SELECT 1").scalar_one() == 1
            assert locks_of(pid) == 2
        assert locks_of(pid) == 0
    finally:
        db.dispose()


def test_a_transaction_holding_its_writes_is_whole_from_its_first_statement(
    postgres_url: str,
) -> None:
    """Its BEGIN is held and goes with the first statement (no round trip of its own):
    whatever that statement is (ours or SQLAlchemy's), a failure after it keeps nothing,
    and the connection goes back to transactions of its own: the next writes on it, held
    or not, are undone by a failure too."""
    import pytest
    from sqlalchemy import insert

    from tests.conftest import truncate_all

    truncate_all(postgres_url)
    db = Database(postgres_url)
    try:
        for first in ("ours", "sqlalchemy", "not held"):
            with pytest.raises(RuntimeError), db.write() as conn:
                if first != "not held":
                    hold_writes(conn)
                if first == "sqlalchemy":
                    conn.execute(insert(customer_name_words).values(word="a", customer_id=1))
                else:
                    sql(conn, "INSERT INTO customer_name_words VALUES ('a', 1)")
                insert_rows(conn, customer_name_words, ("word", "customer_id"), [("b", 2)])
                assert sql(conn, "SELECT count(*) FROM customer_name_words").scalar_one() == 2
                raise RuntimeError("changed my mind")
            assert _words(db) == [], first
        with db.write() as conn:
            hold_writes(conn)  # nothing written: the commit sends nothing
        with db.write() as conn:
            hold_writes(conn)
            insert_rows(conn, customer_name_words, ("word", "customer_id"), [("kept", 3)])
        assert _words(db) == [("kept", 3)]
    finally:
        db.dispose()


def test_a_read_sent_ahead_is_answered_from_the_first_statement_after_it(
    postgres_url: str,
) -> None:
    """In the writer's transaction, `sql_ahead` sends its read with the next statement:
    the transaction's next `sql` of it is answered from there (the clock it read is that
    of the first statement), once; a second `sql` reads again. Outside it, `sql_ahead`
    does nothing and `sql` reads when asked."""
    import time

    clock = "SELECT clock_timestamp() AS t"
    db = Database(postgres_url)
    try:
        with db.write() as conn:
            hold_writes(conn)
            sql_ahead(conn, clock)
            first = sql(conn, "SELECT clock_timestamp() AS first").scalar_one()
            time.sleep(0.05)
            ahead = sql(conn, clock).scalar_one()
            again = sql(conn, clock).scalar_one()
        assert ahead < first < again
        assert (again - ahead).total_seconds() >= 0.05
        with db.write() as conn:
            sql_ahead(conn, clock)
            first = sql(conn, "SELECT clock_timestamp() AS first").scalar_one()
            assert sql(conn, clock).scalar_one() > first
    finally:
        db.dispose()


def test_reads_sent_ahead_are_taken_once_by_the_same_read(postgres_url: str) -> None:
    """`send_ahead` sends a function's reads (`sql`, `select_in`) down the writer's
    pipeline: the function sees no rows; the same read later (same statement, same
    parameters) gets the rows as they were when it was sent, once; a read with other
    parameters, or a second one, reads anew. Outside the writer's transaction nothing is
    sent and every read reads."""
    from tests.conftest import truncate_all

    truncate_all(postgres_url)
    statement = "SELECT word, customer_id FROM customer_name_words WHERE word IN ({marks})"

    def words(conn: Connection, wanted: list[str]) -> list[Any]:
        return select_in(conn, statement, wanted)

    def count(conn: Connection, customer: int) -> list[int]:
        query = "SELECT count(*) FROM customer_name_words WHERE customer_id = :c"
        return list(sql(conn, query, {"c": customer}).scalars())

    db = Database(postgres_url)
    try:
        with db.write() as conn:
            insert_rows(conn, customer_name_words, ("word", "customer_id"), [("ana", 1)])
        with db.write() as conn:
            hold_writes(conn)
            seen: list[Any] = []
            send_ahead(conn, lambda: seen.append(words(conn, ["ana", "bo"])))
            send_ahead(conn, count, conn, 1)
            assert seen == [[]]
            insert_rows(conn, customer_name_words, ("word", "customer_id"), [("bo", 1)])
            assert words(conn, ["ana"]) == [("ana", 1)]  # other parameters: read now
            assert words(conn, ["ana", "bo"]) == [("ana", 1)]  # as it was when sent
            assert words(conn, ["ana", "bo"]) == [("ana", 1), ("bo", 1)]  # read again
            assert count(conn, 1) == [1]
            assert count(conn, 1) == [2]
        with db.write() as conn:
            send_ahead(conn, count, conn, 1)  # not the writer's: nothing sent
            insert_rows(conn, customer_name_words, ("word", "customer_id"), [("cy", 1)])
            assert count(conn, 1) == [3]
    finally:
        db.dispose()


def test_the_customers_rows_have_room_on_their_page_for_their_next_versions(
    postgres_url: str,
) -> None:
    """PostgreSQL: the customers table keeps room on each page (fill factor 70), so that
    the updates of a group of events stay on the row's page and leave the indexes alone."""
    db = Database(postgres_url)
    try:
        with db.read() as conn:
            options = conn.exec_driver_sql(
                "SELECT reloptions FROM pg_class WHERE relname = 'customers' "
                "AND relnamespace = current_schema()::regnamespace"
            ).scalar_one()
        assert "fillfactor=70" in (options or [])
    finally:
        db.dispose()


def test_locks_tried_are_those_nobody_else_holds_and_never_waited_for(
    database_url: str,
) -> None:
    """`try_lock_buckets` takes at once what is free and returns it, leaves what another
    transaction holds (without waiting for it), and takes that once the other is done. On
    SQLite, whose writer is alone, everything asked for is had."""
    db = Database(database_url)
    try:
        with db.write() as mine:
            assert try_lock_buckets(mine, 5_555, [1, 2]) == {1, 2}
            assert try_lock_buckets(mine, 5_555, [2]) == {2}  # held already: had again
            if database_url.startswith("sqlite"):
                return
            with db.write() as other:
                assert try_lock_buckets(other, 5_555, [2, 3]) == {3}
                assert try_lock_buckets(other, 5_556, [2]) == {2}  # another space
            mine.rollback()
            with db.write() as other:
                assert try_lock_buckets(other, 5_555, [1, 2, 3]) == {1, 2, 3}
    finally:
        db.dispose()


def test_a_full_lock_table_or_a_deadlock_is_worth_trying_again() -> None:
    """PostgreSQL's lock table is shared by every session: "out of shared memory" while
    others hold many locks passes once they commit, as a deadlock's victim may succeed the
    second time; a constraint broken never does."""
    import psycopg.errors

    assert is_transient(psycopg.errors.lookup("53200")("out of shared memory"))
    assert is_transient(psycopg.errors.lookup("40P01")("deadlock detected"))
    assert not is_transient(psycopg.errors.lookup("23505")("duplicate key value"))
