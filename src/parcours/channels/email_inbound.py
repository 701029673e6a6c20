"""Mail that comes back: bounces in every format mail servers send them (RFC 3464
delivery status notifications, and the plain-text notices of qmail, Exim, Postfix,
Exchange, Yahoo, AOL, Gmail... read by flufl.bounce, GNU Mailman's bounce detectors),
complaint reports (ARF, RFC 5965) and customers' replies, received by an SMTP endpoint
(aiosmtpd) on the per-message return path and reply-to addresses (docs/channels.md).

A tagged address (`bounces+42-<mac>@`) is read here as it is written; whether its MAC is
right, and so whether the report may act on message 42, is decided where the key is
(messaging/delivery.py, channels/email_tags.py). Whatever arrives and changes nothing (a
delay warning, an auto-reply, a report about no message of ours...) is handed on as
`Ignored` with the reason, to be kept for an admin.
"""

from __future__ import annotations

import email
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message
from email.utils import parseaddr
from typing import Any

from flufl.bounce import all_failures

from parcours.channels.email_bounces import OTHER, Verdict, classify, statuses

log = logging.getLogger(__name__)

# `bounces+42-<mac>@`, or `bounces+42@` as tags were before they were signed.
_TAGGED = re.compile(r"^[^@+]+\+(\d{1,18})(?:-([a-z0-9]{1,64}))?@", re.I)
_MESSAGE_ID_LINE = re.compile(r"^message-id:\s*<([^>\s]{1,300})>", re.I | re.M)
# Where a plain-text bounce starts quoting the returned message.
_RETURNED = re.compile(
    r"^\s*[-=_]{2,}.*(original|copy of|returned|undelivered message|message follows|"
    r"headers? follow|session transcript)|^\s*original message follows",
    re.I | re.M,
)
_TAG = re.compile(r"<[^>]*>")
_NOTICE_CHARS = 20_000  # what is read of a bounce's own text
_REPLY_CHARS = 20_000  # what is kept of a reply's text

# Signs that a message was written by a program, not a person (RFC 3834 and common use).
_AUTOMATIC_HEADERS = (
    "x-autoreply",
    "x-autorespond",
    "x-autoresponder",
    "x-autoreply-from",
    "x-mail-autoreply",
    "x-fc-machinegenerated",
)
_AUTOMATIC_SENDERS = ("mailer-daemon", "mail-daemon", "postmaster", "noreply", "no-reply")
# How out-of-office replies begin their subject (never a word a customer might start
# with: "Absence de colis" is a customer's question).
_OUT_OF_OFFICE = (
    "auto:",
    "automatic reply",
    "autoreply",
    "auto-reply",
    "auto reply",
    "out of office",
    "out of the office",
    "réponse automatique",
    "reponse automatique",
    "absence du bureau",
    "absent du bureau",
    "automatische antwort",
    "abwesenheitsnotiz",
    "respuesta automática",
    "fuera de la oficina",
    "risposta automatica",
    "fuori sede",
)


@dataclass(frozen=True)
class Report:
    kind: str  # bounce | complaint | reply
    outbox_id: int | None  # from the tagged address (bounces+ID-MAC@, reply+ID-MAC@)
    original_message_id: str | None  # from the report's copy of the original headers
    recipient: str | None
    status: str | None  # the DSN status code (5.1.1), or the provider's bounce type
    diagnostic: str | None
    text: str | None = None  # a reply's text
    sender: str | None = None
    verdict: Verdict | None = None  # a bounce: hard, soft or ours, and why
    tag_mac: str | None = None  # the MAC the tagged address carried (None: unsigned)

    @property
    def reason(self) -> str:
        if self.kind == "complaint":
            return "the recipient reported the message as spam"
        return " ".join(p for p in (self.status, self.diagnostic) if p) or self.kind


@dataclass(frozen=True)
class Ignored:
    """Something received that changes nothing, and why (`code` for machines)."""

    code: str  # delay | auto_reply | spam | feedback | not_understood | unreadable | ...
    reason: str
    outbox_id: int | None = None  # the message it names (by its tag: see tag_mac)
    tag_mac: str | None = None


@dataclass
class InboundMail:
    """One message as it came to one of our addresses: what it reports, what not."""

    rcpt_to: str
    mail_from: str | None
    from_address: str | None
    subject: str | None
    message_id: str | None
    outbox_id: int | None
    reports: list[Report] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)
    tag_mac: str | None = None


