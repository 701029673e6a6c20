"""Journeys: definitions, versions and their review, the engine (interpreter, runner, store),
entries, the simulator and outbound webhooks. Other packages use only what this face lists."""

# The package's face: what other packages may use of it (tests/test_house.py): its
# public modules, and the names below.
from parcours.journeys import graph, people, versions, webhooks
from parcours.journeys.definition import JourneyError, journey_schema
from parcours.journeys.engine import QUEUE, JourneyEngine
from parcours.journeys.follow_ups import FollowUp, FollowUpMessage, FollowUps, follow_ups
from parcours.journeys.ready_made import ReadyMade, ready_made, ready_made_source
from parcours.journeys.simulator import (
    MAX_DAYS,
    OpenScratch,
    ScriptError,
    TimelineEntry,
    TimelineItem,
    brand_in_force,
    brand_segments,
    format_timeline,
    load_script,
    simulate,
    timeline_item,
)
from parcours.journeys.versions import LifecycleError, NotReady, UnknownJourney, validate

__all__ = [
    "MAX_DAYS",
    "QUEUE",
    "FollowUp",
    "FollowUpMessage",
    "FollowUps",
    "JourneyEngine",
    "JourneyError",
    "LifecycleError",
    "NotReady",
    "OpenScratch",
    "ReadyMade",
    "ScriptError",
    "TimelineEntry",
    "TimelineItem",
    "UnknownJourney",
    "brand_in_force",
    "brand_segments",
    "follow_ups",
    "format_timeline",
    "graph",
    "journey_schema",
    "load_script",
    "people",
    "ready_made",
    "ready_made_source",
    "simulate",
    "timeline_item",
    "validate",
    "versions",
    "webhooks",
]
