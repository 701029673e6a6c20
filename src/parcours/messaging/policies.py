"""Cross-journey policies applied at send time: consent, duplicates, quiet hours, caps.

Each check either lets a message go or holds it back with a reason and, when waiting can
help, the next moment it may go. Rules are data (rules/default_policies.toml, plus a
brand's own file); every matching rule must allow a message, so a brand's rules can only
tighten the shipped ones. Once the brand's owner saves quiet hours and caps in the
console (parcours.brand), those replace the files' until they are put back (`in_force`).
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
import phonenumbers
from sqlalchemy import Connection

from parcours import brand
from parcours.customers import PURPOSES, phone_country
from parcours.customers import profiles as customers
from parcours.messaging import outbox_rows
from parcours.messaging.templates import SENDABLE_CHANNELS
from parcours.runtime.clock import from_ms, to_ms
from parcours.runtime.definitions import parse_duration
from parcours.runtime.queue import lock_customers

DEFAULTS = Path(__file__).parent / "rules" / "default_policies.toml"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SECTIONS = ("quiet_hours", "caps", "duplicates")
# What a rule may name: "*" (everywhere) or a country a phone number can be from; the
# channels messages go by; the purposes of consent (transactional ones are never held).
COUNTRIES = frozenset(phonenumbers.SUPPORTED_REGIONS)
CHANNELS = SENDABLE_CHANNELS
log = logging.getLogger(__name__)


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and the rule, and
    `section`, `number` (from 1) and `field` say where, for a form to show it on its field
    (empty when the problem is about no one field)."""

    def __init__(self, message: str, section: str = "", number: int = 0, field: str = "") -> None:
        super().__init__(message)
        self.section = section
        self.number = number
        self.field = field


@dataclass(frozen=True)
class QuietHours:
    country: str
    channels: tuple[str, ...]
    purpose: str
    days: frozenset[int]
    start: time
    end: time
    public_holidays: bool


@dataclass(frozen=True)
class Cap:
    channel: str  # a channel, or "all"
    purpose: str
    count: int
    window_ms: int
    per: str  # rolling | local_day


DAY_MS = 24 * 3_600_000


@dataclass(frozen=True)
class Policies:
    quiet_hours: tuple[QuietHours, ...] = ()
    caps: tuple[Cap, ...] = ()
    duplicate_window_ms: int = 24 * 3_600_000
    timezone: str = "UTC"  # the brand's, for customers with no valid time zone of their own
    # Identity verification is set up: a customer the brand knows by a user id is pushed
    # only through Web Push subscriptions made with their verified user id
    # (docs/security.md, Web Push).
    verified_push_only: bool = False

    @property
    def look_back_ms(self) -> int:
        """How far back a check reads a customer's messages, at most (a local day's cap
        looks back to the customer's midnight: less than two days)."""
        windows = [cap.window_ms if cap.per != "local_day" else 2 * DAY_MS for cap in self.caps]
        return max([self.duplicate_window_ms, *windows])

    @classmethod
    def load(cls, brand_file: Path | None = None, timezone: str = "UTC") -> Policies:
        shipped = _read(DEFAULTS)
        if brand_file is None:
            return replace(shipped, timezone=timezone)
        brand = _read(brand_file)
        return cls(
            shipped.quiet_hours + brand.quiet_hours,
            shipped.caps + brand.caps,
            max(shipped.duplicate_window_ms, brand.duplicate_window_ms),  # longer is stricter
            timezone,
        )


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""
    retry_at: int | None = None  # the next moment worth trying again; None: never


@dataclass
class Message:
    customer_id: int
    channel: str
    purpose: str
    template: str
    profile: dict[str, Any] = field(default_factory=dict)
    # A fallback: the earlier attempts of the same message (keys starting with this) are
    # not "the same content on another channel" and do not count twice against the caps.
    attempts_of: str | None = None


