"""Email through Postmark's HTTP API and its webhooks, against a loopback peer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from parcours.runtime.clock import SimulatedClock
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.conftest import LiveServer, free_port
from tests.peers import PostmarkPeer
from tests.test_channels import CERTAIN, consent_status, events_named, journey, outbox, publish
from tests.test_journeys_engine import opt_in, track


@pytest.fixture
def wired(
    settings: Settings, clock: SimulatedClock
) -> Iterator[tuple[Services, str, PostmarkPeer]]:
    with PostmarkPeer() as peer:
        port = free_port()
        channels = {
            "sandbox": CERTAIN,
            "email": {
                "provider": "postmark",
                "server_token": peer.token,
                "from_address": "news@maison.example",
                "from_name": "Maison",
                "webhook_user": "pm",
                "webhook_password": "hook-secret",
                "api_base": peer.url,
            },
        }
        services = Services.open(
            settings.with_overrides(channels=channels, public_url=f"http://127.0.0.1:{port}"),
            clock=clock,
        )
        try:
            with LiveServer(services, port):
                yield services, f"http://127.0.0.1:{port}/webhooks/postmark", peer
        finally:
            services.close()


def test_email_through_postmark_and_its_webhooks(wired: tuple[Services, str, PostmarkPeer]) -> None:
    services, hook, peer = wired
    publish(services, journey("{channel: email, template: welcome, fallback: [sms]}"))
    for user in ("ana", "bob", "cyd"):
        opt_in(services, user)
    peer.inactive.add("cyd@example.com")
    for user in ("ana", "bob", "cyd"):
        track(services, user, "Go")
    sent = {m["To"]: m for m in peer.messages}
    ana = sent["ana@example.com"]
    assert ana["MessageStream"] == "broadcast"  # marketing goes on the broadcast stream
    assert {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"} in ana[
        "Headers"
    ]
    assert ana["TrackOpens"] is False and ana["Subject"] == "About Parcours demo shop"
    by_to = {m["to"]: m for m in outbox(services)}
    assert by_to["cyd@example.com"]["state"] == "failed"  # 406: inactive recipient
    assert by_to[next(k for k in by_to if k.startswith("+33"))]["channel"] == "sms"

    def record(kind: str, to: str, **extra: Any) -> dict[str, Any]:
        message = sent[to]
        return {
            "RecordType": kind,
            "MessageID": message["MessageID"],
            "Email": to,
            "Metadata": message["Metadata"],
            **extra,
        }

    assert (
        peer.webhook(hook, record("Delivery", "ana@example.com"), "pm", "hook-secret").status_code
        == 200
    )
    bounce = record(
        "Bounce",
        "bob@example.com",
        Type="HardBounce",
        Description="The server was unable to deliver your message",
    )
    assert peer.webhook(hook, bounce, "pm", "hook-secret").status_code == 200
    complaint = record("SpamComplaint", "ana@example.com")
    assert peer.webhook(hook, complaint, "pm", "wrong").status_code == 401
    assert peer.webhook(hook, complaint, "pm", "hook-secret").status_code == 200
    by_to = {m["to"]: m for m in outbox(services)}
    assert by_to["ana@example.com"]["status"] == "delivered"
    assert by_to["bob@example.com"]["state"] == "failed"
    assert by_to["bob@example.com"]["error"].startswith("bounce: HardBounce")
    assert consent_status(services, "ana", "email") == "withdrawn"
    assert [c["message_id"] for c in events_named(services, "Message Complained")] == [
        by_to["ana@example.com"]["id"]
    ]


def test_postmark_bounces_follow_the_one_bounce_rule(
    wired: tuple[Services, str, PostmarkPeer],
) -> None:
    """A soft bounce, a block or a spam notification fails the message and is counted,
    without barring the address; a transient one (Postmark still trying) changes nothing;
    an "Undeliverable" is read from its text; a DMARC refusal, or a block of our sending IP,
    fails the message and counts against no address."""
    from sqlalchemy import text

    services, hook, peer = wired
    publish(services, journey("{channel: email, template: welcome}"))
    kinds = {
        "ana": ("SoftBounce", "The server could not temporarily deliver your message"),
        "bob": ("SpamNotification", "The message was delivered, but was flagged as spam"),
        "cyd": ("Transient", "Delivery delayed, Postmark retries"),
        "dan": ("Undeliverable", "550 5.1.1 The email account does not exist"),
        # About our domain and IP, not the address: fails the message, counts nothing.
        "eve": ("DMARCPolicy", "The message was rejected by the DMARC policy of the domain"),
        "fay": ("Blocked", "554 5.7.1 Client host [192.0.2.10] blocked using zen.spamhaus.org"),
    }
    for user in kinds:
        opt_in(services, user)
        track(services, user, "Go")
    sent = {m["To"]: m for m in peer.messages}
    for user, (kind, description) in kinds.items():
        message = sent[f"{user}@example.com"]
        record = {
            "RecordType": "Bounce",
            "Type": kind,
            "Description": description,
            "MessageID": message["MessageID"],
            "Email": f"{user}@example.com",
            "Metadata": message["Metadata"],
        }
        assert peer.webhook(hook, record, "pm", "hook-secret").status_code == 200
    states = {m["to"]: m["state"] for m in outbox(services)}
    assert states == {
        "ana@example.com": "failed",
        "bob@example.com": "failed",
        "cyd@example.com": "sent",
        "dan@example.com": "failed",
        "eve@example.com": "failed",
        "fay@example.com": "failed",
    }
    with services.db.read() as conn:
        bounces = conn.execute(text("SELECT address, kind, source FROM bounces ORDER BY id"))
        assert [tuple(row) for row in bounces] == [
            ("ana@example.com", "soft", "postmark"),
            ("bob@example.com", "soft", "postmark"),
            ("dan@example.com", "hard", "postmark"),
        ]
        barred = conn.execute(text("SELECT address FROM suppressions")).scalars().all()
    assert barred == ["dan@example.com"]
