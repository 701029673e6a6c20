"""Messages read right in the customer's language: amounts and dates formatted by Babel,
the HTML saying its language, a plain-text part that keeps its links, and French that is
French on the unsubscribe page."""

from __future__ import annotations

import re
from typing import Any

import pytest
from litestar.testing import TestClient

from parcours.app import create_app
from parcours.messaging import templates
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.settings import Settings
from tests.test_channels import journey, open_services, outbox, publish_strict
from tests.test_journeys_engine import opt_in, track

SHOP = "https://maison.example/cart?from=email&step=2"
UNSUBSCRIBE = "https://p.example/u/TOKEN"
PREFERENCES = "https://p.example/p/TOKEN"


def context(**customer: Any) -> dict[str, Any]:
    return {
        "customer": {"first_name": "Léa", **customer},
        "event": {"event": "Checkout Started", "timestamp": "2026-09-21T22:30:00Z"},
        "cart": {
            "total": 129.0,
            "currency": "EUR",
            "products": [{"name": "Écharpe", "quantity": 1}, {"name": "Gants", "quantity": 2}],
        },
        "order": {
            "order_id": "1042",
            "total": "1290.5",
            "currency": "EUR",
            "products": [{"name": "Manteau", "quantity": 1}],
        },
        "brand": {"name": "Maison", "url": "https://maison.example"},
        "links": {"shop": SHOP, "unsubscribe": UNSUBSCRIBE, "preferences": PREFERENCES},
        "message": {"channel": "email", "purpose": "marketing"},
    }


def render(template: str, locale: str, **customer: Any) -> templates.Rendered:
    return templates.render(templates.shipped()[template], "email", context(**customer), locale)


def test_a_french_cart_reads_in_french_with_its_links_in_the_text() -> None:
    rendered = render("abandoned-cart-recap", "fr")
    assert rendered.fields["text"] == (
        "Bonjour Léa,\n"
        "Vous avez laissé dans votre panier :\n"
        "- Écharpe × 1\n"
        "- Gants × 2\n"
        "Total : 129,00 €\n"
        f"Retrouver mon panier <{SHOP}>\n"
        f"Se désabonner <{UNSUBSCRIBE}> · Gérer mes préférences <{PREFERENCES}>\n"
    )
    html = rendered.fields["html"]
    assert html.startswith('<!DOCTYPE html><html lang="fr" dir="auto"')
    assert 'lang="und"' not in html
    assert "Total : 129,00\xa0€</div>" in html


def test_an_english_cart_reads_in_english() -> None:
    rendered = render("abandoned-cart-recap", "en")
    assert rendered.fields["text"] == (
        "Hello Léa,\n"
        "You left these in your cart:\n"
        "- Écharpe × 1\n"
        "- Gants × 2\n"
        "Total: €129.00\n"
        f"Back to my cart <{SHOP}>\n"
        f"Unsubscribe <{UNSUBSCRIBE}> · Manage preferences <{PREFERENCES}>\n"
    )
    assert '<html lang="en" dir="auto"' in rendered.fields["html"]


def test_the_order_date_is_the_customers_own_day() -> None:
    # 22:30 UTC on 21 September is already the 22nd in Paris, still the 21st in New York.
    paris = render("order-confirmation", "fr", timezone="Europe/Paris").fields["text"]
    assert paris == (
        "Merci Léa !\n"
        "Nous avons bien reçu votre commande 1042, passée le 22 septembre 2026 :\n"
        "- Manteau × 1\n"
        "Total : 1 290,50 €\n"
    )
    new_york = render("order-confirmation", "en", timezone="America/New_York").fields["text"]
    assert new_york == (
        "Thank you Léa!\n"
        "We have your order 1042, placed on September 21, 2026:\n"
        "- Manteau × 1\n"
        "Total: €1,290.50\n"
    )


