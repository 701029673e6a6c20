"""Mail that comes back over SMTP: bounces in every format real mail servers send them
(the 117 messages of flufl.bounce's test corpus among them), complaints (ARF, RFC 5965)
and replies, as real receiving servers send them, to the inbound endpoint; the one
hard/soft rule, the suppressions admin API, and what is kept of mail not acted on."""

from __future__ import annotations

import email as email_module
import hashlib
import json
import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from flufl.bounce import all_failures
from litestar.testing import TestClient
from sqlalchemy import text

from parcours.app import create_app
from parcours.channels.email_bounces import OUR_SETUP, classify
from parcours.channels.email_inbound import parse, tag_of, tagged_id
from parcours.channels.email_tags import SIGNED_FROM_NAME as SIGNED
from parcours.channels.email_tags import EmailTags, unsigned_message_id
from parcours.customers.identity import BadEmail, check_email
from parcours.messaging.suppressions import BounceRule, record_bounce
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.db import Database
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.conftest import (
    ADMIN_KEY,
    POSTGRES_ENV,
    START,
    WRITE_KEY,
    admin_headers,
    free_port,
    truncate_all,
    wait_until,
    wait_until_serving,
)
from tests.peers import DkimKey, RunningSmtp, SmtpPeer
from tests.test_channels import (
    consent_status,
    customer_of,
    events_named,
    journey,
    outbox,
    publish,
    send_email,
    smtp_settings,
)
from tests.test_journeys_engine import OPTED_IN, opt_in, track

DAY = 86_400_000


USER_UNKNOWN = (
    "smtp; 550 5.1.1 <{r}>: Recipient address rejected:\r\n  User unknown in virtual mailbox table"
)


def dsn(
    recipient: str,
    message_id: str,
    status: str = "5.1.1",
    action: str = "failed",
    diagnostic: str = USER_UNKNOWN,
    content_type: str = "multipart/report; report-type=delivery-status",
) -> bytes:
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
        "To: bounces@maison.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: {content_type}; boundary="b1"\r\n'
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
        f"Diagnostic-Code: {diagnostic.format(r=recipient)}\r\n"
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


def only(mail: Any) -> Any:
    """The one report an inbound mail carries."""
    assert not mail.ignored, mail.ignored
    [report] = mail.reports
    return report


def test_reports_are_read() -> None:
    bounce = only(parse(dsn("ana@example.com", "abc@maison.example"), "bounces+12@maison.example"))
    assert bounce.kind == "bounce" and bounce.outbox_id == 12
    assert bounce.status == "5.1.1" and bounce.recipient == "ana@example.com"
    assert bounce.original_message_id == "abc@maison.example"
    assert "User unknown" in (bounce.diagnostic or "")
    assert (bounce.verdict.kind, bounce.verdict.cause) == ("hard", "bad address")
    delayed = parse(dsn("a@b.c", "x@y", "4.4.7", "delayed"), "bounces+1@maison.example")
    assert delayed.reports == [] and [i.code for i in delayed.ignored] == ["delay"]
    complaint = only(parse(arf("ana@example.com", "abc@maison.example"), "fbl@maison.example"))
    assert complaint.kind == "complaint"
    assert complaint.original_message_id == "abc@maison.example"
    not_spam = parse(arf("a@b.c", "x@y", "not-spam"), "fbl@maison.example")
    assert not_spam.reports == [] and [i.code for i in not_spam.ignored] == ["feedback"]
    assert tagged_id("reply+77@maison.example") == 77 and tagged_id("news@x.y") is None
    assert tagged_id("bounces+" + "9" * 30 + "@maison.example") is None  # past 64 bits


@pytest.mark.parametrize(
    ("content_type", "action"),
    [
        ("multipart/report", "failed"),  # no report-type
        ("multipart/mixed", "failed"),  # the delivery-status part inside multipart/mixed
        ("multipart/report; report-type=delivery-status", "failed (bad destination)"),
        ("multipart/report; report-type=delivery-status", "failure"),
    ],
)
def test_delivery_status_reports_as_servers_really_write_them(
    content_type: str, action: str
) -> None:
    raw = dsn("ana@example.com", "abc@maison.example", action=action, content_type=content_type)
    bounce = only(parse(raw, "bounces+12@maison.example"))
    assert (bounce.kind, bounce.recipient, bounce.status) == ("bounce", "ana@example.com", "5.1.1")
    assert bounce.verdict.kind == "hard"


@pytest.mark.parametrize(
    ("reply", "kind", "cause"),
    [
        # Gmail, as it answers at RCPT or in its bounce notices
        (
            "550-5.1.1 The email account that you tried to reach does not exist.",
            "hard",
            "bad address",
        ),
        ("550-5.2.1 The email account that you tried to reach is disabled.", "hard", "bad address"),
        (
            "552-5.2.2 The email account that you tried to reach is over quota.",
            "soft",
            "mailbox full",
        ),
        (
            "550-5.7.1 Our system has detected that this message is likely unsolicited mail.",
            "soft",
            "policy or spam block",
        ),
        ("550 5.4.6 Routing loop detected", "soft", "mail loop"),
        ("554 5.4.14 Hop count exceeded - possible mail loop", "soft", "mail loop"),
        ("451 4.7.1 Greylisted, please try again later", "soft", "temporary failure"),
        ("421 4.4.2 Connection timed out", "soft", "temporary failure"),
        (
            "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",
            "soft",
            "policy or spam block",
        ),
        ("550 Requested action not taken: mailbox unavailable", "hard", "bad address"),
        ("550 No such user here", "hard", "bad address"),
        (
            "554 delivery error: dd This user doesn't have a yahoo.com account",
            "hard",
            "bad address",
        ),
        ("552 Requested mail action aborted: exceeded storage allocation", "soft", "mailbox full"),
        ("554 Transaction failed", "soft", "permanent failure, cause not stated"),
        ("550 5.0.0 Utilisateur inconnu", "hard", "bad address"),
    ],
)
def test_one_rule_says_hard_or_soft(reply: str, kind: str, cause: str) -> None:
    verdict = classify(reply)
    assert (verdict.kind, verdict.cause) == (kind, cause)


