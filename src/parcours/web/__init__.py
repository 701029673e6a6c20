"""The console and the public pages (not built yet)."""
