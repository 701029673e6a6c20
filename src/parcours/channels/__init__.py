"""Channels: one module per provider behind one small protocol (base.py), and the registry
that builds the providers a brand configured (registry.py)."""