@pytest.mark.parametrize(
    "reply",
    [
        # Gmail: DMARC, SPF, PTR and authentication
        "550-5.7.26 Unauthenticated email from maison.example is not accepted due to "
        "domain's DMARC policy. Please contact the administrator of maison.example domain "
        "if this was a legitimate mail.",
        "550-5.7.26 This mail has been blocked because the sender is unauthenticated. Gmail "
        "requires all senders to authenticate with either SPF or DKIM.",
        "550-5.7.1 [192.0.2.10] The SPF check did not pass for news@maison.example",
        "550-5.7.25 [192.0.2.10] The IP address sending this message does not have a PTR "
        "record setup, or the corresponding forward DNS entry does not point to the sending "
        "IP.",
        "421-4.7.0 [192.0.2.10] Our system has detected that this message is suspicious due "
        "to the very low reputation of the sending domain.",
        # Microsoft
        "550 5.7.606 Access denied, banned sending IP [192.0.2.10]. To request removal from "
        "this list please visit https://sender.office.com/",
        "550 5.7.1 Unfortunately, messages from [192.0.2.10] weren't sent. Please contact "
        "your Internet service provider since part of their network is on our block list "
        "(S3150).",
        # Spamhaus through any server
        "554 5.7.1 Service unavailable; Client host [192.0.2.10] blocked using "
        "zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.10",
        # Postfix's sender checks, and a policy server's SPF verdict
        "550 5.1.8 <news@maison.example>: Sender address rejected: Domain not found",
        "450 4.1.8 <news@maison.example>: Sender address rejected: Domain not found",
        "550 5.7.23 Message rejected due to: SPF fail - not authorized",
        # Yahoo, and no enhanced status at all
        "550 5.7.9 This mail has been blocked because the sender is unauthenticated. Yahoo "
        "requires all senders to authenticate with either SPF or DKIM.",
        "550 Message rejected because the DKIM signature does not verify",
    ],
)
def test_a_refusal_of_our_sending_setup_counts_against_no_address(reply: str) -> None:
    """Our sender address, SPF, DKIM, DMARC, sending IP or domain: during such an
    incident every send fails, and counting them would bar the whole list."""
    verdict = classify(reply)
    assert (verdict.kind, verdict.cause, verdict.counted, verdict.hard) == (
        "sender",
        OUR_SETUP,
        False,
        False,
    )


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


def tag_address(services: Services, local: str, outbox_id: int) -> str:
    """The signed address of a message's return path (bounces) or reply-to (reply)."""
    tags = EmailTags.load(services.db, services.clock.now_ms())
    return f"{local}+{tags.tag(outbox_id)}@maison.example"


def deliver_to(
    port: int, recipient: str, raw: bytes, sender: str = "MAILER-DAEMON@mx.example.net"
) -> None:
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.sendmail(sender, [recipient], raw)


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
    assert sender == tag_address(services, "bounces", int(message["id"][4:]))
    assert re.fullmatch(r"bounces\+\d+-[a-z2-7]{12}@maison\.example", sender)
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


@pytest.mark.processes
def test_serve_receives_bounces_on_its_inbound_port(database_url: str, tmp_path: Path) -> None:
    """A real `parcours serve`: its inbound SMTP endpoint takes a bounce, which fails the
    message its worker sent."""
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
            wait_until_serving(server, base)
            auth = (WRITE_KEY, "")
            identify = {"userId": "ana", "traits": {**OPTED_IN, "email": "ana@example.com"}}
            assert httpx.post(f"{base}/v1/identify", json=identify, auth=auth).status_code == 200
            track_go = {"userId": "ana", "event": "Go"}
            assert httpx.post(f"{base}/v1/track", json=track_go, auth=auth).status_code == 200
            while_serving(lambda: len(peer.received) == 1, server)  # its worker sent the welcome
            sender = peer.received[0].sender
            deliver_to(inbound_port, sender, dsn("ana@example.com", "whatever@elsewhere"))
            db = Database(database_url)
            try:
                while_serving(lambda: _email_state(db) == ("failed", 1), server)
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


def _email_state(db: Database) -> tuple[str, int]:
    with db.read() as conn:
        state = conn.execute(text("SELECT state FROM outbox")).scalar_one()
        barred = conn.execute(
            text("SELECT count(*) FROM suppressions WHERE channel = 'email'")
        ).scalar_one()
    return str(state), int(barred)


def while_serving(condition: Callable[[], bool], server: subprocess.Popen[bytes]) -> None:
    """Wait until `condition` holds; fail at once if `parcours serve` exits first."""

    def holds() -> bool:
        if server.poll() is not None:
            errors = server.stderr.read().decode(errors="replace") if server.stderr else ""
            pytest.fail(f"parcours serve exited ({server.returncode}):\n{errors[-3000:]}")
        return condition()

    wait_until(holds, 60, what="parcours serve")


