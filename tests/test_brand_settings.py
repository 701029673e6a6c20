"""The console's Settings page and what it sets (docs/console.md, "Settings"), over HTTP
without a browser, on SQLite and PostgreSQL: the brand's values layered over the
configuration's and audited; colours refused when white text on them cannot be read; a
logo taken by its bytes and served with its type and cache headers; quiet hours and caps
that change what the send-time policies decide, in another process too; consent words
in versions, carried by the consents given afterwards; each provider's connection tested
against a real loopback server; and a viewer refused every change."""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import Iterator
from datetime import date
from html import unescape
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from litestar.testing import TestClient

from parcours import accounts, brand
from parcours.app import _console_parts, create_app
from parcours.channels import Providers, check_connection, configured, make_vapid_key
from parcours.console.overview import overview_of
from parcours.customers import profiles
from parcours.messaging import policies
from parcours.runtime.db import Database
from parcours.services import Services
from tests.conftest import make_event
from tests.peers import FcmPeer, MetaPeer, PostmarkPeer, RunningSmtp, SmtpPeer, TwilioPeer
from tests.test_journeys_engine import opt_in

PASSWORD = "a long enough passphrase"
DEFAULTS = brand.Defaults("Parcours demo shop", "", "UTC", "en")


def png(width: int = 2, height: int = 1) -> bytes:
    """A real (tiny) PNG image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\x1f\x56\xc9" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _team(services: Services, *roles: str) -> None:
    db, now = services.db, services.clock.now_ms()
    token = accounts.setup_link_token(db, now)
    assert token is not None
    owner = accounts.accept_invitation(
        db, token, email="owner@brand.example", name="Olivia", password=PASSWORD, now=now
    )
    for role in roles:
        _, invited = accounts.invite(db, owner, email=f"{role}@brand.example", role=role, now=now)
        accounts.accept_invitation(
            db, invited, email="x@example.com", name=role.title(), password=PASSWORD, now=now
        )


@pytest.fixture
def team(services: Services) -> Iterator[dict[str, TestClient[Any]]]:
    """A signed-in client for the owner and one for a viewer."""
    _team(services, "viewer")
    app = create_app(services, close_on_shutdown=False)
    clients: dict[str, TestClient[Any]] = {}
    with TestClient(app=app) as owner, TestClient(app=app) as viewer:
        for role, client in (("owner", owner), ("viewer", viewer)):
            answer = client.post(
                "/console/login",
                data={"email": f"{role}@brand.example", "password": PASSWORD},
                follow_redirects=False,
            )
            assert answer.status_code == 303, answer.text
            clients[role] = client
        yield clients


def _csrf(client: TestClient[Any]) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/settings").text)
    assert found is not None
    return found.group(1)


def _post(client: TestClient[Any], path: str, **form: str) -> httpx.Response:
    return client.post(path, data={"csrf": _csrf(client), **form}, follow_redirects=False)


def _brand_form(**changes: str) -> dict[str, str]:
    form = {
        "name": "Maison Lune",
        "primary": "#7a1f3d",
        "accent": "#1d4d4f",
        "sector": "fashion",
        "language-en": "on",
        "language-fr": "on",
        "timezone": "Europe/Paris",
    }
    return {**form, **changes}


def _look(services: Services) -> brand.BrandSettings:
    with services.db.read() as conn:
        return brand.current(conn, DEFAULTS)


# ---- the domain ------------------------------------------------------------------------


def test_contrast_is_wcags() -> None:
    assert brand.contrast("#000000", "#ffffff") == pytest.approx(21)
    assert brand.contrast("#ffffff", "#ffffff") == pytest.approx(1)
    assert brand.contrast("#1f56c9", "#ffffff") > 4.5 > brand.contrast("#ffff00", "#ffffff")


def test_stored_values_lie_over_the_configurations_and_each_save_is_a_version(
    services: Services,
) -> None:
    looked = _look(services)
    assert (looked.name, looked.timezone, looked.version, looked.send_rules) == (
        "Parcours demo shop",
        "UTC",
        0,
        None,
    )
    assert looked.languages == ("en", "fr") and looked.stored == frozenset()
    seen: list[tuple[str, str]] = []
    saved = brand.save(
        services.db,
        DEFAULTS,
        brand.Changes(name="  Maison   Lune ", primary="#7A1F3D", timezone="Europe/Paris"),
        services.clock.now_ms(),
        also=lambda conn, before, after: seen.append((before.name, after.name)),
    )
    assert seen == [("Parcours demo shop", "Maison Lune")]
    assert (saved.name, saved.primary, saved.timezone, saved.version) == (
        "Maison Lune",
        "#7a1f3d",
        "Europe/Paris",
        1,
    )
    assert saved.accent == "#146c2e"  # not set: the default
    assert _look(services) == saved
    # Another configuration underneath: what was saved still wins, the rest follows it.
    other = brand.Defaults("Other", "beauty", "Asia/Tokyo", "fr")
    with services.db.read() as conn:
        layered = brand.current(conn, other)
    assert (layered.name, layered.sector, layered.timezone, layered.locale) == (
        "Maison Lune",
        "beauty",
        "Europe/Paris",
        "fr",
    )
    reset = brand.save(services.db, DEFAULTS, brand.Changes(), 0, reset=("timezone",))
    assert (reset.timezone, reset.version) == ("UTC", 2)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        (brand.Changes(name="  "), "settings.name_required"),
        (brand.Changes(primary="blue"), "settings.colour_invalid"),
        (brand.Changes(accent="#ffff00"), "settings.colour_contrast"),
        (brand.Changes(primary="#4f8fff"), "settings.colour_contrast"),
        (brand.Changes(sector="cars"), "settings.sector_unknown"),
        (brand.Changes(languages=()), "settings.languages_none"),
        (brand.Changes(languages=("de",)), "settings.language_unknown"),
        (brand.Changes(timezone="Europe/Atlantis"), "settings.timezone_unknown"),
    ],
)
def test_what_cannot_be_saved_is_refused_naming_why(
    services: Services, changes: brand.Changes, key: str
) -> None:
    with pytest.raises(brand.BrandError) as refused:
        brand.save(services.db, DEFAULTS, changes, 0, sectors=("fashion",))
    assert refused.value.key == key
    assert _look(services).version == 0  # nothing written


def test_a_logo_is_a_png_or_a_jpeg_by_its_bytes() -> None:
    assert brand.media_type_of(png()) == "image/png"
    assert brand.media_type_of(b"\xff\xd8\xff\xe0" + b"\0" * 20) == "image/jpeg"
    for content, key in (
        (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "kind"),
        (b"GIF89a" + b"\0" * 20, "kind"),
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * brand.LARGEST_LOGO, "large"),
    ):
        with pytest.raises(brand.BrandError) as refused:
            brand.media_type_of(content)
        assert refused.value.key == f"settings.logo_{key}"


def test_consent_words_come_in_versions(services: Services) -> None:
    with services.db.read() as conn:
        assert brand.consent_wording(conn) is None
    first = brand.save_consent_wording(services.db, {"en": "Yes", "fr": "Oui"}, 5, by="o@b.example")
    second = brand.save_consent_wording(services.db, {"en": "Yes!", "fr": "Oui !"}, 6)
    assert (first.version, second.version) == ("preference-centre-2", "preference-centre-3")
    with services.db.read() as conn:
        assert brand.consent_wording(conn) == second
    with pytest.raises(brand.BrandError):
        brand.save_consent_wording(services.db, {"en": "Only English"}, 7)


# ---- the page ---------------------------------------------------------------------------


def test_the_owner_changes_the_brand_and_every_page_wears_it(
    services: Services, team: dict[str, TestClient[Any]]
) -> None:
    owner = team["owner"]
    answer = _post(owner, "/console/settings/brand", **_brand_form())
    assert answer.status_code == 303
    page = owner.get(answer.headers["location"])
    assert "Saved." in page.text
    look = _look(services)
    assert (look.name, look.primary, look.accent, look.sector, look.timezone) == (
        "Maison Lune",
        "#7a1f3d",
        "#1d4d4f",
        "fashion",
        "Europe/Paris",
    )
    # The console's header carries the name, and the stylesheet of this version's colours.
    assert '<span class="brand">Maison Lune</span>' in page.text
    stylesheet = f"/console/brand/{look.version}/look.css"
    assert stylesheet in page.text
    css = owner.get(stylesheet)
    assert css.headers["content-type"].startswith("text/css")
    assert "--accent: #7a1f3d" in css.text and "--brand-accent: #1d4d4f" in css.text
    assert "immutable" in css.headers["cache-control"]
    assert owner.get("/console/brand/0/look.css").headers["cache-control"] == "no-cache"
    # Audited, before and after.
    with services.db.read() as conn:
        entry = accounts.entries(conn, action="settings.brand_changed")[0]
    assert entry.user_email == "owner@brand.example"
    assert entry.before is not None and entry.before["name"] == "Parcours demo shop"
    assert entry.after is not None and entry.after["primary"] == "#7a1f3d"


def test_a_colour_white_text_cannot_be_read_on_is_refused_in_words(
    services: Services, team: dict[str, TestClient[Any]]
) -> None:
    owner = team["owner"]
    answer = _post(owner, "/console/settings/brand", **_brand_form(primary="#ffd700"))
    assert answer.status_code == 400
    message = unescape(answer.text)
    assert "Primary colour (buttons and links): #ffd700 is too light." in message
    assert "at least 4.5:1 is needed" in message
    french = owner.post(
        "/console/settings/brand",
        data={"csrf": _csrf(owner), **_brand_form(accent="#7fd1ae")},
        headers={"Accept-Language": "fr"},
    )
    assert french.status_code == 400 and "est trop clair" in unescape(french.text)
    assert _look(services).version == 0


def test_the_logo_is_served_by_its_digest_with_its_type(
    services: Services, team: dict[str, TestClient[Any]]
) -> None:
    owner = team["owner"]
    image = png()
    answer = owner.post(
        "/console/settings/logo",
        data={"csrf": _csrf(owner)},
        files={"logo": ("logo.svg", image, "image/svg+xml")},  # the name and type say nothing
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    digest = _look(services).logo.digest  # type: ignore[union-attr]
    served = owner.get(f"/console/brand/logo/{digest}")
    assert served.content == image
    assert served.headers["content-type"] == "image/png"
    assert "immutable" in served.headers["cache-control"]
    assert served.headers["x-content-type-options"] == "nosniff"
    assert f'src="/console/brand/logo/{digest}"' in owner.get("/console/").text
    # An SVG is refused, whatever it is called; the logo stays.
    svg = owner.post(
        "/console/settings/logo",
        data={"csrf": _csrf(owner)},
        files={"logo": ("logo.png", b"<svg onload='alert(1)'/>", "image/png")},
    )
    assert svg.status_code == 400 and "PNG or a JPEG" in svg.text
    assert _look(services).logo is not None
    with services.db.read() as conn:
        assert [e.action for e in accounts.entries(conn, action="settings.")] == [
            "settings.logo_changed"
        ]
    # Removed: its address answers no more.
    assert _post(owner, "/console/settings/logo/remove").status_code == 303
    assert owner.get(f"/console/brand/logo/{digest}").status_code == 404


def test_a_viewer_sees_the_settings_and_is_refused_every_change(
    services: Services, team: dict[str, TestClient[Any]]
) -> None:
    viewer = team["viewer"]
    page = viewer.get("/console/settings")
    assert page.status_code == 200
    assert "only an owner can change them" in page.text
    assert "Test the connection" not in page.text
    csrf = re.search(r'"X-CSRF-Token": "([^"]+)"', page.text)
    assert csrf is not None
    for path, form in (
        ("/console/settings/brand", _brand_form()),
        ("/console/settings/rules", {"rules": "[duplicates]\nwindow = '1h'\n"}),
        ("/console/settings/rules", {"reset": "1"}),
        ("/console/settings/wording", {"wording-en": "Yes", "wording-fr": "Oui"}),
        ("/console/settings/logo/remove", {}),
        ("/console/settings/check", {"channel": "email", "provider": "sandbox"}),
    ):
        answer = viewer.post(path, data={"csrf": csrf.group(1), **form})
        assert answer.status_code == 403, path
    refused = viewer.post(
        "/console/settings/logo",
        data={"csrf": csrf.group(1)},
        files={"logo": ("logo.png", png(), "image/png")},
    )
    assert refused.status_code == 403
    # Without the session's CSRF token, not even the owner changes anything.
    owner = team["owner"]
    forged = owner.post("/console/settings/brand", data={"csrf": "forged", **_brand_form()})
    assert forged.status_code == 403
    assert _look(services).version == 0
    with services.db.read() as conn:
        assert brand.consent_wording(conn) is None


# ---- quiet hours and caps -----------------------------------------------------------------


def _decide(services: Services, channel: str = "email") -> policies.Decision:
    with services.db.read() as conn:
        customer = profiles.resolve(conn, "ana", "FR")
        profile = profiles.conditions_view(conn, customer)
    message = policies.Message(customer, channel, "marketing", "newsletter", profile)
    with services.db.write() as conn:
        rules = policies.in_force(conn, services.delivery.rules)
        return policies.check(conn, rules, message, services.clock.now_ms(), "FR")


QUIET_EMAIL = """\
[[quiet_hours]]
country = "*"
channels = ["email"]
purpose = "marketing"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
from = "20:00"
until = "21:00"
public_holidays = true
"""


def test_rules_saved_on_the_page_change_what_the_policies_decide(
    services: Services, team: dict[str, TestClient[Any]]
) -> None:
    opt_in(services, "ana")
    assert _decide(services).allowed  # the shipped rules hold no email at this hour
    owner = team["owner"]
    page = owner.get("/console/settings").text
    assert "The rules shipped with Parcours" in page or "rules shipped with Parcours" in page
    assert "[[caps]]" in page  # the rules in force, as text to edit
    # A broken rule is refused with its problem, and nothing changes.
    broken = _post(owner, "/console/settings/rules", rules=QUIET_EMAIL.replace('"sun"', '"dim"'))
    assert broken.status_code == 400
    assert "days: &#39;dim&#39; is not one of mon" in broken.text
    assert _decide(services).allowed
    # Quiet hours for marketing email, 20:00 to 21:00 only: at 14:13 it is held.
    assert _post(owner, "/console/settings/rules", rules=QUIET_EMAIL).status_code == 303
    held = _decide(services)
    assert not held.allowed and held.reason.startswith("quiet hours (*:20:00-21:00)")
    assert held.retry_at is not None
    # The console's rules replace the files': the shipped SMS cap of 1 a week is gone.
    with services.db.read() as conn:
        assert policies.in_force(conn, services.delivery.rules).caps == ()
    with services.db.read() as conn:
        entry = accounts.entries(conn, action="settings.rules_changed")[0]
    assert entry.before is not None and entry.before["send_rules"] is None
    assert entry.after is not None and entry.after["send_rules"] == QUIET_EMAIL
    # Back to the files' rules.
    assert _post(owner, "/console/settings/rules", reset="1").status_code == 303
    assert _decide(services).allowed


def test_a_worker_of_another_process_sees_a_change_within_the_cache_time(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process is another engine with its own cache: it reads the change once its
    copy is older than brand.SEND_TIME_TTL_S, without a restart."""
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(
        "parcours.brand.settings.time", SimpleNamespace(monotonic=lambda: clock.now)
    )
    elsewhere = Database(services.db.url)
    try:
        with elsewhere.read() as conn:
            assert brand.send_time(conn) is None
        brand.save(services.db, DEFAULTS, brand.Changes(send_rules=QUIET_EMAIL), 0)
        with elsewhere.read() as conn:
            assert brand.send_time(conn) is None  # its copy is fresh yet
        clock.now += brand.SEND_TIME_TTL_S + 0.1
        with elsewhere.read() as conn:
            seen = brand.send_time(conn)
        assert seen is not None and seen.send_rules == QUIET_EMAIL and seen.version == 1
        # This process, which saved, sees it at once.
        with services.db.read() as conn:
            assert brand.send_time(conn) == seen
    finally:
        elsewhere.dispose()


