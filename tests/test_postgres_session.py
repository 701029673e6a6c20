"""How Parcours' connections to PostgreSQL are set up (runtime/db.py `_configure_postgres`):
lists sent in binary, and the planner told how Parcours reads, unless an operator said
otherwise."""

from __future__ import annotations

from parcours.customers.tables import customer_name_words
from parcours.runtime.db import Database, insert_rows, select_in, update_rows

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


def _planner(db: Database) -> tuple[str, str]:
    with db.read() as conn:
        cost = conn.exec_driver_sql("SHOW random_page_cost").scalar_one()
        mode = conn.exec_driver_sql("SHOW plan_cache_mode").scalar_one()
    return str(cost), str(mode)


def test_each_connection_plans_each_statement_for_reads_by_key(postgres_url: str) -> None:
    """An index probe costs about a sequential read (random_page_cost 1.1), and a statement
    is planned at each run, with the table as it is (a plan kept from when a fresh table
    was nearly empty scanned it whole as it grew): in every connection of the pool, read
    or write, and again in a connection made after the pool's were closed."""
    db = Database(postgres_url)
    try:
        assert _planner(db) == ("1.1", "force_custom_plan")
        with db.write() as conn:
            assert conn.exec_driver_sql("SHOW plan_cache_mode").scalar_one() == "force_custom_plan"
        db.engine.dispose()
        assert _planner(db) == ("1.1", "force_custom_plan")
    finally:
        db.dispose()


def test_an_operators_own_planner_settings_are_kept(postgres_url: str) -> None:
    """Settings an operator gave (here in the connection string; in postgresql.conf or on
    the database alike) are not overridden."""
    separator = "&" if "?" in postgres_url else "?"
    options = "-c%20random_page_cost%3D2%20-c%20plan_cache_mode%3Dforce_generic_plan"
    db = Database(f"{postgres_url}{separator}options={options}")
    try:
        assert _planner(db) == ("2", "force_generic_plan")
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
