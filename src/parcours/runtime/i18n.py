"""Texts customers and merchants see, in English and French (`locales/<lang>/*.json`)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

LOCALES_DIR = Path(__file__).parent.parent / "locales"
SHIPPED = ("en", "fr")


@lru_cache(maxsize=8)
def _catalogue(locale: str) -> dict[str, str]:
    texts: dict[str, str] = {}
    for path in sorted((LOCALES_DIR / locale).glob("*.json")):
        texts.update(json.loads(path.read_text(encoding="utf-8")))
    return texts


def pick_locale(*candidates: str | None) -> str:
    """The first candidate we ship (by its language: fr-CA -> fr), else English."""
    for candidate in candidates:
        if candidate:
            language = candidate.replace("_", "-").split("-")[0].lower()
            if language in SHIPPED:
                return language
    return "en"


def accept_language(header: str | None) -> str | None:
    """The first language of an Accept-Language header, by weight."""
    if not header:
        return None
    ranked = []
    for part in header.split(","):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                weight = 0.0
        if tag:
            ranked.append((-weight, tag))
    ranked.sort()
    for _, tag in ranked:
        if pick_locale(tag) != "en" or tag.lower().startswith("en"):
            return tag
    return None


def text(locale: str, key: str, **values: str) -> str:
    """The text for `key` in `locale` (English when missing there), with values filled in."""
    template = _catalogue(locale).get(key) or _catalogue("en")[key]
    return template.format(**values)
