"""One module per channel and provider behind one small protocol (not built yet)."""
