"""WhatsApp through Meta's Cloud API, against a loopback peer that checks requests as Meta
documents them and signs its webhooks; and the abandoned-cart last call falling back from
WhatsApp to SMS (Twilio's peer) end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from parcours.messaging import templates
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.conftest import LiveServer, free_port
from tests.peers import MetaPeer, TwilioPeer
from tests.test_channels import CERTAIN, consent_status, events_named, journey, outbox, publish
from tests.test_journeys_engine import DAY, HOUR, advance, contact_traits, opt_in, track

CART_JOURNEY = (
    Path(__file__).resolve().parents[1] / "src/parcours/journeys/templates/abandoned-cart.yaml"
).read_text()


@pytest.fixture
def peers() -> Iterator[tuple[MetaPeer, TwilioPeer]]:
    with MetaPeer() as meta, TwilioPeer() as twilio:
        yield meta, twilio


@pytest.fixture
def wired(
    settings: Settings, clock: SimulatedClock, peers: tuple[MetaPeer, TwilioPeer]
) -> Iterator[tuple[Services, str]]:
    meta, twilio = peers
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    channels = {
        "sandbox": CERTAIN,
        "whatsapp": meta.provider_settings(),
        "sms": twilio.provider_settings(),
    }
    services = Services.open(
        settings.with_overrides(channels=channels, public_url=public_url), clock=clock
    )
    try:
        with LiveServer(services, port):
            yield services, public_url
    finally:
        services.close()


def test_the_webhook_subscription_check(wired: tuple[Services, str]) -> None:
    _, base = wired
    ok = httpx.get(
        f"{base}/webhooks/whatsapp",
        params={"hub.mode": "subscribe", "hub.verify_token": "let-me-in", "hub.challenge": "42"},
    )
    assert ok.status_code == 200 and ok.text == "42"
    wrong = httpx.get(
        f"{base}/webhooks/whatsapp",
        params={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "42"},
    )
    assert wrong.status_code == 403


def test_a_template_goes_outside_the_window_text_inside_it(
    wired: tuple[Services, str], peers: tuple[MetaPeer, TwilioPeer]
) -> None:
    services, base = wired
    meta, _ = peers
    with services.db.write() as conn:
        templates.save(
            conn,
            "reorder",
            {
                "fr": {
                    "whatsapp": {
                        "text": "Bonjour {{ customer.first_name }}, on vous en remet ?",
                        "template": "reorder_v2",
                        "language": "fr",
                        "category": "marketing",
                        "parameters": ["{{ customer.first_name }}"],
                    }
                }
            },
            "ana",
            services.clock.now_ms(),
        )
    publish(services, journey("{channel: whatsapp, template: reorder}"))
    opt_in(services, "lea", first_name="Léa", locale="fr")
    track(services, "lea", "Go")
    [first] = meta.messages
    assert first["type"] == "template"
    [queued] = outbox(services)
    assert queued["content"]["pricing"] == {
        "category": "marketing",
        "cost": "0.0859",
        "currency": "EUR",
    }
    assert first["to"] == contact_traits("lea")["phone"].lstrip("+")
    assert first["template"] == {
        "name": "reorder_v2",
        "language": {"code": "fr"},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "Léa"}]}],
    }
    # Léa answers: the 24-hour window opens, and the next message may be free-form.
    now_s = services.clock.now_ms() // 1000
    webhook = f"{base}/webhooks/whatsapp"
    assert (
        meta.incoming(
            webhook, contact_traits("lea")["phone"], "Oui !", "wamid.in1", now_s
        ).status_code
        == 200
    )
    track(services, "lea", "Go")
    second = meta.messages[1]
    assert second["type"] == "text" and second["text"]["body"] == "Bonjour Léa, on vous en remet ?"
    [received] = events_named(services, "Message Received")
    assert received["channel"] == "whatsapp" and received["text"] == "Oui !"
    # Statuses come back signed; a forged one is refused.
    assert meta.status(webhook, first, "delivered").status_code == 200
    assert meta.status(webhook, first, "read").status_code == 200
    statuses = [m["status"] for m in outbox(services)]
    assert statuses[0] == "read"
    forged = meta.incoming(webhook, "+33600000000", "STOP", "wamid.x", now_s, secret="wrong")
    assert forged.status_code == 403


def test_a_transactional_step_cannot_send_a_marketing_template(wired: tuple[Services, str]) -> None:
    services, _ = wired
    from parcours.journeys import versions as journeys

    with pytest.raises(journeys.LifecycleError, match="WhatsApp marketing template"):
        journeys.publish(
            services.db,
            journey(
                "{channel: whatsapp, template: abandoned-cart-last-call, purpose: transactional}"
            ),
            "ana",
            "ben",
            services.clock.now_ms(),
        )


def test_free_form_only_waits_for_the_window(wired: tuple[Services, str]) -> None:
    services, _ = wired
    content = {
        "whatsapp": {"text": "Hello from {{ brand.name }}"},
        "email": {"subject": "Hello", "text": "Hello"},
    }
    with services.db.write() as conn:
        templates.save(conn, "t", {"en": content}, "ana", services.clock.now_ms())
    publish(services, journey("{channel: whatsapp, template: t, fallback: [email]}"))
    opt_in(services, "ana")
    track(services, "ana", "Go")
    assert [m["channel"] for m in outbox(services)] == ["email"]
    [chosen] = events_named(services, "Channel Chosen")
    assert chosen["passed_over"][0]["reason"].startswith("outside the 24-hour WhatsApp window")


def test_stop_on_whatsapp_withdraws_whatsapp_marketing_consent(
    wired: tuple[Services, str], peers: tuple[MetaPeer, TwilioPeer]
) -> None:
    services, base = wired
    meta, _ = peers
    opt_in(services, "ana")
    phone = contact_traits("ana")["phone"]
    now_s = services.clock.now_ms() // 1000
    answer = meta.incoming(f"{base}/webhooks/whatsapp", phone, "STOP", "wamid.s1", now_s)
    assert answer.status_code == 200
    assert consent_status(services, "ana", "whatsapp") == "withdrawn"
    assert consent_status(services, "ana", "sms") == "granted"


def test_abandoned_cart_last_call_falls_back_from_whatsapp_to_sms(
    wired: tuple[Services, str], peers: tuple[MetaPeer, TwilioPeer], clock: SimulatedClock
) -> None:
    """The shipped journey, end to end: Ana agreed to WhatsApp but her message fails;
    Bob never agreed to WhatsApp; both get the last call by SMS, once."""
    services, base = wired
    meta, twilio = peers
    publish(services, CART_JOURNEY)
    opt_in(services, "ana")
    opt_in(
        services,
        "bob",
        consent={ch: {"marketing": True} for ch in ("email", "sms", "push")},
    )
    for user in ("ana", "bob"):
        track(services, user, "Cart Abandoned", cart_id=f"k-{user}", total=240)
    advance(services, clock, HOUR + DAY + HOUR, step=HOUR)
    # Ana: the WhatsApp template went; then Meta says it failed.
    [wa] = meta.messages
    assert wa["to"] == contact_traits("ana")["phone"].lstrip("+")
    assert wa["template"]["name"] == "abandoned_cart_last_call"
    assert meta.status(f"{base}/webhooks/whatsapp", wa, "failed", 131026).status_code == 200
    advance(services, clock, 2000, step=1000)
    recipients = sorted(m["To"] for m in twilio.messages)
    assert recipients == sorted([contact_traits("ana")["phone"], contact_traits("bob")["phone"]])
    fell = events_named(services, "Message Fell Back")
    assert [(f["from"], f["to"]) for f in fell] == [("whatsapp", "sms")]
    bob_choice = [c for c in events_named(services, "Channel Chosen") if c["chosen"] == "sms"]
    assert bob_choice[0]["passed_over"] == [
        {"channel": "whatsapp", "reason": "no marketing consent for whatsapp (never given)"}
    ]
    # Nobody got the last call twice, and the failed number is barred for WhatsApp only.
    last_calls = [m for m in outbox(services) if m["template"] == "abandoned-cart-last-call"]
    assert sorted((m["channel"], m["status"]) for m in last_calls) == [
        ("sms", "sent"),
        ("sms", "sent"),
        ("whatsapp", "failed"),
    ]