@pytest.mark.parametrize(
    ("source", "locale", "expected"),
    [
        ("{{ 129 | money('EUR') }}", "fr", "129,00\xa0€"),
        ("{{ '19.9' | money('usd') }}", "en", "$19.90"),
        ("{{ 1500 | money('JPY') }}", "fr", "1\u202f500\xa0JPY"),
        ("{{ 1234.5 | money }}", "fr", "1\u202f234,50"),
        ("{{ cart.total | money(cart.currency) }}", "fr", ""),  # no cart: nothing
        ("{{ 'on request' | money('EUR') }}", "fr", "on request"),  # not a number: as it came
        ("{{ '2026-02-03' | date }}", "fr", "3 février 2026"),
        ("{{ '2026-02-03T10:00:00Z' | date('short') }}", "en", "2/3/26"),
        ("{{ event.timestamp | date }}", "en", ""),  # no such value: nothing
    ],
)
def test_money_and_dates_follow_the_language(source: str, locale: str, expected: str) -> None:
    template = templates.check("t", {locale: {"sms": {"text": source}}})
    rendered = templates.render(template, "sms", {"cart": None, "event": {}, "message": {}}, locale)
    assert rendered.fields["text"] == expected


def test_an_html_body_says_its_language_unless_it_already_does() -> None:
    template = templates.check(
        "t",
        {
            "fr": {"email": {"subject": "s", "html": "<html><body><p>Bonjour</p></body></html>"}},
            "en": {"email": {"subject": "s", "html": '<html lang="en-GB"><body>Hi</body></html>'}},
        },
    )
    french = templates.render(template, "email", {"message": {}}, "fr").fields["html"]
    english = templates.render(template, "email", {"message": {}}, "en").fields["html"]
    assert french == '<html lang="fr"><body><p>Bonjour</p></body></html>'
    assert english == '<html lang="en-GB"><body>Hi</body></html>'


def test_a_sent_email_has_its_language_and_its_links_in_both_parts(
    settings: Settings, clock: SimulatedClock
) -> None:
    services = open_services(settings, clock)
    try:
        publish_strict(
            services,
            journey("{channel: email, template: abandoned-cart-recap}", entry="Checkout Started"),
        )
        opt_in(services, "lea", firstName="Léa", locale="fr")
        track(services, "lea", "Checkout Started", checkout_id="c1", total=129, currency="EUR")
        [message] = outbox(services)
        html, text = message["content"]["html"], message["content"]["text"]
        [unsubscribe] = re.findall(r'href="([^"]*/u/[^"]*)"', html)
        [preferences] = re.findall(r'href="([^"]*/p/[^"]*)"', html)
        assert '<html lang="fr"' in html
        assert text == (
            "Bonjour Léa,\n"
            "Vous avez laissé dans votre panier :\n"
            "Total : 129,00 €\n"
            "Retrouver mon panier <https://shop.example.com>\n"
            f"Se désabonner <{unsubscribe}> · Gérer mes préférences <{preferences}>\n"
        )
    finally:
        services.close()


@pytest.mark.parametrize(
    ("locale", "question", "done"),
    [
        (
            "fr",
            "Ne plus recevoir d’e-mails promotionnels de Parcours demo shop ?",
            "Votre désabonnement est enregistré. Vous ne recevrez plus d’e-mails promotionnels "
            "de Parcours demo shop.",
        ),
        (
            "en",
            "Stop receiving marketing emails from Parcours demo shop?",
            "You are unsubscribed. You will not receive marketing emails from Parcours demo "
            "shop any more.",
        ),
    ],
)
def test_the_unsubscribe_page_says_what_stops_in_good_words(
    settings: Settings, clock: SimulatedClock, locale: str, question: str, done: str
) -> None:
    services = open_services(settings, clock)
    try:
        publish_strict(services, journey("{channel: email, template: welcome}"))
        opt_in(services, "lea", locale=locale)
        track(services, "lea", "Go")
        [message] = outbox(services)
        [link] = re.findall(r"<(http[^>]*/u/[^>]*)>|: (http\S*/u/\S*)", message["content"]["text"])
        path = "".join(link).removeprefix(settings.resolved_public_url)
        with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
            page = client.get(path).text
            assert f"<p>{question}</p>" in page
            answer = client.post(path, content=b"List-Unsubscribe=One-Click").text
            assert f"<p>{done}</p>" in answer
    finally:
        services.close()


@pytest.mark.parametrize("channel", ["email", "sms", "whatsapp", "push", "wallet", "chat"])
def test_every_channel_has_its_unsubscribe_words_in_both_languages(channel: str) -> None:
    from parcours.runtime.i18n import text

    french = text("fr", f"unsubscribe.what.{channel}")
    assert french.startswith(("de ", "d’")) and text("en", f"unsubscribe.what.{channel}")
    assert french != text("en", f"unsubscribe.what.{channel}")
