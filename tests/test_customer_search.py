"""The console's customer search (customers.profiles.search): by any id typed whole, by the
start of an email, phone or id, and by the start of any word of a name, accents and case
aside, read from the words kept as profiles change (customers/names.py), never from a
scan of every profile."""

from __future__ import annotations

from sqlalchemy import text

from parcours.customers import profiles
from parcours.customers.names import words
from parcours.services import Services
from tests.conftest import make_event


def _identify(services: Services, user: str, **traits: object) -> None:
    services.writer.append_sync([make_event("identify", userId=user, traits=traits)])


def _names(services: Services, query: str) -> list[str]:
    with services.db.read() as conn:
        return [match.name for match in profiles.search(conn, query, "FR")]


def test_a_name_is_found_by_the_start_of_any_of_its_words_accents_and_case_aside(
    services: Services,
) -> None:
    _identify(services, "u-1", name="Hélène Dupont-Aignan", email="h.d@example.com")
    _identify(services, "u-2", first_name="Jean-Pierre", last_name="Martin")
    _identify(services, "u-3", firstName="Marie", lastName="Dupuis")
    _identify(services, "u-4", email="nobody@example.com")  # no name at all
    assert _names(services, "helene") == ["Hélène Dupont-Aignan"]
    assert _names(services, "HÉLÈ") == ["Hélène Dupont-Aignan"]
    assert _names(services, "aignan") == ["Hélène Dupont-Aignan"]
    assert sorted(_names(services, "dup")) == ["Hélène Dupont-Aignan", "Marie Dupuis"]
    assert _names(services, "pierre") == ["Jean-Pierre Martin"]
    assert _names(services, "jean-pierre mar") == ["Jean-Pierre Martin"]
    assert _names(services, "Marie Dupuis") == ["Marie Dupuis"]
    # Words in another order, or the middle of a word, are not a name's part.
    assert _names(services, "dupuis marie") == []
    assert _names(services, "pont") == []
    assert _names(services, "  ") == [] and _names(services, "%") == []


def test_a_name_changed_renamed_merged_or_erased_is_searched_as_it_now_is(
    services: Services,
) -> None:
    _identify(services, "u-1", name="Camille Roux")
    _identify(services, "u-1", name="Camille Lefèvre")  # married: the new name only
    assert _names(services, "roux") == []
    assert _names(services, "lefevre") == ["Camille Lefèvre"]

    # A known customer browses anonymously, gives their name there, then signs in: the two
    # profiles merge, and the name is searched once, for the one left.
    services.writer.append_sync([make_event(userId="u-7", event="Order Completed")])
    services.writer.append_sync(
        [make_event("identify", anonymousId="anon-7", traits={"name": "Yanis Benali"})]
    )
    services.writer.append_sync([make_event("identify", userId="u-7", anonymousId="anon-7")])
    with services.db.read() as conn:
        [found] = profiles.search(conn, "benali", "FR")
        assert found.customer_id == profiles.resolve(conn, "u-7", "FR")
        assert (
            conn.execute(
                text("SELECT count(*) FROM customer_name_words WHERE word = 'benali'")
            ).scalar_one()
            == 1
        )

    profiles.erase(services.db, services.people, "u-1", "FR", 0, "test")
    assert _names(services, "camille") == [] and _names(services, "lefevre") == []
    with services.db.read() as conn:
        left = conn.execute(text("SELECT word FROM customer_name_words ORDER BY word")).scalars()
        assert list(left) == ["benali", "yanis"]  # nothing of an erased person


def test_many_namesakes_the_search_still_lists_at_most_its_limit(services: Services) -> None:
    services.writer.append_sync(
        [
            make_event("identify", userId=f"u-{n}", traits={"name": f"Léa Martin {n:02d}"})
            for n in range(30)
        ]
    )
    assert len(_names(services, "lea mar")) == 20
    with services.db.read() as conn:
        assert len(profiles.search(conn, "martin", "FR", limit=5)) == 5


def test_the_words_of_a_name() -> None:
    assert words("  Éloïse  O'Brien-Smith_2 ") == ["eloise", "o", "brien", "smith", "2"]
    assert words("ÅSA ÅSA åsa") == ["asa"]
    assert words("x" * 100) == ["x" * 64]
    assert len(words(" ".join(f"w{n}" for n in range(40)))) == 12
    assert words("") == [] and words("--") == []