def test_the_brands_time_zone_makes_the_overviews_today(services: Services) -> None:
    parts = _console_parts(services)
    assert overview_of(parts).days[-1].day == date(2026, 9, 21)  # 14:13 in UTC
    brand.save(services.db, DEFAULTS, brand.Changes(timezone="Pacific/Kiritimati"), 0)
    assert overview_of(parts).days[-1].day == date(2026, 9, 22)  # 04:13 the next day


def test_the_sector_and_zone_set_here_reach_the_send_time_reads(services: Services) -> None:
    brand.save(
        services.db,
        DEFAULTS,
        brand.Changes(sector="beauty", timezone="Asia/Tokyo"),
        0,
        sectors=("beauty",),
    )
    with services.db.read() as conn:
        stored = brand.send_time(conn)
        assert stored is not None and stored.sector == "beauty"
        assert policies.in_force(conn, services.delivery.rules).timezone == "Asia/Tokyo"


def test_messages_carry_the_name_set_here(services: Services) -> None:
    opt_in(services, "ana")
    with services.db.read() as conn:
        customer = profiles.resolve(conn, "ana", "FR")

    def brand_name() -> str:
        with services.db.read() as conn:
            preview = services.delivery.preview_context(conn, customer, "email", {})
        return str(preview.values["brand"]["name"])

    assert brand_name() == "Parcours demo shop"
    brand.save(services.db, DEFAULTS, brand.Changes(name="Maison Lune"), 0)
    assert brand_name() == "Maison Lune"


