"""WhatsApp buttons (docs/channels.md, "WhatsApp buttons"): a template's buttons in each
language, sent to Meta's loopback peer as an interactive message inside the 24-hour
window and as the approved template's button parameters outside it (the exact bodies),
a tap coming back by the signed webhook as a `WhatsApp Button Clicked` a journey waits
for, the message marked clicked; what is wrong with buttons named; the console's bubble."""

from __future__ import annotations

from typing import Any

import pytest

from parcours.messaging import templates
from parcours.services import Services
from tests.peers import MetaPeer, TwilioPeer
from tests.test_channels import events_named, outbox, publish
from tests.test_console_build import Console, _team
from tests.test_journeys_engine import contact_traits, opt_in, track
from tests.test_whatsapp import peers, wired  # noqa: F401  (the fixtures)

REFILL: dict[str, Any] = {
    "en": {
        "whatsapp": {
            "text": "Hello {{ customer.first_name }}, shall we send your refill?",
            "template": "refill_v1",
            "language": "en",
            "category": "marketing",
            "parameters": ["{{ customer.first_name }}"],
            "buttons": [{"id": "yes", "title": "Yes please"}, {"id": "later", "title": "Later"}],
        }
    },
    "fr": {
        "whatsapp": {
            "text": "Bonjour {{ customer.first_name }}, on vous envoie la recharge ?",
            "template": "refill_v1",
            "language": "fr",
            "category": "marketing",
            "parameters": ["{{ customer.first_name }}"],
            "buttons": [
                {"id": "yes", "title": "Oui, merci"},
                {"id": "later", "title": "Plus tard"},
            ],
        }
    },
}
# Waits for a tap on "yes" after the question, and says so.
JOURNEY = """id: j
name: j
entry: {event: Go}
steps:
  - id: ask
    send: {channel: whatsapp, template: refill}
  - wait_for:
      event: WhatsApp Button Clicked
      where:
        - properties.button: {eq: "yes"}
      timeout: 2d
      on_timeout: exit
      then:
        - emit: {event: Refill Wanted}
"""


def _save(services: Services, template_id: str, content: dict[str, Any]) -> None:
    with services.db.write() as conn:
        templates.save(conn, template_id, content, "ana", services.clock.now_ms())


def test_buttons_go_with_the_template_outside_the_window_and_interactive_inside_it(
    wired: tuple[Services, str],  # noqa: F811
    peers: tuple[MetaPeer, TwilioPeer],  # noqa: F811
) -> None:
    services, base = wired
    meta, _ = peers
    webhook = f"{base}/webhooks/whatsapp"
    _save(services, "refill", REFILL)
    publish(services, JOURNEY)
    opt_in(services, "lea", first_name="Léa", locale="fr")
    number = contact_traits("lea")["phone"].lstrip("+")
    # Outside the window: the approved template, its quick replies carrying their ids.
    track(services, "lea", "Go")
    [first] = meta.messages
    assert first == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": number,
        "type": "template",
        "template": {
            "name": "refill_v1",
            "language": {"code": "fr"},
            "components": [
                {"type": "body", "parameters": [{"type": "text", "text": "Léa"}]},
                {
                    "type": "button",
                    "sub_type": "quick_reply",
                    "index": "0",
                    "parameters": [{"type": "payload", "payload": "yes"}],
                },
                {
                    "type": "button",
                    "sub_type": "quick_reply",
                    "index": "1",
                    "parameters": [{"type": "payload", "payload": "later"}],
                },
            ],
        },
        "id": first["id"],
    }
    # Léa taps "yes": the journey waiting for it goes on; the message was clicked.
    now_s = services.clock.now_ms() // 1000
    assert meta.tap(webhook, first, "wamid.tap1", now_s).status_code == 200
    services.worker.run_due()
    [tapped] = events_named(services, "WhatsApp Button Clicked")
    [message] = outbox(services)
    assert tapped == {
        "channel": "whatsapp",
        "button": "yes",
        "title": "Yes",
        "kind": "quick_reply",
        "reply_to": first["id"],
        "provider_message_id": "wamid.tap1",
        "message_id": message["id"],
    }
    assert message["status"] == "clicked"
    [clicked] = events_named(services, "Message Clicked")
    assert clicked["button"] == "yes" and clicked["message_id"] == message["id"]
    assert len(events_named(services, "Refill Wanted")) == 1
    # The tap was a message from Léa: inside the window now, an interactive message.
    track(services, "lea", "Go")
    second = meta.messages[1]
    assert second == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": number,
        "type": "interactive",
        "interactive": {
            "type": "button",
            "body": {"text": "Bonjour Léa, on vous envoie la recharge ?"},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": "yes", "title": "Oui, merci"}},
                    {"type": "reply", "reply": {"id": "later", "title": "Plus tard"}},
                ]
            },
        },
        "id": second["id"],
    }
    assert meta.tap(webhook, second, "wamid.tap2", now_s + 60).status_code == 200
    services.worker.run_due()
    again = events_named(services, "WhatsApp Button Clicked")[1]
    assert (again["button"], again["title"], again["kind"]) == ("yes", "Oui, merci", "reply")
    assert again["reply_to"] == second["id"]
    assert len(events_named(services, "Refill Wanted")) == 2
    # A tap's words are also the message Léa sent (they keep the window open).
    received = [e["text"] for e in events_named(services, "Message Received")]
    assert received == ["Yes", "Oui, merci"]