# ---- the corpus of real bounces ---------------------------------------------------------

# The corpus is flufl.bounce's own test data (GNU Mailman's bounce detectors), fetched from
# PyPI at test time and never committed here: 117 messages from as many mail servers. The
# counts below are this version's; the sdist is checked against its published hash.
FLUFL_BOUNCE_VERSION = "6.0.0"
FLUFL_BOUNCE_SHA256 = "a1df16b9d1877ae4536f7d76c00d8421fcefbe694f80f5285d05c45a2547b1bc"
FLUFL_BOUNCE_URL = (
    "https://files.pythonhosted.org/packages/36/df/"
    "ef02be153e34314595ccc4d8d903dfa4ab2f23c94481e6e8bbe2e1bf368b/flufl_bounce-6.0.0.tar.gz"
)


@pytest.fixture(scope="session")
def bounce_corpus(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """flufl.bounce's test data folder, from its sdist (downloaded once, kept in pytest's
    cache). Offline: skipped for a newcomer without PostgreSQL, a failure in CI. Each
    xdist worker may download and unpack it at the same time: each does so in a folder of
    its own, then moves the whole into place."""
    kept = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
    cache = Path(kept.mkdir("flufl-bounce")) if kept else tmp_path_factory.mktemp("flufl")
    sdist = cache / f"flufl_bounce-{FLUFL_BOUNCE_VERSION}.tar.gz"
    if not sdist.exists():
        mine = Path(tempfile.mkdtemp(dir=cache))
        try:
            # Its address on PyPI's file host (from PyPI's index); the hash below vouches
            # for what came. `pip download` took 2-30 s: an sdist's metadata is built.
            answer = httpx.get(FLUFL_BOUNCE_URL, timeout=120, follow_redirects=True)
            answer.raise_for_status()
            (mine / sdist.name).write_bytes(answer.content)
            (mine / sdist.name).replace(sdist)
        except httpx.HTTPError as error:
            reason = (
                f"the bounce corpus (flufl.bounce {FLUFL_BOUNCE_VERSION} sdist) could not be "
                f"downloaded from PyPI: {error}"
            )
            if not os.environ.get(POSTGRES_ENV):
                pytest.skip(reason + f" (offline without {POSTGRES_ENV}: skipped; CI fails)")
            pytest.fail(reason)
        finally:
            shutil.rmtree(mine)
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    assert digest == FLUFL_BOUNCE_SHA256, f"{sdist} is not the published sdist ({digest})"
    folder = cache / f"flufl_bounce-{FLUFL_BOUNCE_VERSION}"
    data = folder / "tests" / "data"
    if not data.is_dir():
        mine = Path(tempfile.mkdtemp(dir=cache))
        with tarfile.open(sdist) as archive:
            members = [m for m in archive.getmembers() if "/tests/data/" in m.name]
            archive.extractall(mine, members=members, filter="data")
        try:
            (mine / folder.name).rename(folder)
        except OSError:  # another worker's, as whole, is there already
            assert data.is_dir()
        shutil.rmtree(mine)
    return data


@dataclass
class CorpusBounce:
    name: str
    raw: bytes
    permanent: list[str]
    temporary: list[str]


def corpus(folder: Path) -> list[CorpusBounce]:
    """Each message, with what flufl.bounce itself finds in it."""
    found = []
    for path in sorted(folder.glob("*.txt")):
        raw = path.read_bytes()
        temporary, permanent = all_failures(email_module.message_from_bytes(raw))
        found.append(
            CorpusBounce(
                path.name,
                raw,
                sorted({a.decode().lower() for a in permanent}),
                sorted({a.decode().lower() for a in temporary - permanent}),
            )
        )
    return found


def rows(services: Services, sql: str, **params: Any) -> list[Any]:
    with services.db.read() as conn:
        return list(conn.execute(text(sql), params).all())


def test_the_corpus_of_real_bounces(
    inbound: tuple[Services, int, SmtpPeer], clock: SimulatedClock, bounce_corpus: Path
) -> None:
    """Every message of the corpus, sent to the inbound endpoint against real messages
    sent to the addresses it names: each address flufl.bounce finds failed for good is
    barred (hard) or counted (soft) by our rule; delays and the rest bar nothing and are
    kept with their reason. Each message is tried on its own: 31 days apart (past the soft
    window), its suppressions lifted after. We send one message per address, so a
    bounce that names several addresses stands for one bounce per message: it is sent to
    the signed return path of each (a tag vouches only for its own message's address; the
    others it names are recorded as not acted on)."""
    services, port, _ = inbound
    messages = corpus(bounce_corpus)
    assert len(messages) == 117
    counts = dict.fromkeys(("hard", "soft", "unsendable", "delay"), 0)
    for message in messages:
        clock.advance_ms(31 * DAY)
        sent: dict[str, int] = {}
        for address in [*message.permanent, *message.temporary]:
            try:
                check_email(address)
            except BadEmail:
                counts["unsendable"] += 1  # never an address of ours: e.g. david...@gmail.com
                continue
            sent[address] = send_email(services, address)
        tagged: list[str | None] = list(sent) or [None]
        expected: list[str] = []
        for own in tagged:
            to = tag_address(services, "bounces", sent[own]) if own else "postmaster@maison.example"
            deliver_to(port, to, re.sub(rb"\r?\n", b"\r\n", message.raw))  # on the wire: CRLF
            expected += ["delay"] * len(message.temporary)
            for address in message.permanent:
                if address in sent and address != own:
                    expected.append("address_only")  # its own tag has it counted
                elif address not in sent:  # a report about an address never written to
                    expected.append("other_address" if own else "unknown_message")
        for address, outbox_id in sent.items():
            [(state, error)] = rows(
                services, "SELECT state, error FROM outbox WHERE id = :i", i=outbox_id
            )
            found = rows(
                services, "SELECT kind, source FROM bounces WHERE outbox_id = :i", i=outbox_id
            )
            barred = rows(
                services,
                "SELECT source, outbox_id FROM suppressions WHERE address = :a",
                a=address,
            )
            if address in message.temporary:
                assert (state, found, barred) == ("sent", [], []), message.name
                continue
            assert state == "failed", message.name
            if not found:  # refused our sending setup: counted against no address
                assert "about our sending setup, not the address" in error, message.name
                assert barred == [], message.name
                counts["sender"] = counts.get("sender", 0) + 1
                continue
            [(kind, source)] = found
            assert source == "bounce message"
            counts[kind] += 1
            if kind == "hard":
                assert [tuple(b) for b in barred] == [("bounce message", outbox_id)], message.name
                services.delivery.lift_suppression("email", address, "test", "next message")
            else:
                assert barred == [], message.name
        codes = [
            row[0]
            for row in rows(
                services,
                "SELECT code FROM inbound_ignored WHERE received_at = :now ORDER BY id",
                now=clock.now_ms(),
            )
        ]
        if message.permanent or message.temporary:
            assert sorted(codes) == sorted(expected), (message.name, codes)
            counts["delay"] += len(message.temporary)
        else:
            [code] = codes
            counts[code] = counts.get(code, 0) + 1
    assert counts == {
        "hard": 68,
        "soft": 54,
        "unsendable": 1,
        "delay": 11,
        "auto_reply": 3,
        "not_understood": 2,
    }
    assert rows(services, "SELECT count(*) FROM suppressions")[0][0] == 0


# ---- one rule, soft bounces counted ------------------------------------------------------


def soft_dsn(recipient: str, status: str, diagnostic: str) -> bytes:
    return dsn(recipient, "x@elsewhere", status=status, diagnostic=diagnostic)


def test_a_full_mailbox_alone_does_not_bar_three_soft_bounces_do(
    inbound: tuple[Services, int, SmtpPeer], clock: SimulatedClock
) -> None:
    services, port, peer = inbound
    address = "ana@example.com"
    soft = [
        ("5.2.2", "smtp; 552 5.2.2 <{r}>: mailbox full"),
        ("5.7.1", "smtp; 550-5.7.1 this message is likely unsolicited mail"),
        ("4.4.7", "smtp; 421 4.4.7 message expired in queue: connection timed out"),
    ]
    first = send_email(services, address)
    deliver_to(port, tag_address(services, "bounces", first), soft_dsn(address, *soft[0]))
    [message] = [m for m in outbox(services) if m["id"] == f"msg_{first}"]
    assert message["state"] == "failed" and "soft bounce: mailbox full" in message["error"]
    assert rows(services, "SELECT * FROM suppressions") == []
    # The same report again counts once: one bounce per message.
    deliver_to(port, tag_address(services, "bounces", first), soft_dsn(address, *soft[0]))
    assert rows(services, "SELECT kind FROM bounces") == [("soft",)]
    [again] = rows(services, "SELECT code, outbox_id FROM inbound_ignored")
    assert tuple(again) == ("already_failed", first)
    # A soft bounce older than the window no longer counts.
    clock.advance_ms(31 * DAY)
    for status, diagnostic in soft[1:]:
        outbox_id = send_email(services, address)
        assert peer.received[-1].recipients == [address]  # not barred: it went out
        deliver_to(
            port, tag_address(services, "bounces", outbox_id), soft_dsn(address, status, diagnostic)
        )
    assert rows(services, "SELECT * FROM suppressions") == []
    clock.advance_ms(DAY)
    third = send_email(services, address)
    deliver_to(port, tag_address(services, "bounces", third), soft_dsn(address, *soft[0]))
    [(reason, source, outbox_id)] = rows(
        services, "SELECT reason, source, outbox_id FROM suppressions WHERE address = :a", a=address
    )
    assert reason.startswith("3 soft bounces within 30 days; the last: bounce: 5.2.2")
    assert (source, outbox_id) == ("soft bounces", third)


def test_the_soft_bounce_limit_is_a_setting(settings: Settings) -> None:
    from parcours.runtime.settings import SettingsError

    channels = {"email": {"provider": "sandbox", "soft_bounce_limit": 0}}
    with pytest.raises(SettingsError, match=r"channels\.email\.soft_bounce_limit must be a whole"):
        Services.open(settings.with_overrides(channels=channels))
    channels = {"email": {"soft_bounce_limit": 5, "soft_bounce_window_days": 10}}
    services = Services.open(settings.with_overrides(channels=channels))
    try:
        rule = services.delivery.bounce_rule
        assert (rule.soft_limit, rule.soft_window_days) == (5, 10)
    finally:
        services.close()


# ---- what is not acted on ----------------------------------------------------------------


def ignored(services: Services) -> list[dict[str, Any]]:
    with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
        answer = client.get("/api/inbound-email", headers=admin_headers())
        assert answer.status_code == 200, answer.text
        return list(reversed(answer.json()["messages"]))


def reply_from(sender: str, to: str, body: str, **headers: str) -> bytes:
    extra = "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items())
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: Re: Welcome\r\n{extra}"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("headers", "subject_reason"),
    [
        ({"Auto_Submitted": "auto-replied"}, "Auto-Submitted: auto-replied"),
        ({"X_Autoreply": "yes"}, "x-autoreply"),
        ({"Precedence": "bulk"}, "Precedence: bulk"),
        ({"Precedence": "junk"}, "Precedence: junk"),
        ({"Subject_": "x"}, "out-of-office"),
    ],
)
def test_an_auto_reply_is_never_the_customers_message(
    inbound: tuple[Services, int, SmtpPeer], headers: dict[str, str], subject_reason: str
) -> None:
    services, port, _ = inbound
    outbox_id = send_email(services, "ana@example.com")
    reply_to = tag_address(services, "reply", outbox_id)
    raw = reply_from("Ana <ana@example.com>", reply_to, "Je suis absente jusqu'au 3.", **headers)
    if "Subject_" in headers:
        raw = raw.replace(b"Subject: Re: Welcome", b"Subject: Out of Office: Welcome")
    deliver_to(port, reply_to, raw, sender="ana@example.com")
    assert events_named(services, "Message Received") == []
    [kept] = ignored(services)
    assert kept["code"] == "auto_reply" and subject_reason in kept["reason"]
    assert (kept["message"], kept["to"], kept["from"]) == (
        f"msg_{outbox_id}",
        reply_to,
        "ana@example.com",
    )


