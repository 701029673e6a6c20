"""Unified support inbox: conversations across channels (not built yet)."""