# ---- consent words --------------------------------------------------------------------


def test_consents_given_after_a_new_wording_carry_its_version_and_words(
    services: Services, team: dict[str, TestClient[Any]]
) -> None:
    owner = team["owner"]
    page = owner.get("/console/settings").text
    assert "preference-centre-1" in page and "I agree to receive news and offers" in page
    answer = _post(
        owner,
        "/console/settings/wording",
        **{
            "wording-en": "Yes, Maison may write to me about new collections by:",
            "wording-fr": "Oui, Maison peut m’écrire au sujet des collections par :",
        },
    )
    assert answer.status_code == 303
    services.writer.append_sync(
        [
            make_event(
                "identify",
                userId="u-1",
                traits={"email": "zoe@example.com", "locale": "fr"},
            )
        ]
    )
    with services.db.read() as conn:
        customer = profiles.resolve(conn, "zoe@example.com", "FR")
    path = urlsplit(services.delivery.links.preferences(customer)).path
    with TestClient(app=create_app(services, close_on_shutdown=False)) as customer_client:
        shown = customer_client.get(path)
        assert "Oui, Maison peut m’écrire au sujet des collections par :" in unescape(shown.text)
        saved = customer_client.post(path, data={"email": "on"}, follow_redirects=False)
        assert saved.status_code == 303
    with services.db.read() as conn:
        states = {s.channel: s for s in profiles.current_consents(conn, customer)}
    email = states["email"]
    assert (email.status, email.wording_version) == ("granted", "preference-centre-2")
    assert email.wording == "Oui, Maison peut m’écrire au sujet des collections par :"
    with services.db.read() as conn:
        entry = accounts.entries(conn, action="settings.wording_changed")[0]
    assert entry.after is not None and entry.after["version"] == "preference-centre-2"


