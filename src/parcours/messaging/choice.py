"""Which channel a message goes on: the named one and its fallbacks in order, or the best
one for this customer; the first that can reach them and that the policies allow now.
Every channel passed over is recorded with its reason (docs/channels.md)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Connection

from parcours import brand
from parcours.customers import profiles as customers
from parcours.messaging import outbox_rows, passes, policies, subscriptions
from parcours.messaging.templates import SENDABLE_CHANNELS, MessageTemplate

ENGAGEMENT_WINDOW_MS = 90 * 86_400_000
WHATSAPP_WINDOW_MS = 24 * 3_600_000
CHAT_OPEN_MS = 24 * 3_600_000  # the site chat reaches a customer whose widget opened today
# How much each channel costs to send, as a score penalty (email and push nearly free).
COST = {"email": 0, "push": 0, "wallet": 0, "chat": 0, "whatsapp": 4, "sms": 6}
# Where each channel starts before the customer's own signals.
BASE = {"email": 10, "push": 8, "whatsapp": 6, "sms": 4, "wallet": 3, "chat": 0}
# The preferred post-purchase channel per sector (SCENARIOS.md section 4).
SECTOR_PRESETS = {
    "fashion": "sms",
    "beauty": "whatsapp",
    "electronics": "email",
    "home": "wallet",
    "food": "sms",
    "luxury": "email",
    "children": "whatsapp",
    "subscription": "sms",
}


@dataclass(frozen=True)
class Request:
    customer_id: int
    template: str
    purpose: str
    channel: str  # a channel, or "best"
    fallback: tuple[str, ...] = ()
    urgent: bool = False
    attempts_of: str | None = None  # set for a fallback: the message's earlier attempts


@dataclass
class Plan:
    channel: str | None = None
    address: str | None = None
    rest: list[str] = field(default_factory=list)  # the fallback chain after `channel`
    passed: list[dict[str, Any]] = field(default_factory=list)  # {channel, reason}
    scores: dict[str, int] = field(default_factory=dict)
    retry_at: int | None = None  # nothing allowed now: the earliest moment one may be

    @property
    def reason(self) -> str:
        if len(self.passed) == 1:
            return str(self.passed[0]["reason"])
        return "; ".join(f"{p['channel']}: {p['reason']}" for p in self.passed)


def addresses(
    conn: Connection,
    customer_id: int,
    traits: dict[str, Any],
    now: int,
    wanted: set[str],
    *,
    verified_push_only: bool = False,
) -> dict[str, str]:
    """Where this customer can be reached on the `wanted` channels, leaving out suppressed
    addresses. Only the wanted channels are looked up: this runs at every send. With
    `verified_push_only` (Policies), a customer known by a user id is pushed only through
    a browser subscribed with their verified user id."""
    found: dict[str, str] = {}
    if wanted & {"email", "sms", "whatsapp"}:
        for kind, value in customers.contact_points(conn, customer_id):
            if kind == "email":
                found.setdefault("email", value)
            else:
                found.setdefault("sms", value)
                found.setdefault("whatsapp", value)
    if "chat" in wanted:
        opened = customers.last_event_at(conn, customer_id, "Chat Opened", "chat")
        if opened is not None and now - opened < CHAT_OPEN_MS:
            found["chat"] = "site"
    if "push" in wanted:
        token = traits.get("push_token")
        verified_only = verified_push_only and customers.has_user_id(conn, customer_id)
        endpoint = subscriptions.newest_endpoint(conn, customer_id, verified_only=verified_only)
        if endpoint is not None:
            found["push"] = endpoint
        elif isinstance(token, str) and token:
            found["push"] = token
    if "wallet" in wanted:
        serial = passes.installed(conn, customer_id)
        if serial is not None:
            found["wallet"] = serial
    found = {channel: address for channel, address in found.items() if channel in wanted}
    if found:
        suppressed = outbox_rows.suppressed(conn, customer_id)
        found = {c: a for c, a in found.items() if (c, a) not in suppressed}
    return found


def rank(
    conn: Connection,
    request: Request,
    profile: dict[str, Any],
    available: set[str],
    now: int,
    sector: str,
) -> tuple[list[str], dict[str, int]]:
    """The channels that have content for this template, best first, with their scores."""
    traits = profile.get("traits", {})
    engaged = outbox_rows.engagement(conn, request.customer_id, now - ENGAGEMENT_WINDOW_MS)
    preferred = traits.get("preferred_channel")
    scores: dict[str, int] = {}
    for channel in SENDABLE_CHANNELS:
        if channel not in available:
            continue
        score = BASE[channel] - COST[channel]
        if channel == preferred:
            score += 40
        score += min(24, 8 * engaged.get(channel, 0))
        if request.urgent:
            score += {"push": 20, "sms": 15, "whatsapp": 10, "email": -20}.get(channel, 0)
        elif channel == "email":
            score += 10  # rich and not urgent
        if request.purpose == "transactional" and SECTOR_PRESETS.get(sector) == channel:
            score += 10
        scores[channel] = score
    order = sorted(scores, key=lambda c: (-scores[c], SENDABLE_CHANNELS.index(c)))
    return order, scores


def plan(
    conn: Connection,
    rules: policies.Policies,
    request: Request,
    profile: dict[str, Any],
    now: int,
    region: str,
    *,
    template: MessageTemplate,
    sector: str = "",
) -> Plan:
    """The first candidate channel that reaches the customer and is allowed now."""
    result = Plan()
    stored = brand.send_time(conn)  # the brand's settings made in the console, if any
    rules = policies.overlay(rules, stored)
    template_channels = template.channels()
    if request.channel == "sector":
        if stored is not None and stored.sector is not None:
            sector = stored.sector
        request = sector_request(request, sector, template_channels)
    named = {request.channel, *request.fallback} if request.channel != "best" else set()
    wanted = template_channels & (named or set(SENDABLE_CHANNELS))
    reachable = addresses(
        conn,
        request.customer_id,
        profile.get("traits", {}),
        now,
        wanted,
        verified_push_only=rules.verified_push_only,
    )
    closed = "whatsapp" in reachable and not whatsapp_possible(
        conn, request.customer_id, template, now
    )
    if request.channel == "best":
        for channel in SENDABLE_CHANNELS:
            if channel in template_channels and channel not in reachable:
                result.passed.append({"channel": channel, "reason": _unreachable(channel)})
            elif channel == "whatsapp" and closed:
                result.passed.append({"channel": channel, "reason": WINDOW_CLOSED})
        usable = template_channels & reachable.keys() - ({"whatsapp"} if closed else set())
        if stored is not None and stored.sector is not None:
            sector = stored.sector
        candidates, result.scores = rank(conn, request, profile, usable, now, sector)
    else:
        candidates = [request.channel, *request.fallback]
    for index, channel in enumerate(candidates):
        if channel not in template_channels:
            result.passed.append({"channel": channel, "reason": "the template has no content"})
            continue
        address = reachable.get(channel)
        if address is None:
            result.passed.append({"channel": channel, "reason": _unreachable(channel)})
            continue
        if channel == "whatsapp" and closed:
            result.passed.append({"channel": channel, "reason": WINDOW_CLOSED})
            continue
        decision = policies.check(
            conn,
            rules,
            policies.Message(
                request.customer_id,
                channel,
                request.purpose,
                request.template,
                profile,
                request.attempts_of,
            ),
            now,
            region,
        )
        if not decision.allowed:
            result.passed.append({"channel": channel, "reason": decision.reason})
            if decision.retry_at is not None:
                result.retry_at = min(result.retry_at or decision.retry_at, decision.retry_at)
            continue
        result.channel, result.address = channel, address
        if request.channel != "best":
            result.rest = candidates[index + 1 :]
        return result
    return result


def sector_request(request: Request, sector: str, template_channels: set[str]) -> Request:
    """A `channel: sector` send as the channels it names: the sector preset's post-purchase
    channel first (SCENARIOS.md section 4), when the template has content for it, then
    the send's fallback (its default chain, alone without a sector)."""
    preset = SECTOR_PRESETS.get(sector)
    chain = [c for c in request.fallback if c != preset]
    if preset is not None and preset in template_channels:
        chain.insert(0, preset)
    return replace(request, channel=chain[0], fallback=tuple(chain[1:]))