def test_spam_on_the_reply_address_is_not_the_customers_message(
    inbound: tuple[Services, int, SmtpPeer],
) -> None:
    services, port, _ = inbound
    outbox_id = send_email(services, "ana@example.com")
    reply_to = tag_address(services, "reply", outbox_id)
    stranger = reply_from("Promo <deals@spam.example>", reply_to, "Cheap watches")
    deliver_to(port, reply_to, stranger, sender="deals@spam.example")
    flagged = reply_from("Ana <ana@example.com>", reply_to, "Buy now", X_Spam_Flag="YES")
    deliver_to(port, reply_to, flagged, sender="ana@example.com")
    genuine = reply_from("Ana <ANA@example.com>", reply_to, "Merci !")
    deliver_to(port, reply_to, genuine, sender="ana@example.com")
    assert [e["text"] for e in events_named(services, "Message Received")] == ["Merci !"]
    assert [(i["code"], i["from"]) for i in ignored(services)] == [
        ("not_the_customer", "deals@spam.example"),
        ("spam", "ana@example.com"),
    ]


def test_a_customers_reply_that_reads_like_a_bounce_stays_theirs(
    inbound: tuple[Services, int, SmtpPeer],
) -> None:
    services, port, _ = inbound
    outbox_id = send_email(services, "ana@example.com")
    reply_to = tag_address(services, "reply", outbox_id)
    text_ = "Mon amie a eu 'User unknown' avec bob@example.org. Où est mon colis ?"
    raw = reply_from("Ana <ana@example.com>", reply_to, text_)
    raw = raw.replace(b"Subject: Re: Welcome", b"Subject: Absence de colis")
    deliver_to(port, reply_to, raw, sender="ana@example.com")
    assert [e["text"] for e in events_named(services, "Message Received")] == [text_]
    assert ignored(services) == [] and rows(services, "SELECT * FROM bounces") == []


