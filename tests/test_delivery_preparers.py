"""The per-channel preparers delivery picks from its table (messaging/preparers.py): each
channel its own, an unknown channel refused by name, and what each does to a message."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Connection

from parcours.channels.registry import CHANNELS
from parcours.channels.sms import Pricing
from parcours.channels.whatsapp import WhatsAppPricing
from parcours.customers import profiles as customers
from parcours.messaging import choice
from parcours.messaging.links import Links, Signer
from parcours.messaging.outbox import DELIVER, QUEUE, Intent, add_intent
from parcours.messaging.preparers import (
    AsRendered,
    Draft,
    EmailPreparer,
    Prepared,
    Preparer,
    PushPreparer,
    SmsPreparer,
    UnknownChannel,
    Unsendable,
    WalletPreparer,
    WhatsAppPreparer,
    preparer_for,
    preparer_table,
)
from parcours.runtime.queue import Job
from parcours.services import Services
from tests.test_journeys_engine import opt_in

LINKS = Links(Signer(b"test-secret"), "https://parcours.example")
SMS_PRICING = Pricing({"FR": Decimal("0.07"), "*": Decimal("0.10")}, "EUR")
WHATSAPP_PRICING = WhatsAppPricing({"utility": Decimal("0.03"), "service": Decimal("0")}, "EUR")
UNSUBSCRIBE = "https://parcours.example/u/token"
# The preparers that read or write nothing are given no connection.
NO_CONNECTION: Any = None


def table() -> dict[str, Preparer]:
    return preparer_table(LINKS, SMS_PRICING, WHATSAPP_PRICING)


def draft(content: dict[str, Any], address: str | None = None) -> Draft:
    return Draft(7, 42, address, content, {"unsubscribe": UNSUBSCRIBE}, 1_800_000_000_000)


@pytest.mark.parametrize(
    ("channel", "kind"),
    [
        ("email", EmailPreparer),
        ("sms", SmsPreparer),
        ("whatsapp", WhatsAppPreparer),
        ("push", PushPreparer),
        ("wallet", WalletPreparer),
        ("chat", AsRendered),
    ],
)
def test_each_channel_gets_its_own_preparer(channel: str, kind: type) -> None:
    assert type(preparer_for(table(), channel)) is kind


def test_every_channel_a_provider_can_be_configured_for_has_a_preparer() -> None:
    assert set(table()) == set(CHANNELS)


def test_an_unknown_channel_is_refused_naming_the_channels_there_are() -> None:
    with pytest.raises(UnknownChannel) as refused:
        preparer_for(table(), "fax")
    assert str(refused.value) == (
        "no preparer for channel 'fax': delivery sends on chat, email, push, sms, wallet, whatsapp"
    )


def test_a_channel_added_to_the_table_is_picked_with_no_other_change() -> None:
    extended = {**table(), "fax": AsRendered()}
    prepared = preparer_for(extended, "fax").prepare(NO_CONNECTION, draft({"text": "Hi"}))
    assert prepared == Prepared({"text": "Hi"})


def test_email_links_go_through_the_click_redirect_except_the_unsubscribe_link() -> None:
    html = (
        '<html><body><a href="https://shop.example/cart">Cart</a>'
        f'<a href="{UNSUBSCRIBE}">Unsubscribe</a></body></html>'
    )
    prepared = table()["email"].prepare(NO_CONNECTION, draft({"subject": "Hi", "html": html}))
    assert isinstance(prepared, Prepared)
    tracked = prepared.content["html"]
    assert 'href="https://shop.example/cart"' not in tracked
    assert tracked.count('href="https://parcours.example/t/c/') == 1
    assert f'href="{UNSUBSCRIBE}"' in tracked
    assert 'src="https://parcours.example/t/o/' in tracked
    assert prepared.content["subject"] == "Hi"


def test_an_email_without_html_goes_as_rendered() -> None:
    content = {"subject": "Hi", "text": "Hello"}
    assert table()["email"].prepare(NO_CONNECTION, draft(content)) == Prepared(content)


def test_an_sms_shows_its_segments_and_cost_for_its_number() -> None:
    prepared = table()["sms"].prepare(NO_CONNECTION, draft({"text": "a" * 161}, "+33612345678"))
    assert prepared == Prepared(
        {
            "text": "a" * 161,
            "segments": {
                "encoding": "GSM-7",
                "units": 161,
                "segments": 2,
                "per_segment": 153,
                "cost": "0.14",
                "currency": "EUR",
            },
        }
    )


def test_a_push_link_goes_through_the_click_redirect() -> None:
    prepared = table()["push"].prepare(
        NO_CONNECTION, draft({"title": "Hi", "body": "Back?", "url": "https://shop.example/"})
    )
    assert isinstance(prepared, Prepared)
    assert prepared.content["url"] == LINKS.click(7, "https://shop.example/")


def test_a_chat_message_goes_as_rendered_with_nothing_to_address() -> None:
    preparer = table()["chat"]
    assert preparer.prepare(NO_CONNECTION, draft({"text": "Hi"})) == Prepared({"text": "Hi"})
    assert preparer.target(NO_CONNECTION, "visitor") == {}


def test_a_preparer_does_not_change_the_rendered_fields_it_was_given() -> None:
    content = {"text": "Hi"}
    table()["sms"].prepare(NO_CONNECTION, draft(content, "+33612345678"))
    assert content == {"text": "Hi"}


def _write(services: Services) -> Any:
    return services.db.write()


def test_whatsapp_outside_the_window_without_a_template_cannot_go(services: Services) -> None:
    conn: Connection
    with _write(services) as conn:
        refused = table()["whatsapp"].prepare(conn, draft({"text": "Hi"}, "+33612345678"))
    assert refused == Unsendable(choice.WINDOW_CLOSED)


def test_whatsapp_outside_the_window_goes_as_its_approved_template(services: Services) -> None:
    content = {"text": "Hi", "template": "cart_reminder", "language": "fr", "category": "utility"}
    with _write(services) as conn:
        prepared = table()["whatsapp"].prepare(conn, draft(content, "+33612345678"))
    assert prepared == Prepared(
        {
            "mode": "template",
            "template": "cart_reminder",
            "language": "fr",
            "category": "utility",
            "parameters": [],
            "pricing": {"category": "utility", "cost": "0.03", "currency": "EUR"},
        }
    )


def test_push_and_wallet_without_an_address_have_nothing_to_address(services: Services) -> None:
    with _write(services) as conn:
        assert table()["push"].target(conn, None) == {}
        assert table()["wallet"].target(conn, None) == {}
        assert table()["wallet"].target(conn, "serial-unknown") == {"push_tokens": []}
        assert table()["push"].target(conn, "https://push.example/unknown") == {}


def test_delivery_sends_on_every_channel_of_its_providers(services: Services) -> None:
    delivery = services.delivery
    assert set(delivery.preparers) == set(delivery.providers.by_channel)


def test_delivery_refuses_a_message_on_a_channel_without_a_preparer(services: Services) -> None:
    opt_in(services, "ana")
    now = services.clock.now_ms()
    with services.db.write() as conn:
        customer_id = customers.resolve(conn, "ana", "FR")
        # Transactional: nothing about consent stands in its way (fax has none recorded).
        intent = Intent("test:fax:0", customer_id, "fax", "cart-reminder", "transactional")
        outbox_id = add_intent(conn, intent, now, {"rest": []}, "+33612345678")
    job = Job(0, QUEUE, DELIVER, None, {"id": outbox_id}, now, 0, 1, customer_id)
    refused = pytest.raises(UnknownChannel, match="no preparer for channel 'fax'")
    with refused, services.db.write() as conn:
        services.delivery.deliver(conn, job)
    with services.db.read() as conn:
        state = conn.exec_driver_sql(f"SELECT state FROM outbox WHERE id = {outbox_id}").scalar()
    assert state == "pending"
