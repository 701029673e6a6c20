"""What an email failure says about the address: one rule for the replies of an SMTP
server at send time (channels/email.py), the bounce messages that come back later
(channels/email_inbound.py) and Postmark's bounce webhooks (channels/postmark.py).

A *hard* bounce says the address itself will never work (the mailbox or its domain does
not exist, the account is disabled): the address is barred at once. Anything else is
*soft*: a full mailbox, a loop at the receiver, a policy or spam block, a temporary
failure, or a permanent failure that says no more than that. The message fails (the
fallback takes over) and the bounce is counted; several within a window bar the address
(messaging/suppressions.py). A failure put down to our own *sender* (our sender address,
SPF, DKIM or DMARC, our sending IP or domain on a block list or of poor reputation) fails
the message and counts against no address: it is the operator's to fix, and one incident
must not bar the whole list. docs/channels.md, "Hard and soft bounces", says why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HARD = "hard"
SOFT = "soft"
SENDER = "sender"  # about us, not the address
# A DeliveryFailure's code when the receiving server refused our sending setup.
SENDER_CODE = "sender"

# Causes, as recorded with a bounce.
BAD_ADDRESS = "bad address"
MAILBOX_FULL = "mailbox full"
LOOP = "mail loop"
POLICY = "policy or spam block"
TEMPORARY = "temporary failure"
OTHER = "permanent failure, cause not stated"
OUR_SETUP = "our sending setup (sender address, SPF, DKIM, DMARC, sending IP or domain)"

# An enhanced status code (RFC 3463), alone: not part of an IP address or a version.
_STATUS = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
# A basic SMTP reply code at the start of a reply or after "said:" / "smtp;".
_CODE = re.compile(r"(?<![\w.#])([45][0-5]\d)(?=[ \-]|$)", re.M)

# Phrases, in the order they are looked for: the first family that matches decides.
_LOOP = ("loop", "too many hops", "hop count")
_FULL = (
    "mailbox full",
    "mailbox is full",
    "mailbox has exceeded",
    "mailbox size limit",
    "mail box full",
    "inbox is full",
    "folder is full",
    "is full",
    "full mailbox",
    "over quota",
    "overquota",
    "quota exceeded",
    "exceeded quota",
    "exceeds quota",
    "quota",
    "insufficient storage",
    "insufficient system storage",
    "exceeded storage",
    "storage allocation",
    "out of storage",
    "not enough space",
    "disk full",
)
_BAD = (
    "user unknown",
    "unknown user",
    "unknown recipient",
    "recipient unknown",
    "unknown address",
    "address unknown",
    "unknown local part",
    "unknown or illegal alias",
    "no such user",
    "no such recipient",
    "no such mailbox",
    "no such address",
    "no such person",
    "no such domain",
    "no mailbox",
    "mailbox not found",
    "mailbox does not exist",
    "user not found",
    "recipient not found",
    "address not found",
    "account not found",
    "does not exist",
    "doesn't exist",
    "does not have an account",
    "doesn't have a",
    "does not have a",
    "not a valid mailbox",
    "is not a known user",
    "not known here",
    "not listed in",
    "invalid recipient",
    "invalid address",
    "invalid mailbox",
    "invalid user",
    "invalid final delivery userid",
    "address invalid",
    "bad address",
    "bad destination",
    "unrouteable address",
    "unroutable address",
    "account disabled",
    "account is disabled",
    "account has been disabled",
    "mailbox disabled",
    "mailbox is disabled",
    "account expired",
    "deactivated",
    "no longer available",
    "no longer active",
    "no longer valid",
    "host not found",
    "domain not found",
    "host unknown",
    "unknown host",
    "name service error",
    "not recognized",
    # French, German, Spanish, Italian: the receivers of the brands Parcours starts with.
    "n'existe pas",
    "inconnu",
    "introuvable",
    "unbekannt",
    "existiert nicht",
    "no existe",
    "desconocido",
    "sconosciuto",
    "inesistente",
)
# What receivers say when they refuse our sending setup rather than this message to this
# address: authentication (RFC 7372's words), block lists of IPs and domains, reputation.
_OURS = re.compile(
    r"\b(dmarc|dkim|domainkeys|spf|sender policy framework|ptr record|reverse dns|rdns|"
    r"dnsbl|rbl|spamhaus|spamcop|barracuda|sorbs|blocked using|"
    r"block ?list(ed)?|black ?list(ed)?|on our block|reputation|"
    r"sending ip|your ip|ip address sending|client host|"
    r"sender address rejected|sender domain|sender rejected|sender verify|"
    r"unauthenticated|not authenticated|authentication required)\b"
)
_POLICY = (
    "spam",
    "unsolicited",
    "junk",
    "blocked",
    "policy",
    "prohibited",
    "not allowed",
    "not authorized",
    "not permitted",
    "denied",
    "refused",
    "virus",
    "content rejected",
    "rate limit",
    "too many",
)
_TEMPORARY = (
    "try again",
    "temporar",
    "timed out",
    "timeout",
    "connection refused",
    "in the queue too long",
    "deferred",
    "greylist",
    "could not connect",
    "unable to connect",
    "establish an smtp connection",
)


@dataclass(frozen=True)
class Verdict:
    kind: str  # hard | soft | sender
    cause: str  # BAD_ADDRESS, MAILBOX_FULL, LOOP, POLICY, TEMPORARY, OTHER or OUR_SETUP
    status: str | None = None  # the enhanced status code it was read from, if any

    @property
    def hard(self) -> bool:
        return self.kind == HARD

    @property
    def counted(self) -> bool:
        """A soft bounce, counted against the address."""
        return self.kind == SOFT

    @property
    def ours(self) -> bool:
        """The receiver refused our sending setup: counted against no address."""
        return self.kind == SENDER


def statuses(text: str) -> list[str]:
    """The enhanced status codes in a text, in order."""
    return [".".join(match.groups()) for match in _STATUS.finditer(text)]


def reply_code(text: str) -> int | None:
    """The first basic SMTP reply code in a text."""
    match = _CODE.search(text)
    return int(match.group(1)) if match else None


def classify(text: str, *, code: int | None = None, status: str | None = None) -> Verdict:
    """Hard or soft, and why, from what the receiving server said: `text` (its reply,
    a diagnostic, the lines of a bounce about the address), the basic reply `code` and
    the enhanced `status` when known (else both are looked for in the text)."""
    lowered = " ".join(text.lower().split())
    found = statuses(status or "") + statuses(text)
    # The first specific status wins over a generic one (x.0.0), wherever it comes from.
    chosen = next((s for s in found if not s.endswith(".0.0")), found[0] if found else None)
    if code is None:
        code = reply_code(text)
    if chosen is not None:
        klass, subject, detail = (int(part) for part in chosen.split("."))
        if _about_us(subject, detail, lowered):
            return Verdict(SENDER, OUR_SETUP, chosen)
        if klass == 4 or klass == 2:
            return Verdict(SOFT, _soft_cause(lowered) or TEMPORARY, chosen)
        if subject == 1 or (subject, detail) in ((2, 1), (4, 4)):
            return Verdict(HARD, BAD_ADDRESS, chosen)
        if (subject, detail) == (2, 2):
            return Verdict(SOFT, MAILBOX_FULL, chosen)
        if (subject, detail) == (4, 6):
            return Verdict(SOFT, LOOP, chosen)
        if subject == 7:
            return Verdict(SOFT, POLICY, chosen)
    elif code is not None and 400 <= code < 500:
        if _OURS.search(lowered):
            return Verdict(SENDER, OUR_SETUP)
        return Verdict(SOFT, _soft_cause(lowered) or TEMPORARY)
    if any(phrase in lowered for phrase in _LOOP):
        return Verdict(SOFT, LOOP, chosen)
    if any(phrase in lowered for phrase in _FULL):
        return Verdict(SOFT, MAILBOX_FULL, chosen)
    if any(phrase in lowered for phrase in _TEMPORARY):  # "host not found, try again"
        return Verdict(SOFT, TEMPORARY, chosen)
    if any(phrase in lowered for phrase in _BAD):
        return Verdict(HARD, BAD_ADDRESS, chosen)
    if _OURS.search(lowered):
        return Verdict(SENDER, OUR_SETUP, chosen)
    if any(phrase in lowered for phrase in _POLICY):
        return Verdict(SOFT, POLICY, chosen)
    if chosen is None and code in (550, 551, 553):
        return Verdict(HARD, BAD_ADDRESS)  # "mailbox unavailable", "not local", "not allowed"
    if code == 552:
        return Verdict(SOFT, MAILBOX_FULL, chosen)
    return Verdict(SOFT, OTHER, chosen)


def _about_us(subject: int, detail: int, lowered: str) -> bool:
    """An enhanced status about our side: our sender address (x.1.7, x.1.8), our
    authentication (x.7.20 to x.7.29, RFC 7372: DKIM, SPF, reverse DNS, DMARC), Microsoft's
    banned sending IP or tenant (5.7.6xx, 5.7.7xx); or a policy status (x.7.x) whose words
    name our IP, domain, authentication or a block list."""
    if subject == 1:
        return detail in (7, 8)
    if subject != 7:
        return False
    if 20 <= detail <= 29 or 600 <= detail < 800:
        return True
    return _OURS.search(lowered) is not None


def _soft_cause(lowered: str) -> str | None:
    if any(phrase in lowered for phrase in _LOOP):
        return LOOP
    if any(phrase in lowered for phrase in _FULL):
        return MAILBOX_FULL
    if any(phrase in lowered for phrase in _POLICY):
        return POLICY
    return None