def test_inbound_mail_not_acted_on_is_kept_with_its_reason(
    inbound: tuple[Services, int, SmtpPeer],
) -> None:
    services, port, _ = inbound
    outbox_id = send_email(services, "ana@example.com")
    bounces_to = tag_address(services, "bounces", outbox_id)
    deliver_to(port, bounces_to, dsn("ana@example.com", "x@y", "4.2.2", "delayed"))
    deliver_to(port, "postmaster@maison.example", dsn("nobody@example.org", "x@y"))
    deliver_to(port, bounces_to, b"Subject: hello\r\n\r\nJust saying hello.\r\n")
    kept = ignored(services)
    assert [(i["code"], i["message"], i["to"]) for i in kept] == [
        ("delay", f"msg_{outbox_id}", bounces_to),
        ("unknown_message", None, "postmaster@maison.example"),
        ("not_understood", f"msg_{outbox_id}", bounces_to),
    ]
    assert "delay warning for ana@example.com" in kept[0]["reason"]
    assert "a bounce about nobody@example.org that matches no email of ours" in kept[1]["reason"]
    assert kept[1]["subject"] == "Undelivered Mail Returned to Sender"
    # Nothing changed: the message stays sent, the address is not barred.
    [message] = outbox(services)
    assert message["state"] == "sent"
    assert rows(services, "SELECT * FROM suppressions") == []
    with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
        page = client.get("/api/inbound-email?limit=1&code=delay", headers=admin_headers()).json()
        assert [m["code"] for m in page["messages"]] == ["delay"]
        assert page["next"] == f"/api/inbound-email?limit=1&before={kept[0]['id']}&code=delay"
        assert client.get("/api/inbound-email").status_code == 401
        refused = client.get("/api/inbound-email?limit=0", headers=admin_headers())
        assert refused.status_code == 400 and refused.json()["error"]["field"] == "limit"


