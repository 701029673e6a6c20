"""The tables the loyalty module owns: referral codes and the referrals they converted."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Table, Text

from parcours.runtime.db import metadata

# One row per code; the primary key makes a code unique across customers. A customer's
# codes follow them when profiles merge.
referral_codes = Table(
    "referral_codes",
    metadata,
    Column("code", Text, primary_key=True),
    Column("customer_id", BigInteger, nullable=False),
    Column("issued_at", BigInteger, nullable=False),
)
Index("ix_referral_codes_customer", referral_codes.c.customer_id)

# One row per referred customer (the referee), ever: a friend credits one referrer once.
referral_conversions = Table(
    "referral_conversions",
    metadata,
    Column("referee_id", BigInteger, primary_key=True, autoincrement=False),
    Column("referrer_id", BigInteger, nullable=False),
    Column("code", Text, nullable=False),
    Column("order_id", Text, nullable=False),
    Column("reward_code", Text, nullable=False, unique=True),
    Column("converted_at", BigInteger, nullable=False),
)
Index("ix_referral_conversions_referrer", referral_conversions.c.referrer_id)