def test_the_preference_centre_wears_the_brand_and_speaks_only_what_it_offers(
    services: Services, team: dict[str, TestClient[Any]]
) -> None:
    owner = team["owner"]
    _post(owner, "/console/settings/brand", **_brand_form(**{"language-fr": ""}))
    owner.post(
        "/console/settings/logo",
        data={"csrf": _csrf(owner)},
        files={"logo": ("logo.png", png(), "image/png")},
    )
    look = _look(services)
    assert look.languages == ("en",) and look.logo is not None
    services.writer.append_sync(
        [make_event("identify", userId="u-2", traits={"email": "lea@example.com", "locale": "fr"})]
    )
    with services.db.read() as conn:
        customer = profiles.resolve(conn, "lea@example.com", "FR")
    path = urlsplit(services.delivery.links.preferences(customer)).path
    with TestClient(app=create_app(services, close_on_shutdown=False)) as customer_client:
        shown = customer_client.get(path, headers={"Accept-Language": "fr"})
    assert '<html lang="en">' in shown.text  # French is not offered any more
    assert "Maison Lune" in shown.text
    assert f"/console/brand/{look.version}/look.css" in shown.text
    assert f"/console/brand/logo/{look.logo.digest}" in shown.text


# ---- providers ------------------------------------------------------------------------


