"""Customers' names as they are shown and as they are searched.

A name is searched by the start of any of its words ("dup" finds Marie Dupont, "pierre"
finds Jean-Pierre), accents and case aside ("helene" finds Hélène). The words are kept in
`customer_name_words`, one row a word, so that a search is a range on its primary key
whatever the number of customers; they change where a profile's traits are written (the
projection, an erasure, a partial erasure) and only when the name did.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection

from parcours.customers.tables import customer_name_words
from parcours.runtime.db import delete_rows, insert_rows

WORD_LENGTH = 64  # longer words are cut: a search types the start of a word
WORDS_PER_NAME = 12
_SEPARATORS = re.compile(r"[\W_]+")


def name_of(traits: Mapping[str, Any]) -> str:
    """The name a customer is shown by: the `name` trait, else first and last names."""
    name = traits.get("name")
    if isinstance(name, str) and name.strip():
        return name.strip()
    parts = [traits.get(key) for key in ("first_name", "firstName", "last_name", "lastName")]
    return " ".join(part.strip() for part in parts if isinstance(part, str) and part.strip())


def folded(text: str) -> str:
    """`text` as searches compare it: lower case, accents removed."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def words(text: str) -> list[str]:
    """The searchable words of a name or of a query, folded, in order, each once."""
    found = (word[:WORD_LENGTH] for word in _SEPARATORS.split(folded(text)) if word)
    return list(dict.fromkeys(found))[:WORDS_PER_NAME]


def write_name_words(conn: Connection, names: Mapping[int, str]) -> None:
    """Keep the words of these customers' names (customer id -> name; an empty name for
    one merged away, erased or nameless): theirs are replaced."""
    if not names:
        return
    delete_rows(conn, customer_name_words, "customer_id", sorted(names))
    insert_rows(
        conn,
        customer_name_words,
        ("word", "customer_id"),
        [(word, customer) for customer, name in sorted(names.items()) for word in words(name)],
    )
