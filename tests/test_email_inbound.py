"""Mail that comes back over SMTP: bounces (RFC 3464), complaints (ARF, RFC 5965) and
replies, as real receiving servers send them, to the inbound endpoint."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from typing import Any

import pytest

from parcours.channels.email_inbound import parse, tagged_id
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.peers import DkimKey, RunningSmtp, SmtpPeer, free_port
from tests.test_channels import (
    consent_status,
    events_named,
    journey,
    outbox,
    publish,
    smtp_settings,
)
from tests.test_journeys_engine import opt_in, track


def dsn(recipient: str, message_id: str, status: str = "5.1.1", action: str = "failed") -> bytes:
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
        "To: bounces@maison.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n'
        "\r\n"
        "--b1\r\n"
        "Content-Type: text/plain\r\n\r\n"
        "This is the mail system. Your message could not be delivered.\r\n"
        "--b1\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n"
        "Arrival-Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
        "\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <"
        f"{recipient}>: Recipient address rejected:\r\n  User unknown in virtual mailbox table\r\n"
        "\r\n"
        "--b1\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
        "From: Maison <news@maison.example>\r\n"
        f"To: {recipient}\r\n"
        f"Message-ID: <{message_id}>\r\n"
        "Subject: Welcome\r\n"
        "--b1--\r\n"
    ).encode()


def arf(recipient: str, message_id: str, feedback: str = "abuse") -> bytes:
    return (
        "From: feedback@isp.example\r\n"
        "To: fbl@maison.example\r\n"
        "Subject: FW: Welcome\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="b2"\r\n'
        "\r\n"
        "--b2\r\n"
        "Content-Type: text/plain\r\n\r\n"
        "This is an email abuse report.\r\n"
        "--b2\r\n"
        "Content-Type: message/feedback-report\r\n\r\n"
        f"Feedback-Type: {feedback}\r\n"
        "User-Agent: SomeISP-FBL/1.0\r\n"
        "Version: 1\r\n"
        f"Original-Rcpt-To: <{recipient}>\r\n"
        "\r\n"
        "--b2\r\n"
        "Content-Type: message/rfc822\r\n\r\n"
        "From: Maison <news@maison.example>\r\n"
        f"To: {recipient}\r\n"
        f"Message-ID: <{message_id}>\r\n"
        "Subject: Welcome\r\n"
        "\r\n"
        "Hello\r\n"
        "--b2--\r\n"
    ).encode()


def test_reports_are_read() -> None:
    bounce = parse(dsn("ana@example.com", "abc@maison.example"), "bounces+12@maison.example")
    assert bounce is not None and bounce.kind == "bounce" and bounce.outbox_id == 12
    assert bounce.status == "5.1.1" and bounce.recipient == "ana@example.com"
    assert bounce.original_message_id == "abc@maison.example"
    assert "User unknown" in (bounce.diagnostic or "")
    delayed = parse(dsn("a@b.c", "x@y", "4.4.7", "delayed"), "bounces+1@maison.example")
    assert delayed is not None and delayed.kind == "delay"
    complaint = parse(arf("ana@example.com", "abc@maison.example"), "fbl@maison.example")
    assert complaint is not None and complaint.kind == "complaint"
    assert complaint.original_message_id == "abc@maison.example"
    assert parse(arf("a@b.c", "x@y", "not-spam"), "fbl@maison.example") is None
    assert tagged_id("reply+77@maison.example") == 77 and tagged_id("news@x.y") is None


@pytest.fixture
def inbound(
    settings: Settings, clock: SimulatedClock, tmp_path: Any
) -> Iterator[tuple[Services, int, SmtpPeer]]:
    key = DkimKey.make()
    peer = SmtpPeer(dns={"s1._domainkey.maison.example": key.dns_record})
    port = free_port()
    with RunningSmtp(peer) as smtp:
        channels = smtp_settings(
            smtp.port, key.write(tmp_path), inbound_port=port, inbound_host="127.0.0.1"
        )
        services = Services.open(settings.with_overrides(channels=channels), clock=clock)
        try:
            assert services.start_inbound_email() == port
            yield services, port, peer
        finally:
            services.close()


def deliver_to(port: int, recipient: str, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.sendmail("MAILER-DAEMON@mx.example.net", [recipient], raw)


def test_a_bounce_fails_the_message_and_bars_the_address(
    inbound: tuple[Services, int, SmtpPeer],
) -> None:
    services, port, peer = inbound
    publish(services, journey("{channel: email, template: welcome, fallback: [sms]}"))
    opt_in(services, "ana")
    track(services, "ana", "Go")
    [message] = outbox(services)
    assert message["state"] == "sent"
    sender = peer.received[0].sender  # the per-message return path
    assert sender == f"bounces+{message['id'][4:]}@maison.example"
    deliver_to(port, sender, dsn("ana@example.com", "whatever@elsewhere"))
    email, sms = outbox(services)
    assert email["state"] == "failed" and email["error"].startswith("bounce: 5.1.1")
    assert sms["channel"] == "sms"  # the fallback
    track(services, "ana", "Go")  # the address is barred: no second email is attempted
    assert len(peer.received) == 1
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        deliver_to(port, "someone@maison.example", b"Subject: hi\r\n\r\nhi\r\n")


def test_a_complaint_withdraws_email_marketing_consent(
    inbound: tuple[Services, int, SmtpPeer],
) -> None:
    services, port, peer = inbound
    publish(services, journey("{channel: email, template: welcome}"))
    opt_in(services, "ana")
    track(services, "ana", "Go")
    [message] = outbox(services)
    message_id = peer.received[0].message["Message-ID"].strip("<>")
    # The feedback loop's report names the original message only by its Message-ID.
    deliver_to(port, "postmaster@maison.example", arf("ana@example.com", message_id))
    assert consent_status(services, "ana", "email") == "withdrawn"
    assert consent_status(services, "ana", "sms") == "granted"
    [complained] = events_named(services, "Message Complained")
    assert complained["message_id"] == message["id"]


def test_a_reply_reaches_the_customer_timeline(inbound: tuple[Services, int, SmtpPeer]) -> None:
    services, port, peer = inbound
    publish(services, journey("{channel: email, template: welcome}"))
    opt_in(services, "ana")
    track(services, "ana", "Go")
    reply_to = peer.received[0].message["Reply-To"]
    reply = (
        "From: Ana <ana@example.com>\r\nTo: " + reply_to + "\r\nSubject: Re: Welcome\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nMerci ! Quand arrive ma commande ?\r\n"
    ).encode()
    deliver_to(port, reply_to, reply)
    [received] = events_named(services, "Message Received")
    assert received["channel"] == "email"
    assert received["text"] == "Merci ! Quand arrive ma commande ?"
    assert received["from"] == "ana@example.com"
