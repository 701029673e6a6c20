"""Loyalty: points ledger, tiers, rewards, referrals (not built yet)."""
