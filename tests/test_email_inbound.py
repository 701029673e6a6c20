"""Mail that comes back over SMTP: bounces (RFC 3464), complaints (ARF, RFC 5965) and
replies, as real receiving servers send them, to the inbound endpoint."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from parcours.channels.email_inbound import parse, tagged_id
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.db import Database
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.conftest import ADMIN_KEY, WRITE_KEY
from tests.peers import DkimKey, RunningSmtp, SmtpPeer, free_port
from tests.test_channels import (
    consent_status,
    events_named,
    journey,
    outbox,
    publish,
    smtp_settings,
)
from tests.test_journeys_engine import OPTED_IN, opt_in, track


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


@pytest.mark.slow
def test_serve_with_two_http_processes_receives_bounces_on_one_port(
    database_url: str, tmp_path: Path
) -> None:
    """`parcours serve` with http_workers = 2: the inbound endpoint listens once (in the
    supervising process) and a bounce sent to it fails the message a worker sent."""
    key = DkimKey.make()
    peer = SmtpPeer(dns={"s1._domainkey.maison.example": key.dns_record})
    with RunningSmtp(peer) as smtp:
        inbound_port, http_port = free_port(), free_port()
        channels = smtp_settings(
            smtp.port, key.write(tmp_path), inbound_port=inbound_port, inbound_host="127.0.0.1"
        )
        settings = Settings(
            data_dir=tmp_path / "data",
            database_url=database_url,
            write_key=WRITE_KEY,
            admin_key=ADMIN_KEY,
            channels=channels,
        )
        services = Services.open(settings)
        publish(services, journey("{channel: email, template: welcome}"))
        services.close()
        env = {
            **os.environ,
            "PARCOURS_DATABASE_URL": database_url,
            "PARCOURS_DATA_DIR": str(tmp_path / "data"),
            "PARCOURS_HTTP_WORKERS": "2",
            "PARCOURS_PORT": str(http_port),
            "PARCOURS_CHANNELS": json.dumps(channels),
            "PARCOURS_WRITE_KEY": WRITE_KEY,
            "PARCOURS_ADMIN_KEY": ADMIN_KEY,
            "PARCOURS_LOG_LEVEL": "warning",
        }
        command = [str(Path(sys.executable).parent / "parcours"), "serve"]
        server = subprocess.Popen(
            command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            base = f"http://127.0.0.1:{http_port}"
            wait_until(lambda: _answers(f"{base}/healthz"), server)
            auth = (WRITE_KEY, "")
            identify = {"userId": "ana", "traits": {**OPTED_IN, "email": "ana@example.com"}}
            assert httpx.post(f"{base}/v1/identify", json=identify, auth=auth).status_code == 200
            track_go = {"userId": "ana", "event": "Go"}
            assert httpx.post(f"{base}/v1/track", json=track_go, auth=auth).status_code == 200
            wait_until(lambda: len(peer.received) == 1, server)  # a worker sent the welcome
            sender = peer.received[0].sender
            deliver_to(inbound_port, sender, dsn("ana@example.com", "whatever@elsewhere"))
            db = Database(database_url)
            try:
                wait_until(lambda: _email_state(db) == ("failed", 1), server)
                with db.read() as conn:
                    error = conn.execute(text("SELECT error FROM outbox")).scalar_one()
            finally:
                db.dispose()
            assert error.startswith("bounce: 5.1.1")
            assert len(peer.received) == 1  # sent once
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(10)
    with pytest.raises(OSError):  # the endpoint stopped with the server
        smtplib.SMTP("127.0.0.1", inbound_port, timeout=2)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _email_state(db: Database) -> tuple[str, int]:
    with db.read() as conn:
        state = conn.execute(text("SELECT state FROM outbox")).scalar_one()
        barred = conn.execute(
            text("SELECT count(*) FROM suppressions WHERE channel = 'email'")
        ).scalar_one()
    return str(state), int(barred)


def wait_until(condition: Callable[[], bool], server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        if server.poll() is not None:
            errors = server.stderr.read().decode(errors="replace") if server.stderr else ""
            pytest.fail(f"parcours serve exited ({server.returncode}):\n{errors[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for parcours serve")
        time.sleep(0.2)