def tag_of(address: str) -> tuple[int, str | None] | None:
    """`bounces+42-abcdefghijkl@maison.example` -> (42, "abcdefghijkl"); an unsigned
    `bounces+42@` -> (42, None); None when the address carries no tag (never past a
    64-bit id)."""
    match = _TAGGED.match(address.strip().strip("<>"))
    if match is None:
        return None
    return int(match.group(1)), (match.group(2).lower() if match.group(2) else None)


def tagged_id(address: str) -> int | None:
    """The message id a tagged address names, its MAC unchecked."""
    tag = tag_of(address)
    return tag[0] if tag else None


def parse(raw: bytes, recipient: str, sender: str | None = None) -> InboundMail:
    """What an incoming message, received for `recipient`, says about messages of ours."""
    message = email.message_from_bytes(raw)
    outbox_id, mac = tag_of(recipient) or (None, None)
    mail = InboundMail(
        rcpt_to=recipient,
        mail_from=sender,
        from_address=parseaddr(_header(message, "From"))[1].lower() or None,
        subject=_header(message, "Subject")[:300] or None,
        message_id=_strip(_header(message, "Message-ID"))[:300] or None,
        outbox_id=outbox_id,
        tag_mac=mac,
    )
    complaint = _arf(message, outbox_id, mac)
    if complaint is not None:
        if isinstance(complaint, Ignored):
            mail.ignored.append(complaint)
        else:
            mail.reports.append(complaint)
        return mail
    local = recipient.lower().partition("@")[0]
    if _may_be_bounce(message, local, sender):
        reports, delays = _bounces(message, outbox_id, mac)
        if reports or delays:
            mail.reports += reports
            mail.ignored += delays
            return mail
    automatic = automatic_reason(message, sender)
    if automatic is not None:
        mail.ignored.append(Ignored("auto_reply", automatic, outbox_id, mac))
        return mail
    spam = spam_reason(message)
    if spam is not None:
        mail.ignored.append(Ignored("spam", spam, outbox_id, mac))
        return mail
    if local.startswith("reply+"):
        mail.reports.append(
            Report(
                "reply",
                outbox_id,
                _strip(message.get("In-Reply-To")),
                None,
                None,
                None,
                text=_text_of(message)[:_REPLY_CHARS],
                sender=mail.from_address or sender,
                tag_mac=mac,
            )
        )
        return mail
    mail.ignored.append(
        Ignored(
            "not_understood",
            "neither a bounce, a complaint report nor a reply: nothing in it was recognised",
            outbox_id,
            mac,
        )
    )
    return mail


# ---- bounces --------------------------------------------------------------------------


def _may_be_bounce(message: Message, local: str, sender: str | None) -> bool:
    """Bounce detectors read text for patterns: they are only asked about mail that comes
    the way bounces come, never about a customer's reply that quotes such text."""
    if not local.startswith("reply+"):
        return True  # bounces+ID@ and postmaster@ are where bounces go
    if sender is None or sender.strip("<>") == "":
        return True  # the null sender: mail about mail (RFC 5321, 4.5.5)
    if message.get_content_type() == "multipart/report":
        return True
    if any(part.get_content_type() == "message/delivery-status" for part in message.walk()):
        return True
    from_local = parseaddr(_header(message, "From"))[1].lower().partition("@")[0]
    return from_local in ("mailer-daemon", "mail-daemon", "postmaster")


def _bounces(
    message: Message, outbox_id: int | None, mac: str | None
) -> tuple[list[Report], list[Ignored]]:
    """The recipients this message says failed for good (one report each, classified by
    the shared rule) and those it says are only delayed. flufl.bounce decides which
    addresses failed and whether for good; the reason comes from the report's own fields
    (Status, Diagnostic-Code) when it has them, else from the lines of the notice about
    the address."""
    try:
        temporary, permanent = all_failures(message)
    except Exception:  # a detector tripping on odd input must not lose the rest
        log.exception("the bounce detectors could not read a message")
        temporary, permanent = frozenset(), frozenset()
    blocks = _dsn_blocks(message)
    notice = _notice(message)
    original = _original_id(message)
    reports = []
    for raw_address in sorted(permanent):
        address = raw_address.decode("ascii", errors="replace").lower()
        block = blocks.get(address, {})
        status = block.get("status") or None
        diagnostic = block.get("diagnostic") or None
        lines = _lines_about(notice, address)
        verdict = classify(diagnostic or lines, status=status)
        if verdict.cause == OTHER and diagnostic is None:
            wider = classify(notice, status=status)
            verdict = wider if wider.cause != OTHER else verdict
        if diagnostic is None and lines:
            diagnostic = " ".join(lines.split())[:500]
        reports.append(
            Report(
                "bounce",
                outbox_id,
                original,
                address,
                status or verdict.status,
                diagnostic,
                verdict=verdict,
                tag_mac=mac,
            )
        )
    delays = [
        Ignored(
            "delay",
            f"a delay warning for {raw.decode('ascii', errors='replace').lower()}: the "
            "receiving side keeps trying; only a final failure counts",
            outbox_id,
            mac,
        )
        for raw in sorted(temporary - permanent)
    ]
    return reports, delays


