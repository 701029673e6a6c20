"""The log's registry of what reacts to an append (log/reactions.py)."""

from __future__ import annotations

from typing import Any

import pytest

from parcours.customers import identity_resolver
from parcours.log import QUIET, Reactions
from parcours.services import Services


def _nothing(*_: Any) -> None:
    return None


def test_identities_come_only_with_the_reaction_that_follows_their_merges() -> None:
    with pytest.raises(ValueError, match="identities and merges go together"):
        Reactions(identity_resolver("FR"))
    with pytest.raises(ValueError, match="identities and merges go together"):
        Reactions(merges=_nothing)
    reactions = Reactions(identity_resolver("FR"), merges=_nothing)
    reactions.react("journeys", _nothing)
    assert reactions.names == ["merges", "journeys"]


def test_a_reaction_is_registered_once_by_name() -> None:
    reactions = Reactions()
    reactions.react("segments", _nothing)
    with pytest.raises(ValueError, match="already registered"):
        reactions.react("segments", _nothing)


def test_quiet_takes_no_reaction() -> None:
    with pytest.raises(TypeError, match="QUIET takes no reaction"):
        QUIET.react("anything", _nothing)
    assert not QUIET and list(QUIET) == []


def test_a_running_parcours_reacts_in_the_documented_order(services: Services) -> None:
    """docs/architecture.md and log/reactions.py name this order."""
    assert services.reactions.names == [
        "merges",
        "commerce",
        "journeys",
        "referrals",
        "segments",
        "wallet updates",
    ]
