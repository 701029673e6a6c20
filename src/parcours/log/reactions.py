"""What reacts to an append: the registry the log's door calls, in the append's transaction.

The composition root makes one `Reactions` per process and registers, once, who resolves
the customers of what is appended (the customers' identities and profiles) and then each
reaction in order: journeys, segments, referrals, Wallet updates. Whoever appends (the
writer for the API, an action, a journey's own decisions) hands it to `append_events`;
reading `Reactions.names` tells a newcomer what happens after an event is appended.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from sqlalchemy import Connection

from parcours.log.event import Event

# A reaction: the connection of the append's transaction, the events newly stored (and
# those their resolution produced, such as merges), and the time of the append.
Hook = Callable[[Connection, list[Event], int], None]


class Identities(Protocol):
    """Who the appended events are about: resolved before they are stored, projected on
    their profiles after (customers.projection.Projector is the one implementation)."""

    def keys_of(self, event: Event) -> Iterable[tuple[str, str]]: ...

    def resolve(self, events: list[Event]) -> list[Event]: ...

    def project(self, events: list[Event]) -> None: ...


# Made for each append, in its transaction, at its time.
IdentitiesFactory = Callable[[Connection, int], Identities]


class Reactions:
    """The registry of one running Parcours: identities first, then each reaction in the
    order it was registered. Registered at start-up only; appends read it."""

    def __init__(self, identities: IdentitiesFactory | None = None) -> None:
        self.identities = identities
        self._hooks: list[tuple[str, Hook]] = []

    def react(self, name: str, hook: Hook) -> None:
        """Call `hook` after every append (named for docs, logs and tests)."""
        if any(known == name for known, _ in self._hooks):
            raise ValueError(f"a reaction named {name!r} is already registered")
        self._hooks.append((name, hook))

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._hooks]

    def __iter__(self) -> Iterator[Hook]:
        return iter([hook for _, hook in self._hooks])

    def __bool__(self) -> bool:
        return self.identities is not None or bool(self._hooks)


# Parcours' own facts about a known customer that nothing reacts to (a journey's log
# lines, the record of an erasure): stored, never resolved or projected.
QUIET = Reactions()
