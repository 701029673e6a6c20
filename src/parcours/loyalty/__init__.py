"""Loyalty: referrals today; points, tiers and rewards to come. Other packages use only what
this face lists."""

# The package's face: what other packages may use of it (tests/test_house.py): its
# public modules, and the names below.
from parcours.loyalty import people
from parcours.loyalty.referrals import Referrals

__all__ = ["Referrals", "people"]
