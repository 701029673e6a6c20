"""Parcours: one customer profile, every channel, journeys that stop when they should."""

__version__ = "0.1.0"
