"""Analytics: KPIs, attribution, customer value (not built yet)."""
