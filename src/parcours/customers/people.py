"""What happens to a person's rows in every package when two profiles merge or a person is
erased: the registry of each package's hooks (docs/core.md, "Merges" and "Erasure").

Each package moves and deletes only its own tables, in hooks kept beside them
(`log.people`, `journeys.people`, `messaging.people`...). The composition root makes one
`People`, registers every package's hooks in order, and hands it to whoever erases; it
registers `follow_merges` with the log's reactions, so that the hooks run on each
`Customers Merged` event, in the transaction that appended it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection, delete

from parcours.customers.projection import MERGE_EVENT
from parcours.customers.tables import consents, customer_name_words, identities
from parcours.log import Event
from parcours.runtime.documents import JsonObject

# The connection of the merge's transaction, the merged customer, the survivor, the time.
MergeHook = Callable[[Connection, int, int, int], None]
# The connection of the erasure's transaction and the person's ids (the profile and those
# merged into it); answers the rows deleted per table.
EraseHook = Callable[[Connection, Sequence[int]], dict[str, int]]


class OrderBook(Protocol):
    """Whoever keeps the orders (commerce, handed over by the composition root): what the
    customers package asks of them, as it keeps no copy of its own (docs/commerce.md,
    "One copy of the orders")."""

    # The table of the orders: an erasure's count of it is its `orders`.
    orders_table: str

    def order_ids_of(self, conn: Connection, customer_id: int) -> list[str]:
        """The ids of the customer's orders (cancelled ones included)."""
        ...

    def take_away(self, conn: Connection, customer_id: int, order_ids: Sequence[str]) -> int:
        """Delete these orders of the customer and all that hangs on them (one origin's
        part taken away); how many orders went. The order traits are not counted again
        (`recount`)."""
        ...

    def recount(self, conn: Connection, customer_ids: Sequence[int]) -> None:
        """Count these customers' order traits again from their orders and store them."""
        ...

    def exported(self, conn: Connection, customer_id: int) -> list[JsonObject]:
        """The customer's orders as the export shows them, oldest first."""
        ...


@dataclass(frozen=True)
class _Eraser:
    name: str
    tables: tuple[str, ...]
    hook: EraseHook


class People:
    """Each package's hooks for a person merged or erased, called in the order they were
    registered. Registered at start-up only; merges and erasures read it."""

    def __init__(self) -> None:
        self._merges: list[tuple[str, MergeHook]] = []
        self._erasers: list[_Eraser] = []
        # The orders' keeper, once the composition root hands it over (`keep_orders`):
        # the export shows its orders, taking an origin's part away takes its orders.
        self.orders: OrderBook | None = None

    def keep_orders(self, book: OrderBook) -> None:
        """The orders are kept by `book` (commerce)."""
        self.orders = book

    def on_merge(self, name: str, hook: MergeHook) -> None:
        """Call `hook` when a profile is merged into another, to move the package's rows."""
        if any(known == name for known, _ in self._merges):
            raise ValueError(f"a merge hook named {name!r} is already registered")
        self._merges.append((name, hook))

    def on_erase(self, name: str, tables: Sequence[str], hook: EraseHook) -> None:
        """Call `hook` when a person is erased, to delete their rows of `tables` (each
        table is cleared by exactly one hook)."""
        if any(eraser.name == name for eraser in self._erasers):
            raise ValueError(f"an erase hook named {name!r} is already registered")
        cleared = self.erased_tables
        for table in tables:
            if table in cleared:
                raise ValueError(f"{table!r} is already cleared by the {cleared[table]!r} hook")
        self._erasers.append(_Eraser(name, tuple(tables), hook))

    @property
    def merge_names(self) -> list[str]:
        return [name for name, _ in self._merges]

    @property
    def erased_tables(self) -> dict[str, str]:
        """Each table an erasure clears, and the name of the hook that clears it."""
        return {table: eraser.name for eraser in self._erasers for table in eraser.tables}

    def merged(
        self,
        conn: Connection,
        merged_id: int,
        survivor_id: int,
        now: int,
        *,
        only: Sequence[str] | None = None,
    ) -> None:
        """`merged_id` is now `survivor_id`: every package moves its rows (those named in
        `only`, when given: each hook moves what it finds still under the merged id, so a
        second call moves what the first could not see)."""
        for name, hook in self._merges:
            if only is None or name in only:
                hook(conn, merged_id, survivor_id, now)

    def erase(self, conn: Connection, customer_ids: Sequence[int]) -> dict[str, int]:
        """Delete the rows of every registered table about these ids; the count per table."""
        counts: dict[str, int] = {}
        for eraser in self._erasers:
            deleted = eraser.hook(conn, customer_ids)
            unnamed = set(deleted) - set(eraser.tables)
            if unnamed:
                raise RuntimeError(
                    f"the {eraser.name!r} erase hook deleted from {sorted(unnamed)}, "
                    "which it did not name when registered"
                )
            counts.update(deleted)
        return counts

    def follow_merges(self, conn: Connection, events: list[Event], now: int) -> None:
        """The log's reaction: the merges among the appended events, followed in order."""
        for event in events:
            if event.name == MERGE_EVENT and event.source == "system":
                merged = int(event.properties["merged_id"])
                survivor = int(event.properties["survivor_id"])
                self.merged(conn, merged, survivor, now)


# The customers' own rows. On a merge they move as the projection resolves it (the
# profile is derived from them in the same step: customers.projection); on an erasure
# they go with this hook, and the profile row is emptied and kept (customers.api).
CUSTOMER_TABLES = ("identities", "consents", "customer_name_words")


def erase_customer_rows(conn: Connection, customer_ids: Sequence[int]) -> dict[str, int]:
    """The person's identities, consent ledger and the words of their name."""
    ids = list(customer_ids)
    return {
        table.name: conn.execute(delete(table).where(table.c.customer_id.in_(ids))).rowcount
        for table in (identities, consents, customer_name_words)
    }


__all__ = [
    "CUSTOMER_TABLES",
    "EraseHook",
    "MergeHook",
    "OrderBook",
    "People",
    "erase_customer_rows",
]
