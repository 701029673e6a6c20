"""Whether what this thread does counts in the metrics: everything does, except inside
`not_counted()`, where the journey simulator runs the real engine, writer and delivery on
a scratch database, and what it does must not count as the brand's."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_switch = threading.local()


def counting() -> bool:
    """False in this thread inside `not_counted()`."""
    return not getattr(_switch, "off", False)


@contextmanager
def not_counted() -> Iterator[None]:
    previous = getattr(_switch, "off", False)
    _switch.off = True
    try:
        yield
    finally:
        _switch.off = previous


__all__ = ["counting", "not_counted"]