def test_a_bounce_naming_another_address_than_the_tagged_message_is_not_its(
    inbound: tuple[Services, int, SmtpPeer],
) -> None:
    """A tag vouches for its own message only: sent to the return path of a message to
    ana (whom anyone she forwards her mail to can read), a bounce for bob's address fails
    neither message, and the address it names alone is not enough to fail bob's (anyone
    can write an address): both are kept with why."""
    services, port, _ = inbound
    ana = send_email(services, "ana@example.com")
    bob = send_email(services, "bob@example.com")
    deliver_to(port, tag_address(services, "bounces", ana), dsn("bob@example.com", "x@y"))
    deliver_to(port, tag_address(services, "bounces", ana), dsn("cyd@example.net", "x@y"))
    states = {m["id"]: m["state"] for m in outbox(services)}
    assert (states[f"msg_{ana}"], states[f"msg_{bob}"]) == ("sent", "sent")
    assert rows(services, "SELECT * FROM suppressions") == []
    assert rows(services, "SELECT * FROM bounces") == []
    kept = ignored(services)
    assert [(i["code"], i["message"]) for i in kept] == [
        ("address_only", f"msg_{bob}"),
        ("other_address", f"msg_{ana}"),
    ]
    assert "an address alone can be written by anyone" in kept[0]["reason"]


# ---- forged reports ----------------------------------------------------------------------


def test_a_forged_complaint_changes_nothing_and_is_kept_with_why(
    inbound: tuple[Services, int, SmtpPeer],
) -> None:
    """Ids are sequential, so anyone could write `bounces+N@` for every N: a complaint
    whose tag carries no MAC or a wrong one, or names the message only by the Message-ID
    it would have had before Message-IDs were signed, withdraws no consent and is kept as
    not acted on; the same complaint with the message's own tag withdraws it."""
    services, port, peer = inbound
    publish(services, journey("{channel: email, template: welcome}"))
    opt_in(services, "ana")
    track(services, "ana", "Go")
    [message] = outbox(services)
    outbox_id = int(message["id"][4:])
    [key] = rows(services, "SELECT idempotency_key FROM outbox WHERE id = :i", i=outbox_id)
    guessed = unsigned_message_id(key[0], "maison.example").strip("<>")
    assert peer.received[0].message["Message-ID"] != f"<{guessed}>"  # not the guessable form
    wrong = f"bounces+{outbox_id}-aaaaaaaaaaaa@maison.example"
    deliver_to(port, f"bounces+{outbox_id}@maison.example", arf("ana@example.com", "x@y"))
    deliver_to(port, wrong, arf("ana@example.com", "x@y"))
    quoted = arf("ana@example.com", guessed).replace(
        b"Version: 1\r\n", f"Original-Mail-From: <bounces+{outbox_id}@maison.example>\r\n".encode()
    )
    deliver_to(port, "postmaster@maison.example", quoted)
    assert consent_status(services, "ana", "email") == "granted"
    assert events_named(services, "Message Complained") == []
    kept = ignored(services)
    assert [(i["code"], i["message"], i["to"]) for i in kept] == [
        ("bad_tag", None, f"bounces+{outbox_id}@maison.example"),
        ("bad_tag", None, wrong),
        ("bad_tag", None, "postmaster@maison.example"),
    ]
    assert f"its tag (+{outbox_id}@) is unsigned" in kept[0]["reason"]
    assert "carries a wrong signature" in kept[1]["reason"]
    # The message's own tag: the complaint is the recipient's, and it counts.
    deliver_to(port, tag_address(services, "bounces", outbox_id), arf("ana@example.com", "x@y"))
    assert consent_status(services, "ana", "email") == "withdrawn"


def test_a_forged_bounce_naming_an_address_counts_and_bars_nothing(
    inbound: tuple[Services, int, SmtpPeer],
) -> None:
    """A bounce sent to postmaster@ naming an address we just wrote to, or to a tag with a
    wrong MAC, fails no message and counts nothing against the address; a reply to a
    forged tag is no message of the customer's."""
    services, port, _ = inbound
    outbox_id = send_email(services, "ana@example.com")
    deliver_to(port, "postmaster@maison.example", dsn("ana@example.com", "x@y"))
    full = soft_dsn("ana@example.com", "5.2.2", "smtp; 552 5.2.2 mailbox full")
    for _ in range(3):
        deliver_to(port, f"bounces+{outbox_id}-bbbbbbbbbbbb@maison.example", full)
    forged_reply = f"reply+{outbox_id}@maison.example"
    raw = reply_from("Ana <ana@example.com>", forged_reply, "Supprimez mon compte.")
    deliver_to(port, forged_reply, raw, sender="ana@example.com")
    [message] = outbox(services)
    assert message["state"] == "sent"
    assert rows(services, "SELECT * FROM bounces") == []
    assert rows(services, "SELECT * FROM suppressions") == []
    assert events_named(services, "Message Received") == []
    codes = [(i["code"], i["message"]) for i in ignored(services)]
    assert codes == [("address_only", f"msg_{outbox_id}")] + [("bad_tag", None)] * 4


