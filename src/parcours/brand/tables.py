"""The tables the brand package owns: the brand's settings made in the console (one row,
its version counted up at each save), its logo, and each version of the consent wording."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, LargeBinary, Table, Text

from parcours.runtime.db import BigId, metadata

# One row (id 1): what the console changed, as JSON; what it leaves out is the
# configuration file's. `version` grows at each save (the look's stylesheet is named
# after it, and the workers' cache of the send rules compares it).
brand_settings = Table(
    "brand_settings",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
    Column("document", Text, nullable=False),  # JSON
    Column("updated_at", BigInteger, nullable=False),
    Column("updated_by", Text, nullable=True),
)

# One row (id 1) when a logo was given: its bytes (PNG or JPEG), served by its digest.
brand_logo = Table(
    "brand_logo",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("media_type", Text, nullable=False),
    Column("digest", Text, nullable=False),  # SHA-256, hex
    Column("content", LargeBinary, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# Each saved version of the words that ask for consent, per language; the newest is in
# force. Consents recorded under it carry its `version` and its words.
consent_wordings = Table(
    "consent_wordings",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("version", Text, nullable=False, unique=True),
    Column("texts", Text, nullable=False),  # JSON: language -> words
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", Text, nullable=True),
)
