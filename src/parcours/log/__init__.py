"""The event log: `Event`, its table, and `append_events`, the one door into it.

Everything that happens is an event appended here once, never edited; profiles, journey
positions, segment memberships and reports are derived from it (docs/house.md).
"""

# The package's face: what other packages may use of it (tests/test_house.py): its
# public modules, and the names below.
from parcours.log import people, queries
from parcours.log.append import Appender, AppendResult, append_events
from parcours.log.event import Event, internal_event
from parcours.log.reactions import QUIET, Identities, IdentitiesFactory, Reaction, Reactions
from parcours.log.tables import events

__all__ = [
    "QUIET",
    "AppendResult",
    "Appender",
    "Event",
    "Identities",
    "IdentitiesFactory",
    "Reaction",
    "Reactions",
    "append_events",
    "events",
    "internal_event",
    "people",
    "queries",
]