def test_unsigned_tags_count_only_for_messages_sent_before_signing_and_for_14_days(
    inbound: tuple[Services, int, SmtpPeer], clock: SimulatedClock
) -> None:
    """The messages sent before tags were signed (numbered below the id migration 0018
    kept) went out with `bounces+N@`: a bounce to such a tag counts within 14 days of the
    send, never for a message sent since, never later."""
    services, port, _ = inbound
    before = send_email(services, "ana@example.com")
    since = send_email(services, "bob@example.com")

    def signed_from(first_signed: int) -> None:
        with services.db.write() as conn:
            conn.execute(text("DELETE FROM instance_secrets WHERE name = :n"), {"n": SIGNED})
            conn.execute(
                text("INSERT INTO instance_secrets VALUES (:n, :v, 0)"),
                {"n": SIGNED, "v": str(first_signed)},
            )

    def states() -> list[str]:
        return [m["state"] for m in sorted(outbox(services), key=lambda m: int(m["id"][4:]))]

    signed_from(since)
    deliver_to(port, f"bounces+{before}@maison.example", dsn("ana@example.com", "x@y"))
    deliver_to(port, f"bounces+{since}@maison.example", dsn("bob@example.com", "x@y"))
    assert states() == ["failed", "sent"]
    signed_from(since + 1)
    clock.advance_ms(15 * DAY)
    deliver_to(port, f"bounces+{since}@maison.example", dsn("bob@example.com", "x@y"))
    assert states() == ["failed", "sent"]
    reasons = [i["reason"] for i in ignored(services)]
    assert len(reasons) == 2
    assert f"msg_{since} went out with a signed one" in reasons[0]
    assert "count only within 14 days of the send" in reasons[1]
    # A signed tag does not expire.
    deliver_to(port, tag_address(services, "bounces", since), dsn("bob@example.com", "x@y"))
    assert states() == ["failed", "failed"]


def test_tags_and_message_ids_are_signed() -> None:
    tags = EmailTags(b"k" * 32, signed_from=10)
    tag = tags.tag(42)
    assert re.fullmatch(r"42-[a-z2-7]{12}", tag)
    mac = tag.partition("-")[2]
    assert tags.valid(42, mac) and tags.valid(42, mac.upper())  # servers may change the case
    assert not tags.valid(43, mac) and not tags.valid(42, None)
    assert not EmailTags(b"j" * 32).valid(42, mac)  # another installation's key
    assert tag_of(f"bounces+{tag}@maison.example") == (42, mac)
    assert tag_of("bounces+42@maison.example") == (42, None)
    message_id = tags.message_id("run:1:welcome:0", 42, "maison.example")
    assert re.fullmatch(r"<[0-9a-f]{32}@maison\.example>", message_id)
    assert message_id != unsigned_message_id("run:1:welcome:0", "maison.example")
    assert message_id != EmailTags(b"j" * 32).message_id("run:1:welcome:0", 42, "maison.example")
    # A message sent before signing keeps its Message-ID: a re-send is the same message.
    assert tags.message_id("run:1:welcome:0", 9, "maison.example") == unsigned_message_id(
        "run:1:welcome:0", "maison.example"
    )


def test_a_bounce_about_our_sending_setup_fails_the_message_and_counts_nothing(
    inbound: tuple[Services, int, SmtpPeer],
) -> None:
    """Gmail refuses our DMARC, Spamhaus lists our IP: the message fails (the fallback
    takes over) with the reason, and no address is counted against or barred."""
    services, port, _ = inbound
    errors_before = _sender_errors()
    replies = [
        (
            "5.7.26",
            "smtp; 550-5.7.26 Unauthenticated email from maison.example is not "
            "accepted due to domain's DMARC policy",
        ),
        (
            "5.7.1",
            "smtp; 554 5.7.1 Service unavailable; Client host [192.0.2.10] blocked "
            "using zen.spamhaus.org",
        ),
        ("5.7.606", "smtp; 550 5.7.606 Access denied, banned sending IP [192.0.2.10]"),
    ]
    for status, diagnostic in replies:
        outbox_id = send_email(services, "ana@example.com")
        bounce = dsn("ana@example.com", "x@y", status=status, diagnostic=diagnostic)
        deliver_to(port, tag_address(services, "bounces", outbox_id), bounce)
    messages = outbox(services)
    assert [m["state"] for m in messages] == ["failed"] * 3
    assert all("about our sending setup, not the address" in m["error"] for m in messages)
    assert rows(services, "SELECT * FROM bounces") == []
    assert rows(services, "SELECT * FROM suppressions") == []
    assert _sender_errors() - errors_before == 3


def _sender_errors() -> float:
    from prometheus_client import REGISTRY

    return (
        REGISTRY.get_sample_value(
            "parcours_provider_errors_total", {"provider": "smtp", "kind": "sender"}
        )
        or 0.0
    )


# ---- at most one bounce per message ----------------------------------------------------


def test_two_reports_about_one_message_at_once_count_one_bounce(postgres_url: str) -> None:
    """Two reports about one message recorded at the same moment on PostgreSQL (two
    inbound connections, or a bounce message and a webhook): the second waits on the
    first's row and counts nothing."""
    truncate_all(postgres_url)
    db = Database(postgres_url)
    rule = BounceRule()

    def record(conn: Any) -> str | None:
        return record_bounce(
            conn,
            rule,
            address="ana@example.com",
            kind="soft",
            reason="552 5.2.2 mailbox full",
            source="bounce message",
            customer_id=1,
            outbox_id=7,
            now=START,
        )

    results: dict[str, str | None] = {}

    def second() -> None:
        with db.write() as conn:
            results["second"] = record(conn)

    try:
        with db.write() as conn:
            results["first"] = record(conn)
            thread = threading.Thread(target=second)
            thread.start()
            # The first transaction is still open: the second report waits for it to end
            # (or, without the unique index, runs through at once).
            with psycopg.connect(postgres_url, autocommit=True) as watcher:

                def waiting_or_through() -> bool:
                    [waiting] = watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock'"
                    ).fetchone() or (0,)
                    return not thread.is_alive() or waiting > 0

                wait_until(waiting_or_through, 30, every=0.01, what="the second report to wait")
        thread.join()
        with db.read() as conn:
            counted = conn.execute(text("SELECT count(*) FROM bounces")).scalar_one()
    finally:
        db.dispose()
    assert (counted, results) == (1, {"first": None, "second": None})


