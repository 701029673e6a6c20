"""Segments: sets of customers kept true by conditions over traits and events, evaluated on
events, on time and in batches. Other packages use only what this face lists."""

# The package's face: what other packages may use of it (tests/test_house.py): its
# public modules, and the names below.
from parcours.segments import catalog, drafts, people
from parcours.segments.catalog import (
    QUEUE,
    SEGMENT_ENTERED,
    SEGMENT_EXITED,
    SegmentExists,
    SegmentIdMismatch,
    UnknownSegment,
)
from parcours.segments.definition import SegmentError, load_segment
from parcours.segments.engine import SegmentEngine, membership_flags

__all__ = [
    "QUEUE",
    "SEGMENT_ENTERED",
    "SEGMENT_EXITED",
    "SegmentEngine",
    "SegmentError",
    "SegmentExists",
    "SegmentIdMismatch",
    "UnknownSegment",
    "catalog",
    "drafts",
    "load_segment",
    "membership_flags",
    "people",
]
