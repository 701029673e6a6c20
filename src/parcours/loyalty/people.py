"""Loyalty's part when two profiles merge or a person is erased (customers.people): the
referral codes and the referrals a person made or was brought by follow the person."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, delete, update

from parcours.loyalty.tables import referral_codes, referral_conversions

TABLES = ("referral_codes", "referral_conversions")


def follow_merge(conn: Connection, merged_id: int, survivor_id: int, now: int) -> None:
    """Profiles merged: the merged customer's codes, and the referrals they made, are the
    survivor's. A conversion keeps its referee: a friend credits one referrer once."""
    conn.execute(
        update(referral_codes)
        .where(referral_codes.c.customer_id == merged_id)
        .values(customer_id=survivor_id)
    )
    conn.execute(
        update(referral_conversions)
        .where(referral_conversions.c.referrer_id == merged_id)
        .values(referrer_id=survivor_id)
    )


def erase(conn: Connection, customer_ids: Sequence[int]) -> dict[str, int]:
    """A person erased: their codes, and every referral they made or were brought by."""
    ids = list(customer_ids)
    codes = conn.execute(delete(referral_codes).where(referral_codes.c.customer_id.in_(ids)))
    conversions = sum(
        conn.execute(delete(referral_conversions).where(column.in_(ids))).rowcount
        for column in (referral_conversions.c.referee_id, referral_conversions.c.referrer_id)
    )
    return {"referral_codes": codes.rowcount, "referral_conversions": conversions}
