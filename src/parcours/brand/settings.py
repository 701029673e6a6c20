"""The brand as its owner sets it in the console, layered over the configuration file's
values: its name, colours, sector, the languages offered to customers, its time zone, and
the send-time rules (quiet hours, frequency caps) that replace the policies file's.

Each save writes the whole stored document again, counts its version up and calls `also`
in the same transaction (the console's audit entry). Workers read the send-time part
through `send_time`, cached for `SEND_TIME_TTL_S` seconds per database: a change made in
another process is in force everywhere within that time, without a restart."""

from __future__ import annotations

import json
import re
import threading
import time
import weakref
from collections.abc import Callable, Collection
from dataclasses import dataclass, fields
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, Engine, insert, select, update

from parcours.brand.tables import brand_logo, brand_settings
from parcours.runtime.db import Database
from parcours.runtime.documents import JsonObject
from parcours.runtime.i18n import SHIPPED
from parcours.runtime.settings import MAX_REVIEW_AFTER_DAYS

ROW = 1
COLOUR = re.compile(r"^#[0-9a-f]{6}$")
DEFAULT_PRIMARY = "#1f56c9"  # the console's own blue
DEFAULT_ACCENT = "#146c2e"
# Buttons carry white text on the brand's colours, and links are drawn in them on white
# and on the console's grey page (WCAG 2.1 AA, normal text).
MIN_CONTRAST = 4.5
BACKGROUNDS = ("#ffffff", "#f4f6f9")
LONGEST_NAME = 100
LONGEST_RULES = 20_000
SEND_TIME_TTL_S = 2.0


class BrandError(ValueError):
    """A value the brand's settings refuse: `key` names the problem in the catalogue
    (`runtime.i18n`), `values` fill it in."""

    def __init__(self, key: str, **values: str) -> None:
        super().__init__(key)
        self.key = key
        self.values = values


@dataclass(frozen=True)
class Defaults:
    """What the configuration file says (settings `brand_name`, `sector`, `brand_timezone`,
    `brand_locale`): what the console's settings are layered over."""

    name: str
    sector: str = ""
    timezone: str = "UTC"
    locale: str = "en"
    review_after_days: int = 0  # 0: the sector's custom (setting `review_after_days`)


@dataclass(frozen=True)
class Logo:
    digest: str  # SHA-256 of its bytes, hex: its address changes with it
    media_type: str


@dataclass(frozen=True)
class LogoFile:
    media_type: str
    content: bytes


@dataclass(frozen=True)
class BrandSettings:
    """The brand as it is in force: each value the console's when it set one, else the
    configuration's. `send_rules` is None while the policies file's rules are in force."""

    name: str
    primary: str
    accent: str
    sector: str
    languages: tuple[str, ...]
    timezone: str
    locale: str  # the brand's own language: the first offered, the configured one if offered
    send_rules: str | None = None
    version: int = 0  # 0: nothing saved in the console yet
    logo: Logo | None = None
    stored: frozenset[str] = frozenset()  # which values are the console's
    # Days after delivery before a review is asked for; 0: the sector's custom.
    review_after_days: int = 0

    def audited(self) -> JsonObject:
        """What the audit log keeps of these settings."""
        return {
            "name": self.name,
            "primary": self.primary,
            "accent": self.accent,
            "sector": self.sector,
            "languages": list(self.languages),
            "timezone": self.timezone,
            "send_rules": self.send_rules,
            "review_after_days": self.review_after_days,
        }


@dataclass(frozen=True)
class Changes:
    """What a save changes; None leaves a value as it is."""

    name: str | None = None
    primary: str | None = None
    accent: str | None = None
    sector: str | None = None
    languages: tuple[str, ...] | None = None
    timezone: str | None = None
    send_rules: str | None = None
    review_after_days: int | None = None


STORED_FIELDS = tuple(f.name for f in fields(Changes))


@dataclass(frozen=True)
class SendTime:
    """What sending reads of the brand's settings: the policies (messaging/policies.py),
    the channel choice (its sector), the templates (its name)."""

    version: int
    send_rules: str | None
    timezone: str | None
    sector: str | None
    name: str | None = None
    review_after_days: int | None = None  # None: the configuration's


def current(conn: Connection, defaults: Defaults) -> BrandSettings:
    """The brand's settings in force."""
    row = conn.execute(
        select(brand_settings.c.version, brand_settings.c.document).where(
            brand_settings.c.id == ROW
        )
    ).first()
    stored: dict[str, object] = json.loads(row.document) if row else {}
    logo = conn.execute(
        select(brand_logo.c.digest, brand_logo.c.media_type).where(brand_logo.c.id == ROW)
    ).first()
    return _layered(
        defaults,
        stored,
        int(row.version) if row else 0,
        Logo(logo.digest, logo.media_type) if logo else None,
    )


def _layered(
    defaults: Defaults, stored: dict[str, object], version: int, logo: Logo | None
) -> BrandSettings:
    offered = stored.get("languages")
    languages = tuple(str(x) for x in offered) if isinstance(offered, list) and offered else SHIPPED
    return BrandSettings(
        name=str(stored.get("name") or defaults.name),
        primary=str(stored.get("primary") or DEFAULT_PRIMARY),
        accent=str(stored.get("accent") or DEFAULT_ACCENT),
        sector=str(stored["sector"]) if "sector" in stored else defaults.sector,
        languages=languages,
        timezone=str(stored.get("timezone") or defaults.timezone),
        locale=defaults.locale if defaults.locale in languages else languages[0],
        send_rules=str(stored["send_rules"]) if stored.get("send_rules") else None,
        version=version,
        logo=logo,
        stored=frozenset(name for name in STORED_FIELDS if stored.get(name) is not None),
        review_after_days=_days(stored.get("review_after_days"), defaults.review_after_days),
    )