def _smtp(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "email": {
            "provider": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "from_address": "news@maison.example",
            **extra,
        }
    }


def test_an_smtp_servers_connection_is_tested_without_sending_anything() -> None:
    peer = SmtpPeer(dns={})
    with RunningSmtp(peer) as smtp:
        providers = Providers.from_settings(_smtp(smtp.port), "http://127.0.0.1")
        try:
            listed = [(p.channel, p.name, p.checkable) for p in configured(providers)]
            assert ("email", "smtp", True) in listed and ("sms", "sandbox", False) in listed
            result = check_connection(providers, "email", "smtp")
            assert result is not None and result.ok, result
            assert result.key == "settings.check.smtp_ok"
            assert result.values["where"] == f"127.0.0.1:{smtp.port}"
            # STARTTLS asked of a server that does not offer it: said so.
            starttls = Providers.from_settings(
                _smtp(smtp.port, security="starttls"), "http://127.0.0.1"
            )
            refused = check_connection(starttls, "email", "smtp")
            assert refused is not None and refused.key == "settings.check.no_starttls"
            starttls.close()
        finally:
            providers.close()
    assert peer.connections >= 1 and peer.received == []
    # Nobody listening any more: unreachable, in words.
    gone = Providers.from_settings(_smtp(smtp.port), "http://127.0.0.1")
    result = check_connection(gone, "email", "smtp", timeout=3)
    assert result is not None and not result.ok and result.key == "settings.check.unreachable"
    assert "refused" in result.values["detail"].lower()
    assert check_connection(gone, "email", "postmark") is None
    gone.close()