def test_the_migration_keeps_one_bounce_per_message_and_where_signing_starts(
    tmp_path: Path,
) -> None:
    """An installation upgraded with messages already sent: unsigned tags stay readable
    for those (below the id kept), and the double counts a race left are undone."""
    from alembic import command

    from parcours.runtime.db import alembic_config, migrate

    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        command.upgrade(alembic_config(db), "0017")
        with db.write() as conn:
            for n in (1, 2, 3):
                conn.execute(
                    text(
                        "INSERT INTO outbox (idempotency_key, customer_id, channel, template, "
                        "purpose, state, created_at) VALUES (:k, 1, 'email', 'note', "
                        "'marketing', 'sent', 0)"
                    ),
                    {"k": f"k{n}"},
                )
            for outbox_id in (2, 2, 3):
                conn.execute(
                    text(
                        "INSERT INTO bounces (channel, address, outbox_id, kind, reason, "
                        "source, at) VALUES ('email', 'a@b.c', :o, 'soft', 'full', 'smtp', 0)"
                    ),
                    {"o": outbox_id},
                )
        migrate(db)
        with db.read() as conn:
            kept = conn.execute(text("SELECT id, outbox_id FROM bounces ORDER BY id")).all()
        tags = EmailTags.load(db, START)
    finally:
        db.dispose()
    assert [tuple(row) for row in kept] == [(1, 2), (3, 3)]
    assert tags.signed_from == 4 and tags.before_signing(3) and not tags.before_signing(4)


# ---- suppressions in the admin API -------------------------------------------------------


def test_suppressions_are_listed_and_lifted_through_the_api(
    inbound: tuple[Services, int, SmtpPeer],
) -> None:
    services, port, peer = inbound
    outbox_id = send_email(services, "ana@example.com")
    deliver_to(port, tag_address(services, "bounces", outbox_id), dsn("ana@example.com", "x@y"))
    customer = f"cus_{customer_of(services, 'ana@example.com')}"
    with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
        assert client.get("/api/suppressions").status_code == 401
        page = client.get("/api/suppressions?channel=email", headers=admin_headers()).json()
        [listed] = page["suppressions"]
        assert page["next"] is None
        assert listed["address"] == "ana@example.com" and listed["source"] == "bounce message"
        assert listed["reason"].startswith("bounce: 5.1.1")
        assert listed["message"] == f"msg_{outbox_id}" and listed["customer"] == customer
        assert listed["created_at"].endswith("Z")
        by_customer = client.get(f"/api/suppressions?customer={customer}", headers=admin_headers())
        assert [s["address"] for s in by_customer.json()["suppressions"]] == ["ana@example.com"]
        history = client.get("/api/bounces?address=ANA@example.com", headers=admin_headers())
        [bounce] = history.json()["bounces"]
        assert (bounce["kind"], bounce["message"]) == ("hard", f"msg_{outbox_id}")
        assert history.json()["soft_limit"] == 3
        lift = {"channel": "email", "address": "ana@example.com", "note": "typo fixed"}
        bad = client.post(
            "/api/suppressions/lift", json={**lift, "address": "a@@b.c"}, headers=admin_headers()
        )
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "address"
        no_note = client.post(
            "/api/suppressions/lift", json={**lift, "note": " "}, headers=admin_headers()
        )
        assert no_note.status_code == 400 and no_note.json()["error"]["field"] == "note"
        done = client.post("/api/suppressions/lift", json=lift, headers=admin_headers())
        assert done.status_code == 200, done.text
        assert done.json()["lifted"]["address"] == "ana@example.com"
        assert done.json()["note"] == "typo fixed"
        again = client.post("/api/suppressions/lift", json=lift, headers=admin_headers())
        assert again.status_code == 404
        after = client.get("/api/suppressions", headers=admin_headers()).json()
        assert after["suppressions"] == []
        history = client.get(f"/api/bounces?customer={customer}", headers=admin_headers())
        assert history.json()["bounces"][0]["cleared_at"] is not None
    [audit] = events_named(services, "Suppression Lifted")
    assert audit["address"] == "ana@example.com" and audit["note"] == "typo fixed"
    assert audit["lifted_by"] and audit["reason"].startswith("bounce: 5.1.1")
    send_email(services, "ana@example.com")
    assert peer.received[-1].recipients == ["ana@example.com"]  # written to again


def test_suppressions_page_with_a_cursor(inbound: tuple[Services, int, SmtpPeer]) -> None:
    services, port, _ = inbound
    for name in ("ana", "bob", "cyd"):
        outbox_id = send_email(services, f"{name}@example.com")
        deliver_to(
            port, tag_address(services, "bounces", outbox_id), dsn(f"{name}@example.com", "x@y")
        )
    seen: list[str] = []
    with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
        url: str | None = "/api/suppressions?limit=2"
        while url is not None:
            page = client.get(url, headers=admin_headers()).json()
            seen += [s["address"] for s in page["suppressions"]]
            url = page["next"]
        refused = client.get("/api/suppressions?before=nonsense", headers=admin_headers())
        assert refused.status_code == 400 and refused.json()["error"]["field"] == "before"
    assert sorted(seen) == ["ana@example.com", "bob@example.com", "cyd@example.com"]
    assert len(seen) == 3
