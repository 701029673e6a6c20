"""Catalog and stock, carts, orders, shipments and the public tracking page (not built yet)."""
