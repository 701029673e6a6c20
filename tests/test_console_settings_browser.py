"""The Settings page checked as a person would, in Debian's Chromium (docs/console.md,
"Settings"): the owner gives the brand its name, colours and logo and sees them on the
console and on a customer's preference centre; a colour white text cannot be read on is
refused in words; a provider's connection is tested against a real SMTP server on
loopback; the owner adds quiet hours for French SMS with the rules' form, in French, and
a wrong value is named beside its field; a viewer reads the page and is refused every
change; English and French, with no serious accessibility violation."""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from parcours.customers import profiles
from parcours.messaging import policies
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.browser import DESKTOP, PHONE, accessibility_problems, browser, sign_in
from tests.conftest import LiveServer, make_event
from tests.peers import RunningSmtp, SmtpPeer
from tests.test_console_browser import PASSWORD, _team

__all__ = ["browser"]  # the fixture, used by name


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    width, height = 24, 12
    rows = b"".join(b"\x00" + b"\x7a\x1f\x3d" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def smtp() -> Iterator[RunningSmtp]:
    with RunningSmtp(SmtpPeer(dns={})) as running:
        yield running


@pytest.fixture
def served(
    settings: Settings, clock: SimulatedClock, smtp: RunningSmtp
) -> Iterator[tuple[Services, LiveServer]]:
    """Parcours sending email through the loopback SMTP server, served on loopback."""
    channels = {
        "email": {
            "provider": "smtp",
            "host": "127.0.0.1",
            "port": smtp.port,
            "security": "none",
            "from_address": "news@maison.example",
        }
    }
    services = Services.open(settings.with_overrides(channels=channels), clock=clock)
    try:
        with LiveServer(services) as server:
            yield services, server
    finally:
        services.close()


def _sign_in(browser: Any, server: LiveServer, email: str, locale: str = "en-GB") -> Any:
    context = browser.new_context(locale=locale, viewport=DESKTOP, bypass_csp=True)
    page = context.new_page()
    sign_in(page, server.url, email, PASSWORD)
    return page


def _style(locator: Any, name: str) -> str:
    return str(locator.evaluate(f"e => getComputedStyle(e).{name}"))


def test_the_owner_brands_the_console_and_the_preference_centre(
    browser: Any, served: tuple[Services, LiveServer], smtp: RunningSmtp
) -> None:
    services, server = served
    _team(services)
    page = _sign_in(browser, server, "owner@brand.example")
    page.get_by_role("link", name="Settings", exact=True).click()
    page.wait_for_url(re.compile(r".*/console/settings$"))
    assert accessibility_problems(page) == []

    # Too light for white text: refused, saying why.
    page.get_by_label("Brand name").fill("Maison Lune")
    page.locator("#f-primary").fill("#ffd700")
    page.get_by_role("button", name="Save the brand").click()
    alert = page.get_by_role("alert").inner_text()
    assert "#ffd700 is too light" in alert and "4.5:1" in alert
    assert page.locator("header.top .brand").inner_text() == "Parcours demo shop"

    page.get_by_label("Brand name").fill("Maison Lune")
    page.locator("#f-primary").fill("#7a1f3d")
    page.locator("#f-accent").fill("#1d4d4f")
    page.get_by_role("button", name="Save the brand").click()
    page.wait_for_url(re.compile(r".*saved=brand"))  # the page after the save, not before
    assert page.get_by_role("status").first.inner_text().startswith("Saved.")
    assert page.locator("header.top .brand").inner_text() == "Maison Lune"
    save = page.get_by_role("button", name="Save the brand")
    assert _style(save, "backgroundColor") == "rgb(122, 31, 61)"
    assert _style(page.locator("header.top"), "borderTopColor") == "rgb(29, 77, 79)"

    # The logo, on every page's header.
    page.locator("#f-logo").set_input_files(
        files=[{"name": "logo.png", "mimeType": "image/png", "buffer": _png()}]
    )
    page.get_by_role("button", name="Use this logo").click()
    logo = page.locator("header.top img.logo")
    assert logo.evaluate("e => e.complete && e.naturalWidth") == 24
    page.goto(f"{server.url}/console/customers")
    assert page.locator("header.top img.logo").evaluate("e => e.naturalWidth") == 24

    # A provider's connection, tested on the open page against the loopback server.
    page.goto(f"{server.url}/console/settings")
    page.get_by_role("button", name="Test the connection to smtp").click()
    answer = page.locator("#check-email-smtp p[role=status]")
    answer.wait_for()
    assert answer.inner_text() == (
        f"Connected to 127.0.0.1:{smtp.port} (NONE): the server greeted us and answered NOOP."
    )
    assert smtp.peer.received == []  # nothing sent
    assert accessibility_problems(page) == []

    # A customer's preference centre wears the brand.
    services.writer.append_sync(
        [make_event("identify", userId="u-7", traits={"email": "ines@example.com"})]
    )
    with services.db.read() as conn:
        customer = profiles.resolve(conn, "ines@example.com", "FR")
    link = urlsplit(services.delivery.links.preferences(customer)).path
    customer_page = browser.new_page(locale="fr-FR", bypass_csp=True)
    customer_page.goto(f"{server.url}{link}")
    header = customer_page.locator("header.top")
    assert header.locator(".brand").inner_text() == "Maison Lune"
    assert _style(header, "backgroundColor") == "rgb(29, 77, 79)"
    assert header.locator("img.logo").evaluate("e => e.naturalWidth") == 24
    save_choices = customer_page.get_by_role("button", name="Enregistrer mes choix")
    assert _style(save_choices, "backgroundColor") == "rgb(122, 31, 61)"
    assert accessibility_problems(customer_page) == []
    customer_page.close()

    # And the audit log says who changed what.
    page.goto(f"{server.url}/console/audit?action=settings.")
    assert page.get_by_text("settings.brand_changed").count() == 1
    assert page.get_by_text("settings.logo_changed").count() == 1


@pytest.mark.parametrize("language", ["en", "fr"])
def test_a_viewer_reads_the_settings_and_is_refused_every_change(
    browser: Any, served: tuple[Services, LiveServer], language: str
) -> None:
    services, server = served
    _team(services, "viewer")
    page = _sign_in(browser, server, "viewer@brand.example", locale=language)
    page.goto(f"{server.url}/console/settings")
    heading = {"en": "Settings", "fr": "Réglages"}[language]
    assert page.get_by_role("heading", name=heading, level=1).is_visible()
    notice = {"en": "only an owner can change them", "fr": "seul un propriétaire"}[language]
    assert notice in page.locator("p.notice").first.inner_text()
    assert page.locator("#f-name").is_disabled()
    assert page.locator("button[type=submit]", has_text="smtp").count() == 0
    for viewport in (DESKTOP, PHONE):
        page.set_viewport_size(viewport)
        assert accessibility_problems(page) == []
        assert page.evaluate("document.documentElement.scrollWidth - innerWidth") <= 1
    csrf = page.locator("input[name=csrf]").first.input_value()  # the sign-out form's
    for path, form in (
        ("/console/settings/brand", {"name": "Hijacked", "primary": "#000000"}),
        ("/console/settings/rules", {"reset": "1"}),
        ("/console/settings/wording", {"wording-en": "x", "wording-fr": "x"}),
        ("/console/settings/check", {"channel": "email", "provider": "smtp"}),
    ):
        answer = page.request.post(f"{server.url}{path}", form={"csrf": csrf, **form})
        assert answer.status == 403, path
    page.reload()
    assert page.locator("header.top .brand").inner_text() == "Parcours demo shop"


def test_the_owner_adds_quiet_hours_for_french_sms_with_the_form_in_french(
    browser: Any, served: tuple[Services, LiveServer]
) -> None:
    services, server = served
    _team(services)
    page = _sign_in(browser, server, "owner@brand.example", locale="fr-FR")
    page.goto(f"{server.url}/console/settings#rules")
    quiet_hours = page.locator("#quiet-hours tbody tr")
    assert quiet_hours.count() == 2

    # "Add" brings a new rule in place (HTMX), the focus on its first field.
    page.get_by_role("button", name="Ajouter une règle d’heures calmes").click()
    rule = page.get_by_role("group", name="Heures calmes, règle 3", exact=True)
    rule.wait_for()
    # The focus moves once the swap has settled (HTMX's afterSettle): waited for, not read
    # at the instant the rule appears (a loaded machine read it before, once).
    page.wait_for_function(
        "document.activeElement && document.activeElement.id === 'f-quiet-2-country'"
    )
    assert page.evaluate("document.activeElement.id") == "f-quiet-2-country"
    assert page.get_by_role("status").filter(has_text="Pas encore enregistré").is_visible()
    page.keyboard.type("France")  # a select is chosen by typing, as with the keyboard
    assert rule.get_by_label("Pays").input_value() == "FR"
    rule.get_by_role("group", name="Canaux").get_by_label("SMS").check()
    rule.get_by_role("group", name="Jours").get_by_label("dimanche").uncheck()
    rule.get_by_label("Les messages peuvent partir de").fill("09:00")
    rule.get_by_label("Jusqu’à").fill("19:00")
    rule.get_by_label("Jours fériés").select_option("quiet")
    assert accessibility_problems(page) == []
    page.get_by_role("button", name="Enregistrer les règles", exact=True).click()
    page.wait_for_url(re.compile(r".*saved=rules#rules$"))

    # In the table, in force, and in the audit log.
    assert quiet_hours.count() == 3
    cells = quiet_hours.nth(2).locator("td").all_inner_texts()
    assert cells == [
        "France",
        "SMS",
        "Marketing",
        "lun., mar., mer., jeu., ven., sam.",
        "de 09:00 à 19:00",
        "Calmes toute la journée",
    ]
    with services.db.read() as conn:
        rules = policies.in_force(conn, services.delivery.rules)
    assert [(r.country, r.channels, r.start.hour, r.end.hour) for r in rules.quiet_hours][2] == (
        "FR",
        ("sms",),
        9,
        19,
    )

    # A wrong count, sent with Enter from its field: named beside it, nothing saved.
    count = page.locator("#f-cap-0-count")
    count.fill("0")
    count.press("Enter")
    page.get_by_role("alert").filter(has_text="Rien n’a changé").wait_for()
    assert page.locator("#e-cap-0-count").inner_text() == (
        "Donnez un nombre de messages : 1 ou plus."
    )
    assert page.evaluate("document.activeElement.id") == "f-cap-0-count"
    assert page.locator("#f-cap-0-count").get_attribute("aria-invalid") == "true"
    assert quiet_hours.count() == 3
    for viewport in (DESKTOP, PHONE):
        page.set_viewport_size(viewport)
        assert accessibility_problems(page) == []
        assert page.evaluate("document.documentElement.scrollWidth - innerWidth") <= 1
    with services.db.read() as conn:
        assert policies.in_force(conn, services.delivery.rules).caps[0].count == 1