def test_a_url_button_is_a_cta_inside_the_window_and_a_suffix_outside_it(
    wired: tuple[Services, str],  # noqa: F811
    peers: tuple[MetaPeer, TwilioPeer],  # noqa: F811
) -> None:
    services, base = wired
    meta, _ = peers
    button = {
        "title": "My cart",
        "url": "https://shop.example/cart/{{ customer.first_name | lower }}",
        "suffix": "{{ customer.first_name | lower }}",
    }
    content = {
        "text": "Your cart is waiting, {{ customer.first_name }}",
        "template": "cart_v3",
        "category": "utility",
        "buttons": [button],
    }
    _save(services, "cart", {"en": {"whatsapp": content}})
    publish(
        services,
        "id: j\nname: j\nentry: {event: Go}\nsteps:\n"
        "  - send: {channel: whatsapp, template: cart}\n",
    )
    opt_in(services, "ana", first_name="Ana")
    number = contact_traits("ana")["phone"]
    track(services, "ana", "Go")
    assert meta.messages[0]["template"] == {
        "name": "cart_v3",
        "language": {"code": "en"},
        "components": [
            {
                "type": "button",
                "sub_type": "url",
                "index": "0",
                "parameters": [{"type": "text", "text": "ana"}],
            }
        ],
    }
    now_s = services.clock.now_ms() // 1000
    assert meta.incoming(f"{base}/webhooks/whatsapp", number, "hi", "wamid.in", now_s).is_success
    track(services, "ana", "Go")
    assert meta.messages[1]["interactive"] == {
        "type": "cta_url",
        "body": {"text": "Your cart is waiting, Ana"},
        "action": {
            "name": "cta_url",
            "parameters": {"display_text": "My cart", "url": "https://shop.example/cart/ana"},
        },
    }


def _whatsapp(**more: Any) -> dict[str, Any]:
    return {"en": {"whatsapp": {"text": "Hello", **more}}}


@pytest.mark.parametrize(
    ("buttons", "problem"),
    [
        ("yes", "t.en.whatsapp.buttons: expected a list of buttons"),
        (
            [{"id": f"b{n}", "title": f"B{n}"} for n in range(4)],
            "t.en.whatsapp.buttons: 4 buttons: WhatsApp shows at most 3 on a message",
        ),
        (
            [{"id": "yes", "title": "Yes, with pleasure, thanks"}],
            "t.en.whatsapp.buttons[0].title: 'Yes, with pleasure, thanks' has 26 characters; "
            "a WhatsApp button's title has at most 20",
        ),
        (
            [{"title": "Cart", "url": "http://shop.example/cart"}],
            "t.en.whatsapp.buttons[0].url: 'http://shop.example/cart' must start with https://",
        ),
        (
            [{"title": "Cart", "url": "{{ links.cart }}"}],
            "must start with https:// (written out, not computed)",
        ),
        ([{"id": "yes"}], "t.en.whatsapp.buttons[0].title: a button needs a title"),
        ([{"title": "Yes"}], "t.en.whatsapp.buttons[0].id: '' must be 1 to 64 letters"),
        (
            [{"id": "a", "title": "A"}, {"id": "a", "title": "B"}],
            "buttons[1].id: 'a' is used by another button",
        ),
        (
            [{"id": "a", "title": "A"}, {"title": "Cart", "url": "https://shop.example"}],
            "t.en.whatsapp.buttons: either up to 3 reply buttons or one URL button",
        ),
        (
            [{"id": "a", "title": "A", "url_suffix": "x"}],
            "buttons[0]: unknown field url_suffix for a reply button (allowed: id, title)",
        ),
        ([{"id": "a", "title": "{{ nope }}"}], "buttons[0].title: unknown variable 'nope'"),
    ],
)
def test_what_is_wrong_with_buttons_is_named(buttons: Any, problem: str) -> None:
    with pytest.raises(templates.TemplateProblem) as caught:
        templates.check("t", _whatsapp(buttons=buttons))
    assert problem in str(caught.value)


def test_a_title_too_long_once_rendered_is_named_and_nothing_goes() -> None:
    template = templates.check(
        "t", _whatsapp(buttons=[{"id": "me", "title": "For {{ customer.first_name }}"}])
    )
    fine = templates.render(template, "whatsapp", {"customer": {"first_name": "Ana"}}, "en")
    assert fine.fields["buttons"] == [{"id": "me", "title": "For Ana"}]
    with pytest.raises(templates.TemplateProblem, match=r"buttons\[0\]\.title: 'For Maximilienne"):
        templates.render(
            template, "whatsapp", {"customer": {"first_name": "Maximilienne-Anne"}}, "en"
        )


def test_the_bubble_shows_the_buttons_in_each_language(services: Services) -> None:
    _team(services)
    _save(services, "refill", REFILL)
    opt_in(services, "lea", first_name="Léa", locale="fr")
    marketer = Console(services, "marketer")
    try:
        for locale, titles in (
            ("fr", ("Oui, merci", "Plus tard")),
            ("en", ("Yes please", "Later")),
        ):
            page = marketer.get(
                "/console/templates/refill", customer="lea", channel="whatsapp", locale=locale
            )
            assert page.status_code == 200, page.text
            for title in titles:
                assert f'<li class="wa-button">{title}' in page.text
            assert "A tap answers, and the journeys see the button" in page.text
            assert "<code>yes</code>" in page.text and "<code>later</code>" in page.text
        # The console in French says it in French.
        page = marketer.client.get(
            "/console/templates/refill",
            params={"customer": "lea", "channel": "whatsapp"},
            headers={"Accept-Language": "fr"},
        )
        assert "Un appui répond, et les parcours voient le bouton" in page.text
    finally:
        marketer.close()
