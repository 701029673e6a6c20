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
