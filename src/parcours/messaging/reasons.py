"""Why a message was held, cancelled or given up, told by its code: the reasons are English
text in the log, the outbox and the API (what the policies, channel choice, the send
checks and the fallback write; and the journeys' own: why a trigger entered nobody, a run
ended or a wait was skipped, whose time zone a wait used); `explain` reads one back into
codes and values, so that the console can say it in the viewer's language (a text per
code). A text it does not know (a provider's own words) is given back as it is, without
a code."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# The channels a combined reason names ("email: ...; sms: ..."): choice.Plan.reason.
_CHANNELS = ("email", "sms", "whatsapp", "push", "wallet", "chat")


@dataclass(frozen=True)
class Reason:
    """One reason: its code (None: not one Parcours writes) and the values it names; for
    a reason of a channel passed over among several, that channel."""

    text: str
    code: str | None = None
    values: dict[str, str] = field(default_factory=dict)
    channel: str | None = None


# Each text Parcours writes, as a pattern, with its code. Kept beside the places that write
# them by tests/test_console_support.py, which has each of them written and read back.
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (code, re.compile(pattern))
    for code, pattern in (
        # messaging/policies.py
        ("consent_marketing_withdrawn", r"no marketing consent for (?P<channel>\w+) \(withdrawn\)"),
        ("consent_marketing_missing", r"no marketing consent for (?P<channel>\w+) \(never given\)"),
        ("consent_withdrawn", r"(?P<channel>\w+) consent withdrawn"),
        ("duplicate", r"the same content \((?P<template>.+)\) already went by (?P<channel>\w+)"),
        ("quiet_hours", r"quiet hours \((?P<rules>.+)\) in (?P<zone>\S+)"),
        ("quiet_hours_always", r"quiet hours leave no moment in the next 15 days"),
        (
            "frequency_cap_day",
            r"frequency cap: (?P<count>\d+) (?P<purpose>\w+) message\(s\) per local day "
            r"on (?P<scope>.+)",
        ),
        (
            "frequency_cap_hours",
            r"frequency cap: (?P<count>\d+) (?P<purpose>\w+) message\(s\) per (?P<hours>\d+)h "
            r"on (?P<scope>.+)",
        ),
        # messaging/choice.py
        ("unreachable_email", r"no email address \(or it bounced\)"),
        ("unreachable_phone", r"no phone number \(or it is invalid\)"),
        ("unreachable_push", r"no push subscription"),
        ("unreachable_wallet", r"no Wallet pass installed"),
        ("unreachable_chat", r"the site chat was not open in the last 24 hours"),
        (
            "whatsapp_window",
            r"outside the 24-hour WhatsApp window, and the template has no approved WhatsApp "
            r"template",
        ),
        ("no_content", r"the template has no content"),
        # journeys/runs.py, through the send checks (messaging/send_checks.py)
        ("goal_reached_late", r"goal reached: (?P<event>.+) \(after its window\)"),
        ("goal_reached", r"goal reached: (?P<event>.+)"),
        ("exit_condition", r"exit condition: (?P<event>.+)"),
        # messaging/fallback.py and outcomes.py
        ("not_within", r"not (?P<status>\w+) within (?P<after>.+)"),
        ("gave_up", r"gave up after (?P<attempts>\d+) attempts: (?P<reason>.+)"),
        # journeys/entries.py: why a trigger entered nobody
        ("trigger_too_old", r"trigger too old"),
        ("journey_paused", r"journey paused"),
        ("active_run", r"active run exists"),
        ("already_entered", r"already entered"),
        ("reentry_too_soon", r"re-entry too soon"),
        ("no_entry_key", r"no (?P<key>properties\.\S+|event\.\S+|context\.\S+|traits\.\S+)"),
        # journeys/program.py and interpreter.py: why a run ended, or a wait was skipped
        ("completed", r"completed"),
        ("holdout", r"holdout \(control group\)"),
        ("archived", r"journey stopped \(archived\)"),
        ("exit_step", r"exit step"),
        ("arm_ended", r"(?P<step>\S+) ended the run"),
        ("at_step", r"step (?P<step>[^\s:]+): (?P<reason>.+)"),
        ("date_passed", r"the date in (?P<trait>\S+) has passed"),
        ("date_missing", r"(?P<trait>\S+) is missing"),
        ("date_unreadable", r"(?P<trait>\S+) is not a date: (?P<value>.+)"),
        ("date_no_anniversary", r"(?P<trait>\S+) has no coming anniversary"),
        # journeys/times.py: whose time zone a local-time wait used, and why
        ("zone_country", r"the customer's, from their country"),
        ("zone_device", r"the customer's, from their device"),
        ("zone_unknown", r"no time zone is known for the customer: (?P<fallback>the brand's|UTC)"),
        (
            "zone_invalid",
            r"the customer's time zone (?P<zone>.+) is not valid: (?P<fallback>the brand's|UTC)",
        ),
    )
)


def explain(text: str | None) -> list[Reason]:
    """The reasons in `text`: one, or one per channel passed over (`email: ...; sms:
    ...`); nothing for no text."""
    if not text:
        return []
    parts = text.split("; ")
    by_channel = [part.partition(": ") for part in parts]
    if len(parts) > 1 and all(sep and channel in _CHANNELS for channel, sep, _ in by_channel):
        return [_one(rest, channel) for channel, _, rest in by_channel]
    return [_one(text, None)]


def _one(text: str, channel: str | None) -> Reason:
    for code, pattern in _PATTERNS:
        found = pattern.fullmatch(text)
        if found is not None:
            values = {name: value for name, value in found.groupdict().items() if value}
            return Reason(text, code, values, channel)
    return Reason(text, None, {}, channel)


__all__ = ["Reason", "explain"]
