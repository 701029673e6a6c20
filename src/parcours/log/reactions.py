"""What reacts to an append: the registry the log's door calls, in the append's transaction.

The composition root makes one `Reactions` per process. It gives it who resolves the
customers of what is appended (the customers' identities and profiles) together with the
reaction that follows the merges this resolution makes (every package moving a merged
profile's rows: customers/people.py), which runs first; then it registers each reaction
in order: commerce, journeys, referrals, segments, Wallet updates. Whoever appends (the writer for
the API, an action, a journey's own decisions) hands it to `append_events`;
`Reactions.names` tells a newcomer what happens after an event is appended.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from sqlalchemy import Connection

from parcours.log.event import Event

# A reaction: the connection of the append's transaction, the events newly stored (and
# those their resolution produced, such as merges), and the time of the append.
Reaction = Callable[[Connection, list[Event], int], None]


class Identities(Protocol):
    """Who the appended events are about: resolved before they are stored, projected on
    their profiles after (customers.projection.Projector is the one implementation)."""

    def keys_of(self, event: Event) -> Iterable[tuple[str, str]]: ...

    def read_ahead(self, events: list[Event]) -> None: ...

    def resolve(self, events: list[Event]) -> list[Event]: ...

    def project(self, events: list[Event]) -> None: ...


# Made for each append, in its transaction, at its time.
IdentitiesFactory = Callable[[Connection, int], Identities]


class Reactions:
    """The registry of one running Parcours: identities first, then the merges' reaction,
    then each reaction in the order it was registered. Registered at start-up only;
    appends read it. Resolving customers merges profiles, so identities come only with
    the reaction that follows those merges."""

    def __init__(
        self, identities: IdentitiesFactory | None = None, *, merges: Reaction | None = None
    ) -> None:
        if (identities is None) != (merges is None):
            raise ValueError(
                "identities and merges go together: resolving customers merges profiles, "
                "and each package must follow the merges (customers.People.follow_merges)"
            )
        self.identities = identities
        self._reactions: list[tuple[str, Reaction]] = []
        self.reads_ahead: list[str] = []
        if merges is not None:
            self._reactions.append(("merges", merges))

    def react(self, name: str, reaction: Reaction) -> None:
        """Call `reaction` after every append (named for docs, logs and tests)."""
        if any(known == name for known, _ in self._reactions):
            raise ValueError(f"a reaction named {name!r} is already registered")
        self._reactions.append((name, reaction))

    def read_ahead(self, statement: str) -> None:
        """A read of no parameters that a reaction makes at every append, of what appends
        do not write (the journeys, the segments defined): the writer sends it with its
        first statement (`runtime.db.sql_ahead`), and the reaction's read costs no round
        trip."""
        self.reads_ahead.append(statement)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._reactions]

    def __iter__(self) -> Iterator[Reaction]:
        return iter([reaction for _, reaction in self._reactions])

    def __bool__(self) -> bool:
        return self.identities is not None or bool(self._reactions)


class _Quiet(Reactions):
    def react(self, name: str, reaction: Reaction) -> None:
        raise TypeError("QUIET takes no reaction: make a Reactions of your own")


# Parcours' own facts about a known customer that nothing reacts to (a journey's log
# lines, the record of an erasure): stored, never resolved or projected.
QUIET: Reactions = _Quiet()