def _dsn_blocks(message: Message) -> dict[str, dict[str, str]]:
    """The per-recipient fields of every message/delivery-status part, wherever it sits
    (in a multipart/report with or without its report-type, in a multipart/mixed...)."""
    found: dict[str, dict[str, str]] = {}
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        for block in _blocks(part)[1:]:
            fields = {
                "action": (block.get("Action") or "").strip().lower(),
                "status": next(iter(statuses(str(block.get("Status") or ""))), ""),
                "diagnostic": _unfold(block.get("Diagnostic-Code")) or "",
            }
            for name in ("Final-Recipient", "Original-Recipient", "X-Actual-Recipient"):
                address = _address(block.get(name))
                if address is not None and "@" in address:
                    found.setdefault(address, fields)
    return found


def _notice(message: Message) -> str:
    """The bounce's own words: its text parts (HTML reduced to text), outside any
    returned copy of the original, up to where the text starts quoting it."""
    texts = []
    for part in _own_parts(message):
        kind = part.get_content_type()
        if kind not in ("text/plain", "text/html"):
            continue
        body = _decoded(part)
        if kind == "text/html":
            body = _TAG.sub(" ", body)
        returned = _RETURNED.search(body)
        texts.append(body[: returned.start()] if returned else body)
        if sum(len(text) for text in texts) > _NOTICE_CHARS:
            break
    return "\n".join(texts)[:_NOTICE_CHARS]


def _own_parts(message: Message) -> Iterator[Message]:
    """The parts of a message, leaving out what is inside attached messages."""
    yield message
    if message.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
        return
    payload = message.get_payload()
    if message.is_multipart() and isinstance(payload, list):
        for part in payload:
            if isinstance(part, Message) and part.get_content_type() != "message/rfc822":
                yield from _own_parts(part)


def _lines_about(notice: str, address: str) -> str:
    """The lines of the notice that mention the address and those right after it, up to
    the next blank line: where mail servers put the reason (qmail, Exim, Postfix...)."""
    lines = notice.splitlines()
    kept: list[str] = []
    for index, line in enumerate(lines):
        if address not in line.lower():
            continue
        kept.append(line)
        for following in lines[index + 1 : index + 7]:
            if not following.strip():
                break
            kept.append(following)
    return "\n".join(kept)


def _original_id(message: Message) -> str | None:
    """The Message-ID of the returned message: from its attached copy or headers, else a
    Message-ID line quoted in the bounce's text."""
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            blocks = _blocks(part)
            found = _strip(blocks[0].get("Message-ID")) if blocks else None
        elif kind == "text/rfc822-headers":
            found = _strip(email.message_from_string(_decoded(part)).get("Message-ID"))
        else:
            continue
        if found:
            return found
    for part in message.walk():
        if part is message or part.get_content_maintype() != "text":
            continue
        match = _MESSAGE_ID_LINE.search(_decoded(part))
        if match:
            return match.group(1)
    if not message.is_multipart():
        matches = _MESSAGE_ID_LINE.findall(_decoded(message))
        return matches[0] if matches else None
    return None


# ---- complaints -----------------------------------------------------------------------


def _arf(message: Message, outbox_id: int | None, mac: str | None) -> Report | Ignored | None:
    """A feedback report (ARF): a complaint to act on, one to ignore (not-spam), or None
    when the message is no feedback report. Without a tag of its own (a feedback loop
    writes to postmaster@), the original's return path may carry one."""
    part = next(
        (p for p in message.walk() if p.get_content_type() == "message/feedback-report"), None
    )
    if part is None:
        return None
    blocks = _blocks(part)
    fields: Message = blocks[0] if blocks else email.message_from_string(_decoded(part))
    feedback = (fields.get("Feedback-Type") or "").strip().lower()
    recipient = _address(fields.get("Original-Rcpt-To"))
    if outbox_id is None:
        outbox_id, mac = tag_of(_address(fields.get("Original-Mail-From")) or "") or (None, None)
    if feedback not in ("abuse", "fraud", "virus", "other", ""):
        return Ignored(
            "feedback",
            f"a feedback report of type {feedback!r}: only complaints (abuse, fraud, virus, "
            "other) withdraw consent",
            outbox_id,
            mac,
        )
    original = _original_id(message)
    return Report("complaint", outbox_id, original, recipient, None, feedback or None, tag_mac=mac)


