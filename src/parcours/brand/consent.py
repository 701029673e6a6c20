"""The words that ask customers for consent (the preference centre's), per language, in
versions: each save makes a new version, and consents recorded afterwards carry its id
and its words. Before any save, the shipped words are in force, as version
`preference-centre-1`."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import Connection, func, insert, select

from parcours.brand.settings import BrandError
from parcours.brand.tables import consent_wordings
from parcours.runtime.db import Database
from parcours.runtime.i18n import SHIPPED

SHIPPED_VERSION = "preference-centre-1"
LONGEST_WORDING = 500


@dataclass(frozen=True)
class ConsentWording:
    version: str
    texts: dict[str, str] = field(default_factory=dict)  # language -> words
    created_at: int | None = None
    created_by: str | None = None


def consent_wording(conn: Connection) -> ConsentWording | None:
    """The version in force, or None while the shipped words are."""
    row = conn.execute(
        select(consent_wordings).order_by(consent_wordings.c.id.desc()).limit(1)
    ).first()
    if row is None:
        return None
    return ConsentWording(row.version, json.loads(row.texts), row.created_at, row.created_by)


def save_consent_wording(
    db: Database,
    texts: Mapping[str, str],
    now: int,
    *,
    by: str | None = None,
    also: Callable[[Connection, ConsentWording | None, ConsentWording], None] | None = None,
) -> ConsentWording:
    """A new version of the words (one per language we ship, each given: BrandError);
    `also(conn, before, after)` runs in the same transaction."""
    cleaned: dict[str, str] = {}
    for language in SHIPPED:
        words = " ".join(str(texts.get(language, "")).split())
        if not words:
            raise BrandError("settings.wording_required", language=language)
        if len(words) > LONGEST_WORDING:
            raise BrandError("settings.wording_long", length=str(LONGEST_WORDING))
        cleaned[language] = words
    with db.write() as conn:
        before = consent_wording(conn)
        count = conn.execute(select(func.count()).select_from(consent_wordings)).scalar_one()
        version = f"preference-centre-{int(count) + 2}"  # the shipped words are the first
        conn.execute(
            insert(consent_wordings).values(
                version=version,
                texts=json.dumps(cleaned, sort_keys=True, ensure_ascii=False),
                created_at=now,
                created_by=by,
            )
        )
        after = ConsentWording(version, cleaned, now, by)
        if also is not None:
            also(conn, before, after)
    return after
