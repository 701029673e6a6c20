"""SMS: segments and cost, keywords, and Twilio's API and callbacks against a loopback peer
that speaks Twilio's documented formats and signs as Twilio does."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from parcours.channels.sms import Pricing, count_segments, keyword
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.conftest import LiveServer, free_port
from tests.peers import TwilioPeer
from tests.test_channels import (
    CERTAIN,
    consent_status,
    events_named,
    journey,
    outbox,
    publish,
)
from tests.test_journeys_engine import advance, opt_in, track

GSM = "Votre colis arrive demain entre 10h et 14h. Suivez-le : https://t.example/abc"


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("", "GSM-7", 0, 0),
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # the euro sign takes two septets
        ("€" * 81, "GSM-7", 162, 2),
        ("é à è ù Ç É", "GSM-7", 11, 1),  # all in the GSM alphabet
        ("ç", "UCS-2", 1, 1),  # only the capital Ç is
        ("ê" * 70, "UCS-2", 70, 1),  # ê is not
        ("ê" * 71, "UCS-2", 71, 2),
        ("ê" * 134, "UCS-2", 134, 2),
        ("ê" * 135, "UCS-2", 135, 3),
        ("🎉" * 35, "UCS-2", 70, 1),  # beyond the BMP: two code units each
        ("🎉" * 36, "UCS-2", 72, 2),
    ],
)
def test_segments(text: str, encoding: str, units: int, segments: int) -> None:
    counted = count_segments(text)
    assert (counted.encoding, counted.units, counted.segments) == (encoding, units, segments)


def test_cost_follows_the_recipient_country() -> None:
    pricing = Pricing.from_config({"prices": {"FR": "0.0725", "*": "0.10"}, "currency": "EUR"})
    french = pricing.estimate("a" * 200, "+33612345678")
    assert french.segments == 2 and Decimal(french.cost) == Decimal("0.1450")
    assert Decimal(pricing.estimate("hi", "+14155550100").cost) == Decimal("0.10")


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("STOP", "stop"),
        (" stop ", "stop"),
        ("Arrêt", "stop"),
        ("STOP SMS", "stop"),
        ("Unsubscribe", "stop"),
        ("START", "start"),
        ("help", "help"),
        ("stop please", None),
        ("Where is my parcel?", None),
    ],
)
def test_keywords(text: str, word: str | None) -> None:
    assert keyword(text) == word


@pytest.fixture
def twilio() -> Iterator[TwilioPeer]:
    with TwilioPeer() as peer:
        yield peer


@pytest.fixture
def wired(
    settings: Settings, clock: SimulatedClock, twilio: TwilioPeer
) -> Iterator[tuple[Services, str]]:
    """Parcours with Twilio as its SMS provider, served on loopback where the peer calls."""
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    channels = {
        "sandbox": CERTAIN,
        "sms": twilio.provider_settings(senders={"FR": "MAISON"}, prices={"FR": "0.0725"}),
    }
    services = Services.open(
        settings.with_overrides(channels=channels, public_url=public_url), clock=clock
    )
    try:
        with LiveServer(services, port):
            yield services, public_url
    finally:
        services.close()


def test_an_sms_goes_through_twilio_and_its_callbacks_come_back(
    wired: tuple[Services, str], twilio: TwilioPeer
) -> None:
    services, _ = wired
    publish(services, journey("{channel: sms, template: t}"))
    opt_in(services, "ana")
    track(services, "ana", "Go")
    [sent] = twilio.messages
    assert sent["From"] == "MAISON"  # the sender id for French numbers
    assert sent["To"].startswith("+336") and sent["Body"] == "Hello from Parcours demo shop"
    [message] = outbox(services)
    assert message["state"] == "sent" and message["provider"] == "twilio"
    assert message["content"]["segments"]["encoding"] == "GSM-7"
    assert message["content"]["segments"]["cost"] == "0.0725"
    assert sent["StatusCallback"].endswith(f"/webhooks/twilio/status?m={message['id'][4:]}")

    assert twilio.callback(sent, "sent").status_code == 204
    assert twilio.callback(sent, "delivered").status_code == 204
    assert outbox(services)[0]["status"] == "delivered"
    assert [e["channel"] for e in events_named(services, "Message Delivered")] == ["sms"]

    forged = dict(sent, sid="SMforged")
    assert twilio.callback(forged, "failed", "30006").status_code == 404  # not its message
    import httpx

    unsigned = httpx.post(
        sent["StatusCallback"], data={"MessageSid": sent["sid"], "MessageStatus": "failed"}
    )
    assert unsigned.status_code == 403
    assert outbox(services)[0]["status"] == "delivered"


def test_an_undelivered_sms_falls_back_and_bars_the_number(
    wired: tuple[Services, str], twilio: TwilioPeer
) -> None:
    services, _ = wired
    publish(services, journey("{channel: sms, template: t, fallback: [email]}"))
    opt_in(services, "ana")
    track(services, "ana", "Go")
    [sent] = twilio.messages
    assert twilio.callback(sent, "undelivered", "30006").status_code == 204  # a landline
    advance(services, services.clock, 2000, step=1000)  # type: ignore[arg-type]
    assert [(m["channel"], m["status"]) for m in outbox(services)] == [
        ("sms", "failed"),
        ("email", "delivered"),
    ]
    [failed] = events_named(services, "Message Failed")
    assert failed["reason"] == "Twilio undelivered 30006"
    track(services, "ana", "Go")  # the number is barred now: straight to email
    assert len(twilio.messages) == 1


def test_twilio_errors_at_send_time(wired: tuple[Services, str], twilio: TwilioPeer) -> None:
    services, _ = wired
    publish(services, journey("{channel: sms, template: t, fallback: [email]}"))
    opt_in(services, "ana")
    opt_in(services, "bob")
    ana_phone = _phone(services, "ana")
    bob_phone = _phone(services, "bob")
    twilio.errors[ana_phone] = (400, 21211, "The 'To' number is not a valid phone number.")
    twilio.errors[bob_phone] = (429, 20429, "Too Many Requests")
    track(services, "ana", "Go")
    track(services, "bob", "Go")
    by_to = {m["to"]: m for m in outbox(services)}
    assert by_to[ana_phone]["state"] == "failed"
    assert by_to[ana_phone]["error"] == "Twilio: 21211 The 'To' number is not a valid phone number."
    assert by_to["ana@example.com"]["channel"] == "email"  # the fallback
    assert by_to[bob_phone]["state"] == "pending"  # 429: tried again later
    del twilio.errors[bob_phone]
    advance(services, services.clock, 10_000, step=1000)  # type: ignore[arg-type]
    by_to = {m["to"]: m for m in outbox(services)}
    assert by_to[bob_phone]["state"] == "sent" and by_to[bob_phone]["attempts"] == 2
    assert "bob@example.com" not in by_to


def _phone(services: Services, user: str) -> str:
    from tests.test_journeys_engine import contact_traits

    return contact_traits(user)["phone"]


def test_stop_and_start_by_text_update_consent_at_once(
    wired: tuple[Services, str], twilio: TwilioPeer
) -> None:
    services, base = wired
    opt_in(services, "ana")
    phone = _phone(services, "ana")
    assert consent_status(services, "ana", "sms") == "granted"
    assert twilio.incoming(base, phone, "Stop", "SM1").status_code == 200
    assert consent_status(services, "ana", "sms") == "withdrawn"
    assert twilio.incoming(base, phone, "Stop", "SM1").status_code == 200  # retried: once
    assert twilio.incoming(base, phone, "Where is my parcel?", "SM2").status_code == 200
    received = events_named(services, "Message Received")
    assert [(r["text"], r["keyword"]) for r in received] == [
        ("Stop", "stop"),
        ("Where is my parcel?", None),
    ]
    assert consent_status(services, "ana", "sms") == "withdrawn"
    services.clock.advance_ms(1000)  # type: ignore[attr-defined]
    assert twilio.incoming(base, phone, "START", "SM3").status_code == 200
    assert consent_status(services, "ana", "sms") == "granted"
    import httpx

    forged = httpx.post(
        f"{base}/webhooks/twilio/inbound",
        data={"From": phone, "Body": "STOP", "MessageSid": "SM9"},
        headers={"X-Twilio-Signature": "bm9wZQ=="},
    )
    assert forged.status_code == 403


def test_without_twilio_the_callbacks_say_so(client: Any) -> None:
    answer = client.post("/webhooks/twilio/status?m=1", data={"MessageStatus": "delivered"})
    assert answer.status_code == 404
    assert "Twilio is not the SMS provider" in answer.json()["error"]["message"]


def test_twilio_settings_are_checked(settings: Settings, clock: SimulatedClock) -> None:
    from parcours.runtime.settings import SettingsError

    with pytest.raises(SettingsError, match=r"channels\.sms\.account_sid is required"):
        Services.open(
            settings.with_overrides(channels={"sms": {"provider": "twilio"}}), clock=clock
        )
    with pytest.raises(SettingsError, match="give from_number, messaging_service_sid"):
        Services.open(
            settings.with_overrides(
                channels={"sms": {"provider": "twilio", "account_sid": "AC1", "auth_token": "t"}}
            ),
            clock=clock,
        )