def test_http_providers_are_tested_by_an_authenticated_read() -> None:
    with TwilioPeer() as twilio, MetaPeer() as meta:
        config: dict[str, Any] = {
            "sms": twilio.provider_settings(),
            "whatsapp": meta.provider_settings(),
        }
        providers = Providers.from_settings(config, "http://127.0.0.1")
        for channel, name in (("sms", "twilio"), ("whatsapp", "meta")):
            result = check_connection(providers, channel, name)
            assert result is not None and result.ok and result.key == "settings.check.http_ok"
        providers.close()
        config["sms"]["auth_token"] = "wrong"
        config["whatsapp"]["access_token"] = "wrong"
        wrong = Providers.from_settings(config, "http://127.0.0.1")
        sms = check_connection(wrong, "sms", "twilio")
        assert sms is not None and sms.key == "settings.check.refused"
        assert sms.values["detail"] == "401 Authenticate"
        whatsapp = check_connection(wrong, "whatsapp", "meta")
        assert (
            whatsapp is not None and whatsapp.values["detail"] == "401 Invalid OAuth access token."
        )
        wrong.close()
    assert twilio.messages == [] and meta.messages == []


def test_postmark_and_fcm_are_tested_with_their_credentials() -> None:
    with PostmarkPeer() as postmark, FcmPeer() as fcm:
        config: dict[str, Any] = {
            "email": {
                "provider": "postmark",
                "server_token": postmark.token,
                "from_address": "news@maison.example",
                "webhook_user": "pm",
                "webhook_password": "hook-secret",
                "api_base": postmark.url,
            },
            "push": {
                "provider": "webpush",
                "subject": "mailto:ops@maison.example",
                "fcm": {"service_account": json.dumps(fcm.service_account()), "api_base": fcm.url},
            },
        }
        providers = Providers.from_settings(config, "http://127.0.0.1", make_vapid_key())
        listed = {(p.channel, p.name): p.checkable for p in configured(providers)}
        assert listed[("push", "webpush")] is False and listed[("push", "fcm")] is True
        email = check_connection(providers, "email", "postmark")
        assert email is not None and email.ok and email.key == "settings.check.http_ok"
        push = check_connection(providers, "push", "fcm")
        assert push is not None and push.ok and push.key == "settings.check.token_ok"
        assert check_connection(providers, "push", "webpush") is not None
        providers.close()
        config["email"]["server_token"] = "wrong"
        wrong = Providers.from_settings(config, "http://127.0.0.1", make_vapid_key())
        refused = check_connection(wrong, "email", "postmark")
        assert refused is not None and refused.values["detail"] == "401 Bad or missing API token"
        wrong.close()
    assert postmark.messages == []


def test_the_test_button_answers_in_the_viewers_language(settings: Any, clock: Any) -> None:
    with TwilioPeer() as twilio:
        channels = {"sms": twilio.provider_settings(auth_token="not the token")}
        wired = Services.open(settings.with_overrides(channels=channels), clock=clock)
        try:
            _team(wired)
            app = create_app(wired, close_on_shutdown=False)
            with TestClient(app=app) as owner:
                owner.post(
                    "/console/login", data={"email": "owner@brand.example", "password": PASSWORD}
                )
                page = owner.get("/console/settings").text
                assert "Test the connection to twilio" in page
                form = {"csrf": _csrf(owner), "channel": "sms", "provider": "twilio"}
                english = owner.post(
                    "/console/settings/check", data=form, headers={"HX-Request": "true"}
                )
                assert english.status_code == 200
                assert unescape(english.text).strip() == (
                    f'<p class="error" role="status">{twilio.url} refused our credentials: '
                    "401 Authenticate</p>"
                )
                french = owner.post(
                    "/console/settings/check", data=form, headers={"Accept-Language": "fr"}
                )
                assert "a refusé nos identifiants : 401 Authenticate" in unescape(french.text)
                assert "Traceback" not in french.text
        finally:
            wired.close()