def hold_sends(conn: Connection, customer_ids: Iterable[int]) -> None:
    """Hold these customers' locks (runtime/queue.py, "per-customer locks") until the
    transaction ends: the one lock under which a customer's runs and sends are decided. A
    worker's job holds its customer's from its claim, so this takes none there."""
    lock_customers(conn, customer_ids)


def read_ahead_sends(
    conn: Connection, policies: Policies, customer_ids: Iterable[int], now: int
) -> None:
    """Before a set of jobs that may send to these customers (their locks held): what
    `check` and the choice of channel read of each, read for all of them at once, five
    queries in all (contact points, consents, suppressions, recent messages, push
    subscriptions). Each job takes its customer's once; nothing when no set runs."""
    ids = sorted(set(customer_ids))
    customers.read_ahead_for_sends(conn, ids)
    look_back = in_force(conn, policies).look_back_ms
    outbox_rows.read_ahead_for_sends(conn, ids, now - look_back)


def check(
    conn: Connection, policies: Policies, message: Message, now: int, default_region: str
) -> Decision:
    """Whether this message may go now. Serialised per customer, so two sends racing for
    the last place under a cap cannot both go. `policies` are those in force: the caller
    lays the brand's rules saved in the console over the files' (`in_force`, `overlay`),
    once for all its candidate channels."""
    hold_sends(conn, [message.customer_id])
    decision = _consent(conn, policies, message, now)
    if not decision.allowed:
        return decision
    zone = _zone(message.profile, policies.timezone)
    caps = [] if message.purpose == "transactional" else _caps_for(policies, message, now, zone)
    # The customer's sends read once, as far back as the longest window looks.
    since = min([now - policies.duplicate_window_ms, *(since for _, since, _ in caps)])
    sent = _sent_since(conn, message, since)
    decision = _duplicate(policies, message, now, sent)
    if not decision.allowed or message.purpose == "transactional":
        return decision
    country = customer_country(message.profile, default_region)
    decision = _quiet_hours(policies, message, now, zone, country)
    if not decision.allowed:
        return decision
    return _caps(message, caps, sent)


@dataclass(frozen=True)
class _Sent:
    channel: str
    template: str
    purpose: str
    created_at: int


def _sent_since(conn: Connection, message: Message, since: int) -> list[_Sent]:
    """The customer's messages created after `since`, oldest first, leaving out the
    earlier attempts of this same message (a fallback is not a second message) and those
    cancelled before they were handed over (they never reached the customer)."""
    return [
        _Sent(row.channel, row.template, row.purpose, int(row.created_at))
        for row in outbox_rows.sent_since(conn, message.customer_id, since, message.attempts_of)
    ]


def _consent(conn: Connection, policies: Policies, message: Message, now: int) -> Decision:
    refused = consent_refusal(
        customers.current_consents(conn, message.customer_id), message.channel, message.purpose
    )
    return Decision(True) if refused is None else Decision(False, refused)


def consent_refusal(
    consents: list[customers.ConsentState], channel: str, purpose: str
) -> str | None:
    """Why the consents in force do not let a message of this purpose go on this channel
    (None: they do): marketing needs a grant; a withdrawal stops any purpose. Checked when
    a message is decided and again when delivery hands it over."""
    states = {(c.channel, c.purpose): c.status for c in consents}
    status = states.get((channel, purpose))
    if purpose == "marketing" and status != "granted":
        why = "withdrawn" if status == "withdrawn" else "never given"
        return f"no marketing consent for {channel} ({why})"
    if status == "withdrawn":
        return f"{channel} consent withdrawn"
    return None


def _duplicate(policies: Policies, message: Message, now: int, sent: list[_Sent]) -> Decision:
    since = now - policies.duplicate_window_ms
    for earlier in sent:
        if (
            earlier.created_at > since
            and earlier.template == message.template
            and earlier.channel != message.channel
            and earlier.purpose != "test"
        ):
            return Decision(
                False, f"the same content ({message.template}) already went by {earlier.channel}"
            )
    return Decision(True)


