"""Setting up a provider on the Settings page as a person would, in Debian's Chromium
(docs/console.md, "Settings"): the owner fills in an SMTP server's form, tests the
connection against a real SMTP server on loopback (the answer comes in place, the typed
values stay), saves, and the next email goes through it; Twilio's token typed, tested and
saved is never shown back; a wrong value is named beside its field, in French; no
serious accessibility violation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from parcours.services import Services
from tests.browser import DESKTOP, accessibility_problems, browser, sign_in
from tests.conftest import LiveServer
from tests.peers import RunningSmtp, SmtpPeer, TwilioPeer
from tests.test_channels import send_email
from tests.test_console_browser import PASSWORD, _team

__all__ = ["browser"]  # the fixture, used by name

TOKEN = "tw-0123456789abcdef0123456789abcdef-9z7q"


@pytest.fixture
def served(services: Services) -> Iterator[LiveServer]:
    _team(services)
    with LiveServer(services) as server:
        yield server


def _settings(browser: Any, server: LiveServer, locale: str = "en-GB") -> Any:
    context = browser.new_context(locale=locale, viewport=DESKTOP, bypass_csp=True)
    page = context.new_page()
    sign_in(page, server.url, "owner@brand.example", PASSWORD)
    page.goto(f"{server.url}/console/settings")
    return page


def test_the_owner_sets_up_an_smtp_server_and_twilio(
    browser: Any, services: Services, served: LiveServer
) -> None:
    peer = SmtpPeer(dns={})
    with RunningSmtp(peer) as smtp, TwilioPeer(auth_token=TOKEN) as twilio:
        page = _settings(browser, served)
        page.get_by_text("Set up an SMTP server").click()
        form = page.locator("#provider-email-smtp")
        form.get_by_label("SMTP server").fill("127.0.0.1")
        form.get_by_label("Encryption").select_option("none")
        form.get_by_label("Port").fill(str(smtp.port))
        form.get_by_label("From address").fill("news@maison.example")
        form.get_by_role("button", name="Test the connection").click()
        answer = form.locator("p[role=status]")
        answer.wait_for()
        assert answer.inner_text().startswith(f"Connected to 127.0.0.1:{smtp.port}")
        assert form.get_by_label("SMTP server").input_value() == "127.0.0.1"  # still typed
        assert accessibility_problems(page) == []
        form.get_by_role("button", name="Save").click()
        assert page.get_by_role("status").first.inner_text().startswith("Saved.")
        assert "Set up here: smtp" in page.locator("#set-up-email").inner_text()

        # Twilio: the token typed is tested as typed, saved, and never shown back.
        page.get_by_text("Set up Twilio").click()
        form = page.locator("#provider-sms-twilio")
        form.get_by_label("Account SID").fill(twilio.account_sid)
        form.get_by_label("Auth token").fill(TOKEN)
        form.get_by_label("Sender number").fill("+33700000000")
        form.get_by_label("API address").fill(twilio.url)
        form.get_by_role("button", name="Test the connection").click()
        form.locator("p[role=status]").wait_for()
        assert form.locator("p[role=status]").inner_text() == f"{twilio.url} took our credentials."
        assert form.get_by_label("Auth token").input_value() == TOKEN
        form.get_by_role("button", name="Save").click()
        assert page.get_by_role("status").first.inner_text().startswith("Saved.")
        assert TOKEN not in page.content()
        assert "Stored (ends in 9z7q)" in page.locator("#provider-sms-twilio").inner_text()
        assert accessibility_problems(page) == []
        page.context.close()
        send_email(services, "ana@example.com")
    assert [r.recipients for r in peer.received] == [["ana@example.com"]]


def test_a_wrong_value_is_named_beside_its_field_in_french(
    browser: Any, served: LiveServer
) -> None:
    page = _settings(browser, served, locale="fr-FR")
    page.get_by_text("Configurer un serveur SMTP").click()
    form = page.locator("#provider-email-smtp")
    form.get_by_label("Serveur SMTP").fill("127.0.0.1")
    # Tested without its from address: the problem comes in place, naming the field.
    form.get_by_role("button", name="Tester la connexion").click()
    refused = form.locator("p[role=alert]")
    refused.wait_for()
    assert refused.inner_text() == "Adresse d’expédition est obligatoire."
    form.get_by_label("Adresse d’expédition").fill("news@@maison")
    form.locator("input[name=from_address]").evaluate("e => e.type = 'text'")  # past the browser
    form.get_by_role("button", name="Enregistrer").click()
    problem = page.locator("#provider-email-smtp-from_address-error")
    assert problem.inner_text().startswith("Adresse d’expédition n’est pas une adresse e-mail")
    field = page.locator("#provider-email-smtp-from_address")
    assert field.get_attribute("aria-invalid") == "true"
    assert field.evaluate("e => e === document.activeElement")
    assert accessibility_problems(page) == []
