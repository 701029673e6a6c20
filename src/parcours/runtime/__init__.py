"""Runtime: settings, the database, the clock; carries the domain modules without knowing them."""
