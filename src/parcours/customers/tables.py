"""The tables the customers module owns: profiles, identities, the consent ledger, orders."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, PrimaryKeyConstraint, Table, Text, text

from parcours.runtime.db import BigId, metadata

CUSTOMERS_FILLFACTOR = 70

customers = Table(
    "customers",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("merged_into", BigInteger, nullable=True),
    Column("erased_at", BigInteger, nullable=True),
    # JSON objects: trait -> value, trait -> corrected time it was set, computed traits.
    Column("traits", Text, nullable=False, server_default="{}"),
    Column("trait_times", Text, nullable=False, server_default="{}"),
    Column("computed", Text, nullable=False, server_default="{}"),
    # PostgreSQL: room on each page for a row's next versions, so that an update (each
    # group of events updates its customers' rows, twice for orders) stays on its page
    # and leaves the indexes alone (migration 0045).
    postgresql_with={"fillfactor": CUSTOMERS_FILLFACTOR},
)

# The words of each live customer's name, folded (customers/names.py): a search for a part
# of a name is a range on the primary key, not a read of every profile.
customer_name_words = Table(
    "customer_name_words",
    metadata,
    # Byte order on PostgreSQL whatever the database's collation: the search's range ends
    # with U+10FFFF, the last code point in that order only.
    Column("word", Text().with_variant(Text(collation="C"), "postgresql"), nullable=False),
    Column("customer_id", BigInteger, nullable=False),
    PrimaryKeyConstraint("word", "customer_id"),
)
Index("ix_customer_name_words_customer", customer_name_words.c.customer_id)

identities = Table(
    "identities",
    metadata,
    Column("kind", Text, nullable=False),
    Column("value", Text, nullable=False),
    Column("customer_id", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("kind", "value"),
)
# (customer_id, kind): reads of one kind for many customers must not take the primary key
# (kind, value) and read every identity of that kind.
Index("ix_identities_customer", identities.c.customer_id, identities.c.kind)

consents = Table(
    "consents",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("customer_id", BigInteger, nullable=False),
    Column("channel", Text, nullable=False),
    Column("purpose", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("occurred_at", BigInteger, nullable=False),
    Column("recorded_at", BigInteger, nullable=False),
    Column("source", Text, nullable=False),
    Column("wording", Text, nullable=True),
    Column("wording_version", Text, nullable=True),
    Column("message_id", Text, nullable=False),
)
Index("ix_consents_customer", consents.c.customer_id, consents.c.channel, consents.c.purpose)

Index("ix_customers_merged_into", customers.c.merged_into)
# The live customers by when they were first seen: the overview's new customers and the
# customers page's count read this index alone (a count over the table's wide rows took
# 50-90 ms at 100,000 customers on PostgreSQL).
_LIVE = text("merged_into IS NULL AND erased_at IS NULL")
Index(
    "ix_customers_live_created",
    customers.c.created_at,
    sqlite_where=_LIVE,
    postgresql_where=_LIVE,
)