def _quiet_hours(
    policies: Policies, message: Message, now: int, zone: ZoneInfo, country: str | None
) -> Decision:
    rules = [
        r
        for r in policies.quiet_hours
        if message.channel in r.channels
        and r.purpose == message.purpose
        and (r.country == "*" or r.country == country)
    ]
    if not rules or all(_allowed_at(r, from_ms(now).astimezone(zone)) for r in rules):
        return Decision(True)
    moment = from_ms(now).astimezone(zone)
    for _ in range(24 * 60 // 15 * 15):  # look ahead up to 15 days, in quarter hours
        moment = _next_quarter(moment)
        if all(_allowed_at(r, moment) for r in rules):
            label = ", ".join(f"{r.country}:{r.start:%H:%M}-{r.end:%H:%M}" for r in rules)
            return Decision(False, f"quiet hours ({label}) in {zone.key}", to_ms(moment))
    return Decision(False, "quiet hours leave no moment in the next 15 days")


def _allowed_at(rule: QuietHours, local: datetime) -> bool:
    if local.weekday() not in rule.days:
        return False
    if not rule.public_holidays and rule.country != "*" and _is_holiday(rule.country, local.date()):
        return False
    return rule.start <= local.time().replace(tzinfo=None) < rule.end


def _next_quarter(moment: datetime) -> datetime:
    base = moment.replace(second=0, microsecond=0)
    return base + timedelta(minutes=15 - base.minute % 15)


@lru_cache(maxsize=64)
def _holidays(country: str, year: int) -> frozenset[date]:
    try:
        return frozenset(holidays.country_holidays(country, years=year))
    except NotImplementedError:
        return frozenset()


def _is_holiday(country: str, day: date) -> bool:
    return day in _holidays(country, day.year)


def _caps_for(
    policies: Policies, message: Message, now: int, zone: ZoneInfo
) -> list[tuple[Cap, int, int | None]]:
    """The caps this message falls under, each with the start of its window and, for a
    local day, the moment the next day begins."""
    found: list[tuple[Cap, int, int | None]] = []
    for cap in policies.caps:
        if cap.purpose != message.purpose or cap.channel not in ("all", message.channel):
            continue
        if cap.per == "local_day":
            local_midnight = (
                from_ms(now).astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
            )
            next_day = to_ms((local_midnight + timedelta(days=1)).replace(tzinfo=zone))
            found.append((cap, to_ms(local_midnight), next_day))
        else:
            found.append((cap, now - cap.window_ms, None))
    return found


def _caps(message: Message, caps: list[tuple[Cap, int, int | None]], sent: list[_Sent]) -> Decision:
    for cap, since, retry in caps:
        counted = [
            earlier.created_at
            for earlier in sent
            if earlier.created_at > since
            and earlier.purpose == message.purpose
            and cap.channel in ("all", earlier.channel)
        ]
        if len(counted) >= cap.count:
            if retry is None:
                retry = counted[len(counted) - cap.count] + cap.window_ms + 1
            scope = "all channels" if cap.channel == "all" else cap.channel
            period = "local day" if cap.per == "local_day" else f"{cap.window_ms // 3_600_000}h"
            return Decision(
                False,
                f"frequency cap: {cap.count} {message.purpose} message(s) per {period} on {scope}",
                retry,
            )
    return Decision(True)


def customer_country(profile: dict[str, Any], default_region: str) -> str | None:
    """The profile's country, else the country of their phone number, else the default."""
    country = profile.get("computed", {}).get("country")
    if isinstance(country, str) and len(country) == 2:
        return country.upper()
    for identity in profile.get("identities", []):
        if identity.get("kind") == "phone":
            region = phone_country(identity["value"])
            if region:
                return region
    return default_region.upper()


def _zone(profile: dict[str, Any], fallback: str = "UTC") -> ZoneInfo:
    """The customer's time zone; the brand's (`brand_timezone`) when none is valid."""
    for name in (profile.get("computed", {}).get("timezone"), fallback):
        if name:
            try:
                return ZoneInfo(str(name))
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def in_force(conn: Connection, policies: Policies) -> Policies:
    """`policies` as the brand's settings made in the console change them: their quiet
    hours, caps and duplicates' window in place of the files', their time zone for
    customers with none. Read through the brand's short cache (`brand.SEND_TIME_TTL_S`),
    so a change reaches every process's workers within seconds."""
    return overlay(policies, brand.send_time(conn))


def overlay(policies: Policies, stored: brand.SendTime | None) -> Policies:
    """`policies` with the brand's send-time settings `stored` laid over them."""
    if stored is None or (stored.send_rules is None and stored.timezone is None):
        return policies
    return _overlaid(policies, stored.send_rules, stored.timezone)


@lru_cache(maxsize=32)
def _overlaid(policies: Policies, rules: str | None, timezone: str | None) -> Policies:
    result = policies
    if rules is not None:
        try:
            parsed = rules_from_text(rules)
        except PolicyError as exc:  # checked before it was saved: never expected
            log.error("the send rules saved in the console are ignored: %s", exc)
        else:
            result = replace(
                result,
                quiet_hours=parsed.quiet_hours,
                caps=parsed.caps,
                duplicate_window_ms=parsed.duplicate_window_ms,
            )
    if timezone:
        result = replace(result, timezone=timezone)
    return result


def rules_from_text(text: str, where: str = "rules") -> Policies:
    """Quiet hours, caps and the duplicates' window written as in a policies file (TOML);
    PolicyError names the rule and what is wrong with it."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{where}: {exc}") from None
    return rules_from_document(document, where)


def rules_from_document(document: dict[str, Any], where: str = "rules") -> Policies:
    """The rules of a policies file as TOML reads it (sections of tables, lists and
    strings), checked as the file is: a form builds this document, so its rules meet the
    same checks as the text's."""
    unknown = sorted(set(document) - set(SECTIONS))
    if unknown:
        raise PolicyError(f"{where}: unknown section {unknown[0]!r} (known: {', '.join(SECTIONS)})")
    try:
        return _from_document(where, document)
    except (TypeError, AttributeError):
        raise PolicyError(
            f"{where}: write each rule as a table of its list ([[quiet_hours]], [[caps]]), "
            "with channels and days as lists of words"
        ) from None


def as_text(policies: Policies) -> str:
    """`policies`' quiet hours, caps and duplicates' window, written as a policies file."""
    lines: list[str] = []
    for rule in policies.quiet_hours:
        days = ", ".join(f'"{WEEKDAYS[day]}"' for day in sorted(rule.days))
        channels = ", ".join(f'"{channel}"' for channel in rule.channels)
        lines += [
            "[[quiet_hours]]",
            f'country = "{rule.country}"',
            f"channels = [{channels}]",
            f'purpose = "{rule.purpose}"',
            f"days = [{days}]",
            f'from = "{rule.start:%H:%M}"',
            f'until = "{rule.end:%H:%M}"',
            f"public_holidays = {'true' if rule.public_holidays else 'false'}",
            "",
        ]
    for cap in policies.caps:
        lines += [
            "[[caps]]",
            f'channel = "{cap.channel}"',
            f'purpose = "{cap.purpose}"',
            f"count = {cap.count}",
            f'window = "{_duration(cap.window_ms)}"',
            f'per = "{cap.per}"',
            "",
        ]
    lines += ["[duplicates]", f'window = "{_duration(policies.duplicate_window_ms)}"', ""]
    return "\n".join(lines)


def _duration(ms: int) -> str:
    seconds = ms // 1000
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _read(path: Path) -> Policies:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{path}: {exc}") from None
    return _from_document(str(path), document)


def _from_document(path: str, document: dict[str, Any]) -> Policies:
    quiet = tuple(
        _quiet(path, number, rule) for number, rule in enumerate(document.get("quiet_hours", []), 1)
    )
    caps = tuple(
        _cap(path, number, rule) for number, rule in enumerate(document.get("caps", []), 1)
    )
    window = document.get("duplicates", {}).get("window", "24h")
    try:
        window_ms = parse_duration(window).seconds * 1000
    except ValueError as exc:
        raise PolicyError(f"{path}: duplicates: {exc}", "duplicates", 0, "window") from None
    return Policies(quiet, caps, window_ms)


def _words(rule: dict[str, Any], name: str, known: tuple[str, ...]) -> tuple[str, ...]:
    """A rule's list of words (`days`, `channels`), each one of `known`."""
    if not isinstance(rule[name], list) or not rule[name]:
        raise ValueError(f"{name} must be a list, such as {name} = [...]")
    wrong = [x for x in rule[name] if not isinstance(x, str) or x not in known]
    if wrong:
        raise ValueError(f"{name}: {wrong[0]!r} is not one of {', '.join(known)}")
    return tuple(rule[name])


def _one_of(value: Any, name: str, known: Collection[str]) -> str:
    if value not in known:
        raise ValueError(f"{name}: {value!r} is not one of {', '.join(sorted(known))}")
    return str(value)


def _quiet(path: str, number: int, rule: dict[str, Any]) -> QuietHours:
    where = f"{path}: quiet_hours rule {number}"
    field = ""  # the one being read, for the error
    try:
        field = "days"
        days = frozenset(WEEKDAYS.index(day) for day in _words(rule, field, WEEKDAYS))
        field = "channels"
        channels = _words(rule, field, CHANNELS)
        field = "country"
        country = str(rule[field]).upper()
        if country != "*" and country not in COUNTRIES:
            raise ValueError(f"country: {country!r} is neither * nor a two-letter country code")
        field = "purpose"
        purpose = _one_of(rule[field], field, PURPOSES)
        field = "from"
        start = time.fromisoformat(rule[field])
        field = "until"
        end = time.fromisoformat(rule[field])
        if end <= start:
            raise ValueError(f"until ({end:%H:%M}) must come after from ({start:%H:%M})")
        field = "public_holidays"
        return QuietHours(country, channels, purpose, days, start, end, bool(rule.get(field, True)))
    except KeyError as exc:
        raise PolicyError(
            f"{where}: missing {exc.args[0]}", "quiet_hours", number, str(exc.args[0])
        ) from None
    except ValueError as exc:
        raise PolicyError(f"{where}: {exc}", "quiet_hours", number, field) from None


def _cap(path: str, number: int, rule: dict[str, Any]) -> Cap:
    where = f"{path}: caps rule {number}"
    field = ""
    try:
        field = "channel"
        channel = _one_of(rule[field], field, ("all", *CHANNELS))
        field = "purpose"
        purpose = _one_of(rule[field], field, PURPOSES)
        field = "count"
        count = int(rule[field])
        if count < 1:
            raise ValueError(f"count must be 1 or more, got {count}")
        field = "per"
        per = rule.get(field, "rolling")
        if per not in ("rolling", "local_day"):
            raise ValueError(f"per must be rolling or local_day, got {per!r}")
        field = "window"
        window = parse_duration(rule.get(field, "1d")).seconds * 1000
        if window <= 0:
            raise ValueError("window must be a duration such as 1d")
        return Cap(channel, purpose, count, window, per)
    except KeyError as exc:
        raise PolicyError(
            f"{where}: missing {exc.args[0]}", "caps", number, str(exc.args[0])
        ) from None
    except ValueError as exc:
        raise PolicyError(f"{where}: {exc}", "caps", number, field) from None
