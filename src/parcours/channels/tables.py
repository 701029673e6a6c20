"""The table the channels package owns: the providers set up in the console's Settings
page (docs/channels.md, "Providers set up in the console"), one row per channel."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Table, Text

from parcours.runtime.db import metadata

# One row per channel set up in the console. `settings` holds what is not secret, as JSON;
# `secrets` the passwords, tokens and keys, as JSON sealed with AES-GCM (channels/stored.py,
# bound to the channel and the provider). `version` grows at each save: workers compare
# the versions to know when to build the channel's provider again.
channel_providers = Table(
    "channel_providers",
    metadata,
    Column("channel", Text, primary_key=True),
    Column("provider", Text, nullable=False),
    Column("settings", Text, nullable=False),
    Column("secrets", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("updated_by", Text, nullable=True),
)
