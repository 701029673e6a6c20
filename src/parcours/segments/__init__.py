"""Segments: a predicate language over traits and event aggregates (not built yet)."""
