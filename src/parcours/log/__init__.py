"""The event log: `Event`, its table, and `append_events`, the one door into it.

Everything that happens is an event appended here once, never edited; profiles, journey
positions, segment memberships and reports are derived from it (docs/house.md).
"""

from parcours.log.append import Appender, AppendResult, Hook, append_events
from parcours.log.event import Event, internal_event
from parcours.log.tables import events

__all__ = ["AppendResult", "Appender", "Event", "Hook", "append_events", "events", "internal_event"]
