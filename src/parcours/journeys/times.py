"""Moments a journey waits for: durations after a moment, a time of day in the customer's
time zone, the date a trait holds. Pure functions of a profile, a spec and a moment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from parcours.journeys.definition import Duration, WaitUntil, parse_duration
from parcours.runtime.clock import from_ms, to_ms

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def after(base: int, duration: Duration) -> int:
    """`base` (ms) plus the duration: calendar months first, then seconds."""
    moment = from_ms(base)
    if duration.months:
        moment = _add_months(moment, duration.months)
    return to_ms(moment) + duration.seconds * 1000


def _add_months(moment: datetime, months: int) -> datetime:
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    for day in range(moment.day, 27, -1):
        try:
            return moment.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    return moment.replace(year=year, month=month, day=min(moment.day, 28))


def window_ms(window: str) -> int:
    """A goal's window as milliseconds, a month counted as 31 days (an upper bound)."""
    duration = parse_duration(window)
    return duration.seconds * 1000 + duration.months * 31 * 86_400_000


def zone_of(profile: dict[str, Any], fallback: str = "UTC") -> tuple[ZoneInfo, str]:
    """The customer's time zone and where it comes from; the brand's time zone (setting
    `brand_timezone`) for a customer with none, or with one that is not a valid IANA name."""
    computed = profile.get("computed", {})
    name = computed.get("timezone")
    if name:
        try:
            zone = ZoneInfo(str(name))
        except (ZoneInfoNotFoundError, ValueError):
            why = f"the customer's time zone {name!r} is not valid"
        else:
            source = computed.get("timezone_source")
            return zone, (
                "the customer's, from their country"
                if source == "country"
                else "the customer's, from their device"
            )
    else:
        why = "no time zone is known for the customer"
    try:
        return ZoneInfo(fallback), f"{why}: the brand's"
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC"), f"{why}: UTC"


def customer_zone(profile: dict[str, Any], fallback: str = "UTC") -> ZoneInfo:
    return zone_of(profile, fallback)[0]


def zone_details(profile: dict[str, Any], fallback: str) -> dict[str, str]:
    """What a local-time wait's trace says of the time zone it used, and why."""
    zone, why = zone_of(profile, fallback)
    return {"time_zone": zone.key, "time_zone_reason": why}


def next_local_time(
    base: int, spec: WaitUntil, profile: dict[str, Any], fallback: str = "UTC"
) -> int:
    """The first moment at or after `base` that is `spec.time` on an allowed weekday, in the
    customer's time zone. A local time that does not exist that day (spring forward) moves
    forward by the gap; an ambiguous one (fall back) takes its first occurrence."""
    assert spec.time is not None
    zone = customer_zone(profile, fallback)
    hour, minute = (int(part) for part in spec.time.split(":"))
    allowed = {WEEKDAYS.index(day) for day in spec.weekdays} or set(range(7))
    local = from_ms(base).astimezone(zone)
    for offset in range(0, 15):
        day = (local + timedelta(days=offset)).date()
        if day.weekday() not in allowed:
            continue
        wall = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone, fold=0)
        moment = _resolve_wall_time(wall)
        if to_ms(moment) >= base:
            return to_ms(moment)
    raise AssertionError("no allowed weekday within two weeks")


def _resolve_wall_time(wall: datetime) -> datetime:
    """A wall-clock time made real. With fold=0 (PEP 495), a time skipped by a spring-
    forward change maps to the offset before it, i.e. forward by the gap (02:30 -> 03:30),
    and an ambiguous time at fall-back is its first occurrence."""
    return wall.replace(fold=0).astimezone(UTC)


def trait_moment(
    profile: dict[str, Any], spec: WaitUntil, now: int, fallback: str = "UTC"
) -> tuple[int | None, str]:
    """The moment a date trait points at, plus the offset; (None, why) when there is none.

    A date without a time is that day in the customer's time zone, at `at` (default
    00:00). With `yearly`, the next anniversary at or after now; 29 February falls on
    28 February in other years."""
    assert spec.trait is not None
    value = profile.get("traits", {}).get(spec.trait)
    if value is None or value == "":
        return None, f"{spec.trait} is missing"
    zone = customer_zone(profile, fallback)
    offset = parse_duration(spec.offset, signed=True) if spec.offset else Duration(0)
    try:
        moment = _trait_datetime(str(value), zone, spec.at)
    except ValueError:
        return None, f"{spec.trait} is not a date: {value!r}"
    if spec.yearly:
        year = from_ms(now).astimezone(zone).year
        for candidate in (year - 1, year, year + 1):
            due = after(to_ms(_same_day_in(moment, candidate)), offset)
            if due >= now:
                return due, ""
        return None, f"{spec.trait} has no coming anniversary"
    return after(to_ms(moment), offset), ""


def _trait_datetime(value: str, zone: ZoneInfo, at: str | None) -> datetime:
    text_value = value.strip()
    if len(text_value) == 10:  # a date: that day, in the customer's time zone
        day = datetime.fromisoformat(text_value)
        hour, minute = (int(part) for part in (at or "00:00").split(":"))
        # Local wall time (fold=0: a skipped time moves forward, as for time-of-day waits).
        return day.replace(hour=hour, minute=minute, tzinfo=zone)
    moment = datetime.fromisoformat(text_value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def _same_day_in(moment: datetime, year: int) -> datetime:
    try:
        return moment.replace(year=year)
    except ValueError:  # 29 February in a year without one
        return moment.replace(year=year, day=28)
