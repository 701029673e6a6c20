"""Counts of customers the console's pages show, made at most once a minute.

Counting the live customers reads every one of them (on PostgreSQL an index cannot say
which rows are visible without the table's visibility map, which a busy profile table
rarely has up to date): 50-80 ms at 100,000 customers, measured, and ten times that at a
million. The overview's new customers and the customers page's total are kept per
process and database for `COUNTS_TTL_S` seconds, as a dashboard's figures are expected to
be: a minute old at most. What the figures say is unchanged; only how often they are made.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sqlalchemy import Connection, Engine

COUNTS_TTL_S = 60.0

_made: dict[tuple[Engine, str], tuple[float, int]] = {}
_lock = threading.Lock()


def counted(conn: Connection, name: str, count: Callable[[Connection], int]) -> int:
    """The count called `name` on this connection's database: made by `count` when it
    was not made in the last `COUNTS_TTL_S` seconds by this process."""
    key = (conn.engine, name)
    with _lock:
        made = _made.get(key)
    if made is not None and time.monotonic() - made[0] < COUNTS_TTL_S:
        return made[1]
    value = count(conn)
    with _lock:
        _made[key] = (time.monotonic(), value)
    return value
