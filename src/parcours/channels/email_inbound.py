"""Mail that comes back: delivery status notifications (RFC 3464), complaint reports
(ARF, RFC 5965) and customers' replies, received by an SMTP endpoint (aiosmtpd) on the
per-message return path and reply-to addresses (docs/channels.md)."""

from __future__ import annotations

import email
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from email.utils import parseaddr
from typing import Any

log = logging.getLogger(__name__)

_TAGGED = re.compile(r"^[^@+]+\+(\d+)@", re.I)


@dataclass(frozen=True)
class Report:
    kind: str  # bounce | delay | complaint | reply
    outbox_id: int | None  # from the tagged address (bounces+ID@, reply+ID@)
    original_message_id: str | None  # from the report's copy of the original headers
    recipient: str | None
    status: str | None  # the DSN status code, e.g. 5.1.1
    diagnostic: str | None
    text: str | None = None  # a reply's text
    sender: str | None = None

    @property
    def reason(self) -> str:
        if self.kind == "complaint":
            return "the recipient reported the message as spam"
        return " ".join(p for p in (self.status, self.diagnostic) if p) or self.kind


def tagged_id(address: str) -> int | None:
    """`bounces+42@maison.example` -> 42."""
    match = _TAGGED.match(address.strip("<>"))
    return int(match.group(1)) if match else None


def parse(raw: bytes, recipient: str, sender: str | None = None) -> Report | None:
    """What an incoming message says about one of ours; None when it says nothing usable."""
    message = email.message_from_bytes(raw)
    outbox_id = tagged_id(recipient)
    param = message.get_param("report-type")
    report_type = param.lower() if isinstance(param, str) else ""
    if message.get_content_type() == "multipart/report" and report_type == "delivery-status":
        return _dsn(message, outbox_id)
    if message.get_content_type() == "multipart/report" and report_type == "feedback-report":
        return _arf(message, outbox_id)
    if recipient.lower().startswith("reply+"):
        return Report(
            "reply",
            outbox_id,
            _strip(message.get("In-Reply-To")),
            None,
            None,
            None,
            text=_text_of(message),
            sender=parseaddr(message.get("From", sender or ""))[1] or sender,
        )
    return None


def _dsn(message: Message, outbox_id: int | None) -> Report | None:
    recipient = status = diagnostic = action = None
    original = None
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/delivery-status":
            for block in _blocks(part)[1:]:
                action = (block.get("Action") or "").strip().lower()
                status = (block.get("Status") or "").strip()
                diagnostic = _unfold(block.get("Diagnostic-Code"))
                recipient = _address(
                    block.get("Final-Recipient") or block.get("Original-Recipient")
                )
                if action == "failed":
                    break
        elif kind in ("text/rfc822-headers", "message/rfc822"):
            original = _original_id(part)
    if action not in ("failed", "delayed"):
        return None  # delivered, relayed, expanded: nothing to do
    kind = "bounce" if action == "failed" and (status or "5").startswith("5") else "delay"
    return Report(kind, outbox_id, original, recipient, status, diagnostic)


def _arf(message: Message, outbox_id: int | None) -> Report | None:
    feedback = None
    original = None
    recipient = None
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/feedback-report":
            blocks = _blocks(part)
            fields = blocks[0] if blocks else part
            feedback = (fields.get("Feedback-Type") or "").strip().lower()
            recipient = _address(fields.get("Original-Rcpt-To"))
            outbox_id = outbox_id or tagged_id(_address(fields.get("Original-Mail-From")) or "")
        elif kind in ("text/rfc822-headers", "message/rfc822"):
            original = _original_id(part)
    if feedback not in ("abuse", "fraud", "virus", "other", ""):
        return None  # e.g. not-spam: nothing to withdraw
    return Report("complaint", outbox_id, original, recipient, None, feedback or None)


def _original_id(part: Message) -> str | None:
    if part.get_content_type() == "message/rfc822":
        blocks = _blocks(part)
        return _strip(blocks[0].get("Message-ID")) if blocks else None
    headers = email.message_from_string(str(part.get_payload()))
    return _strip(headers.get("Message-ID"))


def _blocks(part: Message) -> list[Message]:
    """The header blocks of a message/* part, as the parser splits them."""
    payload = part.get_payload()
    if not isinstance(payload, list):
        return []
    return [block for block in payload if isinstance(block, Message)]


def _address(field: str | None) -> str | None:
    if not field:
        return None
    value = field.split(";", 1)[-1].strip()
    return value.strip("<>").lower() or None


def _strip(value: str | None) -> str | None:
    return value.strip().strip("<>") if value else None


def _unfold(value: str | None) -> str | None:
    return " ".join(value.split()) if value else None


def _text_of(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                charset = part.get_content_charset() or "utf-8"
                return payload.decode(charset, errors="replace").strip()
    return ""


class InboundHandler:
    """aiosmtpd handler: accepts mail for the tagged addresses, hands each report on."""

    def __init__(self, domain: str, on_report: Callable[[Report], None]) -> None:
        self.domain = domain.lower()
        self.on_report = on_report

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
        reports = []
        for recipient in envelope.rcpt_tos:
            try:
                report = parse(raw, recipient, envelope.mail_from)
            except Exception:  # a malformed report must not stop the others
                log.exception("could not read the mail for %s", recipient)
                continue
            if report is not None:
                reports.append(report)
        try:
            for report in reports:
                self.on_report(report)
        except Exception:
            log.exception("could not record a report; the sending server will try again")
            return "451 4.3.0 try again later"
        return "250 2.0.0 received"
