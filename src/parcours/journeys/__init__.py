"""Journeys: definitions, the durable engine, policies, simulation (not built yet)."""
