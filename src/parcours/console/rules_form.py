"""Quiet hours and frequency caps as a form on the Settings page: a group of fields per
rule. The form and the text are two ways of writing the same rules: `document` turns the
form into the document a policies file holds, which `policies.rules_from_document`
checks as it checks the text; `from_policies` lays the rules in force out as the form;
`place` puts a problem the check found on the field it is about."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from parcours.messaging import Policies, policies

WEEKDAYS = policies.WEEKDAYS
MAX_RULES = 50
PERIODS = ("local_day", "rolling")
HOUR_MS = 3_600_000
_WHOLE = re.compile(r"^\d{1,6}$")
# The sections of the document, as the form's fields name them.
_SECTIONS = {"quiet_hours": "quiet", "caps": "cap", "duplicates": "duplicates"}
# A rule's fields as the form's ids end, where they differ from the document's names.
_FIELD_IDS = {
    "channels": f"channel-{policies.CHANNELS[0]}",
    "days": f"day-{WEEKDAYS[0]}",
    "public_holidays": "holidays",
    "window": "hours",
}


@dataclass
class QuietRow:
    """One quiet-hours rule as the form shows it: the hours when messages may go."""

    country: str = "*"
    channels: tuple[str, ...] = ()
    purpose: str = "marketing"
    days: tuple[str, ...] = WEEKDAYS
    start: str = "08:00"
    end: str = "20:00"
    holidays: bool = True  # allowed on public holidays


@dataclass
class CapRow:
    """One frequency cap as the form shows it; `hours` is the window of a rolling one."""

    channel: str = "all"
    purpose: str = "marketing"
    count: str = ""
    per: str = "local_day"
    hours: str = ""


@dataclass
class RulesForm:
    quiet: list[QuietRow] = field(default_factory=list)
    caps: list[CapRow] = field(default_factory=list)
    duplicates_hours: str = "24"
    draft: bool = False  # a rule added or removed, not saved yet
    focus: str = ""  # the id of the field to put the focus on, after a rule added
    # The fields with a problem: ("quiet", 0, "until"), ("duplicates", 0, "window").
    errors: set[tuple[str, int, str]] = field(default_factory=set)
    problem: str = ""  # a problem about no field of the form, in the check's words

    def error(self, section: str, index: int, name: str) -> bool:
        return (section, index, name) in self.errors

    def place(self, exc: policies.PolicyError) -> None:
        """Put the check's problem on its field (the page says it in the viewer's words,
        `console.settings.problem.<section>.<field>`), else keep the check's words."""
        section = _SECTIONS.get(exc.section, "")
        if not (section and exc.field):
            self.problem = str(exc)
            return
        index = max(exc.number - 1, 0)
        self.errors.add((section, index, exc.field))
        if section == "duplicates":
            self.focus = "f-duplicates-hours"
        else:  # the field, or the first box of a group
            self.focus = f"f-{section}-{index}-{_FIELD_IDS.get(exc.field, exc.field)}"

    @property
    def has_errors(self) -> bool:
        return bool(self.errors or self.problem)


def from_policies(rules: Policies) -> RulesForm:
    """The form for the rules in force."""
    return RulesForm(
        quiet=[
            QuietRow(
                country=rule.country,
                channels=rule.channels,
                purpose=rule.purpose,
                days=tuple(WEEKDAYS[day] for day in sorted(rule.days)),
                start=f"{rule.start:%H:%M}",
                end=f"{rule.end:%H:%M}",
                holidays=rule.public_holidays,
            )
            for rule in rules.quiet_hours
        ],
        caps=[
            CapRow(
                channel=cap.channel,
                purpose=cap.purpose,
                count=str(cap.count),
                per=cap.per,
                hours=_hours(cap.window_ms) if cap.per == "rolling" else "",
            )
            for cap in rules.caps
        ],
        duplicates_hours=_hours(rules.duplicate_window_ms),
    )


def _hours(ms: int) -> str:
    return f"{ms / HOUR_MS:g}"


def from_form(data: dict[str, str]) -> RulesForm:
    """The form as it was posted, with its `action` applied: `add-quiet`, `add-cap`,
    `remove-quiet-N`, `remove-cap-N` (N from 0)."""
    quiet = [
        QuietRow(
            country=data.get(f"quiet-{n}-country", "").strip(),
            channels=tuple(c for c in policies.CHANNELS if data.get(f"quiet-{n}-channel-{c}")),
            purpose=data.get(f"quiet-{n}-purpose", ""),
            days=tuple(d for d in WEEKDAYS if data.get(f"quiet-{n}-day-{d}")),
            start=data.get(f"quiet-{n}-from", "").strip(),
            end=data.get(f"quiet-{n}-until", "").strip(),
            holidays=data.get(f"quiet-{n}-holidays") != "quiet",
        )
        for n in range(_count(data, "quiet"))
    ]
    caps = [
        CapRow(
            channel=data.get(f"cap-{n}-channel", ""),
            purpose=data.get(f"cap-{n}-purpose", ""),
            count=data.get(f"cap-{n}-count", "").strip(),
            per=data.get(f"cap-{n}-per", ""),
            hours=data.get(f"cap-{n}-hours", "").strip(),
        )
        for n in range(_count(data, "cap"))
    ]
    form = RulesForm(quiet, caps, data.get("duplicates-hours", "").strip())
    action = data.get("action", "")
    form.draft = bool(action)
    if action == "add-quiet" and len(quiet) < MAX_RULES:
        quiet.append(QuietRow())
        form.focus = f"f-quiet-{len(quiet) - 1}-country"
    elif action == "add-cap" and len(caps) < MAX_RULES:
        caps.append(CapRow())
        form.focus = f"f-cap-{len(caps) - 1}-channel"
    for name, rows in (("quiet", quiet), ("cap", caps)):
        index = action.removeprefix(f"remove-{name}-")
        if index != action and index.isdigit() and int(index) < len(rows):
            del rows[int(index)]
            form.focus = f"add-{name}"
    return form


def _count(data: dict[str, str], name: str) -> int:
    given = data.get(f"{name}-rules", "0")
    return min(int(given), MAX_RULES) if _WHOLE.match(given) else 0


def document(form: RulesForm) -> dict[str, Any]:
    """What the form says, as a policies file holds it (TOML read): the values as typed,
    for `policies.rules_from_document` to check."""
    return {
        "quiet_hours": [
            {
                "country": row.country,
                "channels": list(row.channels),
                "purpose": row.purpose,
                "days": list(row.days),
                "from": row.start,
                "until": row.end,
                "public_holidays": row.holidays,
            }
            for row in form.quiet
        ],
        "caps": [_cap(row) for row in form.caps],
        "duplicates": {"window": f"{form.duplicates_hours}h"},
    }


def _cap(row: CapRow) -> dict[str, Any]:
    cap: dict[str, Any] = {
        "channel": row.channel,
        "purpose": row.purpose,
        "count": int(row.count) if _WHOLE.match(row.count) else row.count,
        "per": row.per,
    }
    if row.per == "rolling":
        cap["window"] = f"{row.hours}h"
    return cap
