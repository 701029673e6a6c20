"""Ingest's own table: where each bulk import stopped."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Table, Text

from parcours.runtime.db import metadata

# Where a bulk import (`parcours import events FILE`) stopped: the file's absolute path, the
# byte and line after its last committed chunk, and a digest of the bytes before that point
# (a file replaced or rewritten since is read from its first line again).
import_positions = Table(
    "import_positions",
    metadata,
    Column("file", Text, primary_key=True),
    Column("byte_offset", BigInteger, nullable=False),
    Column("line", BigInteger, nullable=False),
    Column("prefix_sha256", Text, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)
