"""Templates, rendering, the outbox, channel choice and fallback (not built yet)."""