def _days(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def check(changes: Changes, *, sectors: Collection[str] = ()) -> None:
    """Raise BrandError on the first value that cannot be saved."""
    if changes.name is not None:
        name = " ".join(changes.name.split())
        if not name:
            raise BrandError("settings.name_required")
        if len(name) > LONGEST_NAME:
            raise BrandError("settings.name_long", length=str(LONGEST_NAME))
    for field_name in ("primary", "accent"):
        value = getattr(changes, field_name)
        if value is not None:
            check_colour(field_name, value)
    if changes.sector is not None and changes.sector and changes.sector not in sectors:
        raise BrandError("settings.sector_unknown", sector=changes.sector)
    if changes.languages is not None:
        if not changes.languages:
            raise BrandError("settings.languages_none")
        unknown = [x for x in changes.languages if x not in SHIPPED]
        if unknown:
            raise BrandError("settings.language_unknown", language=unknown[0])
    if changes.timezone is not None and not is_zone(changes.timezone):
        raise BrandError("settings.timezone_unknown", zone=changes.timezone)
    if changes.send_rules is not None and len(changes.send_rules) > LONGEST_RULES:
        raise BrandError("settings.rules_long", length=str(LONGEST_RULES))
    days = changes.review_after_days
    if days is not None and not 0 <= days <= MAX_REVIEW_AFTER_DAYS:
        raise BrandError("settings.review_days", most=str(MAX_REVIEW_AFTER_DAYS))


def check_colour(field_name: str, value: str) -> None:
    """A colour written #rrggbb that white text on it, and it as text on the pages'
    backgrounds, can be read (contrast of at least 4.5:1)."""
    if not COLOUR.match(value.lower()):
        raise BrandError("settings.colour_invalid", field=field_name, value=value)
    worst = min(contrast(value, background) for background in BACKGROUNDS)
    if worst < MIN_CONTRAST:
        raise BrandError(
            "settings.colour_contrast",
            field=field_name,
            value=value,
            ratio=f"{worst:.1f}",
            needed=f"{MIN_CONTRAST}",
        )


def contrast(first: str, second: str) -> float:
    """The contrast ratio of two #rrggbb colours (WCAG 2.1: relative luminance)."""
    lighter, darker = sorted((_luminance(first), _luminance(second)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def _luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return bool(name)


def save(
    db: Database,
    defaults: Defaults,
    changes: Changes,
    now: int,
    *,
    by: str | None = None,
    reset: Collection[str] = (),
    sectors: Collection[str] = (),
    also: Callable[[Connection, BrandSettings, BrandSettings], None] | None = None,
) -> BrandSettings:
    """Save `changes` (checked first: BrandError) and put back the configuration's value
    of each field named in `reset`; `also(conn, before, after)` runs in the same
    transaction. Returns the settings now in force."""
    check(changes, sectors=sectors)
    unknown = set(reset) - set(STORED_FIELDS)
    if unknown:
        raise ValueError(f"cannot reset {sorted(unknown)}")
    with db.write() as conn:
        row = conn.execute(  # two owners saving at once: one after the other
            select(brand_settings.c.version, brand_settings.c.document)
            .where(brand_settings.c.id == ROW)
            .with_for_update()
        ).first()
        before = current(conn, defaults)
        document: dict[str, object] = json.loads(row.document) if row else {}
        for name in STORED_FIELDS:
            value = getattr(changes, name)
            if value is None:
                continue
            if name == "name":
                value = " ".join(str(value).split())
            elif name in ("primary", "accent"):
                value = str(value).lower()
            elif name == "languages":
                value = [x for x in SHIPPED if x in value]  # one order, no repeats
            document[name] = value
        for name in reset:
            document.pop(name, None)
        version = (int(row.version) if row else 0) + 1
        values = {
            "version": version,
            "document": json.dumps(document, sort_keys=True),
            "updated_at": now,
            "updated_by": by,
        }
        if row is None:
            conn.execute(insert(brand_settings).values(id=ROW, **values))
        else:
            conn.execute(update(brand_settings).where(brand_settings.c.id == ROW).values(**values))
        after = current(conn, defaults)
        if also is not None:
            also(conn, before, after)
    forget(db)
    return after


# ---- what the send-time policies read, cached briefly ------------------------------------

_cache: weakref.WeakKeyDictionary[Engine, tuple[float, SendTime | None]] = (
    weakref.WeakKeyDictionary()
)
_cache_lock = threading.Lock()


def send_time(conn: Connection) -> SendTime | None:
    """The send-time part of the brand's settings (None: nothing saved in the console),
    read at most every `SEND_TIME_TTL_S` seconds per database by this process."""
    engine = conn.engine
    with _cache_lock:
        cached = _cache.get(engine)
    if cached is not None and time.monotonic() < cached[0]:
        return cached[1]
    row = conn.execute(
        select(brand_settings.c.version, brand_settings.c.document).where(
            brand_settings.c.id == ROW
        )
    ).first()
    found: SendTime | None = None
    if row is not None:
        document = json.loads(row.document)
        found = SendTime(
            int(row.version),
            document.get("send_rules") or None,
            document.get("timezone") or None,
            document.get("sector"),
            document.get("name") or None,
            document.get("review_after_days"),
        )
    with _cache_lock:
        _cache[engine] = (time.monotonic() + SEND_TIME_TTL_S, found)
    return found


def forget(db: Database) -> None:
    """Drop this process's cached copy (after a save here: in force at once)."""
    with _cache_lock:
        _cache.pop(db.engine, None)