WINDOW_CLOSED = (
    "outside the 24-hour WhatsApp window, and the template has no approved WhatsApp template"
)


def whatsapp_window_open(conn: Connection, customer_id: int, now: int) -> bool:
    """The customer wrote to the brand on WhatsApp in the last 24 hours."""
    last = customers.last_event_at(conn, customer_id, "Message Received", "whatsapp")
    return last is not None and now - last < WHATSAPP_WINDOW_MS


def whatsapp_possible(
    conn: Connection, customer_id: int, template: MessageTemplate, now: int
) -> bool:
    """An approved template can go at any time; free-form text only inside the window."""
    forms = [c["whatsapp"] for c in template.content.values() if c.get("whatsapp")]
    if not forms or any("template" in form for form in forms):
        return True
    return whatsapp_window_open(conn, customer_id, now)


# The kind of each reason a channel is passed over for (a metrics label: a few values, where
# the reasons themselves name zones, templates and caps).
_REASON_KINDS = (
    ("quiet hours", "quiet_hours"),
    ("frequency cap", "frequency_cap"),
    ("no marketing consent", "consent"),
    ("the same content", "duplicate"),
    ("the template has no content", "no_content"),
    (WINDOW_CLOSED, "whatsapp_window"),
)


def reason_kind(reason: str) -> str:
    """quiet_hours, frequency_cap, consent, duplicate, unreachable, whatsapp_window,
    no_content, or other."""
    for start, kind in _REASON_KINDS:
        if reason.startswith(start):
            return kind
    if reason.endswith("consent withdrawn"):
        return "consent"
    if reason in _UNREACHABLE.values():
        return "unreachable"
    return "other"


_UNREACHABLE = {
    "email": "no email address (or it bounced)",
    "sms": "no phone number (or it is invalid)",
    "whatsapp": "no phone number (or it is invalid)",
    "push": "no push subscription",
    "wallet": "no Wallet pass installed",
    "chat": "the site chat was not open in the last 24 hours",
}


def _unreachable(channel: str) -> str:
    return _UNREACHABLE[channel]