# ---- auto-replies and spam ------------------------------------------------------------


def automatic_reason(message: Message, sender: str | None) -> str | None:
    """Why this message was written by a program (an out-of-office, a list's mail, a
    notice from a mail server), or None when nothing says so."""
    submitted = _header(message, "Auto-Submitted").strip().lower()
    if submitted and submitted.split(";")[0].strip() != "no":
        return f"an automatic message (Auto-Submitted: {submitted[:60]})"
    for name in _AUTOMATIC_HEADERS:
        if message.get(name) is not None:
            return f"an automatic reply (it carries {name})"
    precedence = _header(message, "Precedence").strip().lower()
    if precedence in ("bulk", "junk", "list", "auto_reply"):
        return f"bulk or automatic mail (Precedence: {precedence})"
    if message.get("List-Id") is not None:
        return "a mailing list's message (List-Id)"
    if sender is not None and sender.strip("<>") == "":
        return "sent from the null sender <>: mail about mail, never a person"
    sender_local = parseaddr(_header(message, "From"))[1].lower().partition("@")[0]
    if sender_local in _AUTOMATIC_SENDERS:
        return f"sent by {sender_local}, not a person"
    subject = " ".join(_header(message, "Subject").lower().split())
    if subject.startswith(_OUT_OF_OFFICE):
        return f"an out-of-office reply (subject {subject[:60]!r})"
    return None


def spam_reason(message: Message) -> str | None:
    """Spam, as a filter on the way marked it."""
    flag = _header(message, "X-Spam-Flag").strip().lower()
    if flag in ("yes", "true"):
        return "marked as spam by a filter (X-Spam-Flag: YES)"
    status = _header(message, "X-Spam-Status").strip().lower()
    if status.startswith("yes"):
        return "marked as spam by a filter (X-Spam-Status: Yes)"
    if _header(message, "X-Spam").strip().lower() in ("yes", "true"):
        return "marked as spam by a filter (X-Spam: yes)"
    return None


# ---- reading --------------------------------------------------------------------------


def _header(message: Message, name: str) -> str:
    """A header's text, RFC 2047 words decoded; empty when missing or unreadable."""
    value = message.get(name)
    if value is None:
        return ""
    try:
        return str(make_header(decode_header(str(value))))
    except (UnicodeError, LookupError, ValueError, TypeError):
        return str(value)


def _decoded(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        charset = part.get_content_charset() or "utf-8"
        try:
            return payload.decode(charset, errors="replace")
        except LookupError:
            return payload.decode("utf-8", errors="replace")
    raw = part.get_payload()
    return raw if isinstance(raw, str) else ""


def _blocks(part: Message) -> list[Message]:
    """The header blocks of a message/* part, as the parser splits them."""
    payload = part.get_payload()
    if not isinstance(payload, list):
        return []
    return [block for block in payload if isinstance(block, Message)]


def _address(value: str | None) -> str | None:
    if not value:
        return None
    address = str(value).split(";", 1)[-1].strip().strip("<>").strip().lower()
    return address[:320] or None


def _strip(value: str | None) -> str:
    return str(value).strip().strip("<>") if value else ""


def _unfold(value: str | None) -> str | None:
    return " ".join(str(value).split())[:1000] if value else None


def _text_of(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            return _decoded(part).strip()
    return ""


class InboundHandler:
    """aiosmtpd handler: accepts mail for the tagged addresses, hands each one on."""

    def __init__(self, domain: str, on_mail: Callable[[InboundMail], None]) -> None:
        self.domain = domain.lower()
        self.on_mail = on_mail

    async def handle_RCPT(  # aiosmtpd's hook names
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        local, _, domain = address.lower().partition("@")
        if domain != self.domain or not local.startswith(("bounces+", "reply+", "postmaster")):
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = bytes(envelope.original_content or envelope.content)
        mails = []
        for recipient in envelope.rcpt_tos:
            try:
                mail = parse(raw, recipient, envelope.mail_from)
            except Exception:  # a malformed message must not stop the others
                log.exception("could not read the mail for %s", recipient)
                outbox_id, mac = tag_of(recipient) or (None, None)
                mail = InboundMail(recipient, envelope.mail_from, None, None, None, outbox_id)
                mail.tag_mac = mac
                mail.ignored.append(
                    Ignored("unreadable", "the message could not be read", outbox_id, mac)
                )
            mails.append(mail)
        try:
            for mail in mails:
                self.on_mail(mail)
        except Exception:
            log.exception("could not record an inbound mail; the sending server will try again")
            return "451 4.3.0 try again later"
        return "250 2.0.0 received"
