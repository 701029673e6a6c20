"""Providers set up on the console's Settings page (docs/console.md, "Settings";
docs/channels.md, "Providers set up in the console"), over HTTP without a browser, on
SQLite and PostgreSQL: an owner tests a connection before saving, then saves; messages go
through the real loopback peers (aiosmtpd, Twilio's and Meta's stand-ins) with those
settings; secrets are sealed at rest, never shown back nor audited, and a blank secret
keeps the stored one; a wrong value is named on its field and nothing is written; the
configuration file's provider wins; another process sees a change within the cache time;
a non-owner is refused."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from html import unescape
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from sqlalchemy import select

from parcours import accounts
from parcours.app import create_app
from parcours.channels import OutgoingMessage, TransientFailure, stored
from parcours.channels.tables import channel_providers
from parcours.runtime.db import Database
from parcours.runtime.logs import TextFormatter
from parcours.runtime.settings import Settings, SettingsError
from parcours.services import Services
from tests.conftest import LiveServer, free_port
from tests.peers import MetaPeer, RunningSmtp, SmtpPeer, TwilioPeer
from tests.test_brand_settings import PASSWORD, _team
from tests.test_channels import CERTAIN, journey, outbox, publish, send_email
from tests.test_journeys_engine import opt_in, track

LONG_TOKEN = "tw-0123456789abcdef0123456789abcdef-9z7q"


@contextmanager
def _signed_in(services: Services, role: str = "owner") -> Iterator[TestClient[Any]]:
    with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
        answer = client.post(
            "/console/login",
            data={"email": f"{role}@brand.example", "password": PASSWORD},
            follow_redirects=False,
        )
        assert answer.status_code == 303, answer.text
        yield client


@contextmanager
def _services(settings: Settings, clock: Any, **overrides: Any) -> Iterator[Services]:
    services = Services.open(settings.with_overrides(**overrides), clock=clock)
    try:
        yield services
    finally:
        services.close()


@contextmanager
def _opened(settings: Settings, clock: Any, **overrides: Any) -> Iterator[Services]:
    with _services(settings, clock, **overrides) as services:
        _team(services, "viewer", "marketer")
        yield services


def _csrf(client: TestClient[Any]) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/settings").text)
    assert found is not None
    return found.group(1)


def _post(
    client: TestClient[Any], action: str, form: dict[str, str], **headers: str
) -> httpx.Response:
    return client.post(
        f"/console/settings/providers/{action}",
        data={"csrf": _csrf(client), **form},
        headers=headers,
        follow_redirects=False,
    )


def _smtp_form(port: int, **more: str) -> dict[str, str]:
    return {
        "channel": "email",
        "provider": "smtp",
        "host": "127.0.0.1",
        "port": str(port),
        "security": "none",
        "from_address": "news@maison.example",
        "from_name": "Maison Lune",
        **more,
    }


def _twilio_form(twilio: TwilioPeer, **more: str) -> dict[str, str]:
    return {
        "channel": "sms",
        "provider": "twilio",
        "account_sid": twilio.account_sid,
        "auth_token": twilio.auth_token,
        "from_number": "+33700000000",
        "api_base": twilio.url,
        **more,
    }


def _entries(services: Services) -> list[accounts.AuditEntry]:
    with services.db.read() as conn:
        found = accounts.entries(conn, action="settings.")
    return [e for e in found if e.action.startswith("settings.provider_")]


def _rows(services: Services) -> list[Any]:
    with services.db.read() as conn:
        return list(conn.execute(select(channel_providers)))


def test_smtp_set_up_in_the_console_carries_the_messages(services: Services) -> None:
    _team(services)
    peer = SmtpPeer(dns={})
    with RunningSmtp(peer) as smtp, _signed_in(services) as owner:
        page = owner.get("/console/settings").text
        assert "Set up an SMTP server" in page and "Set up Twilio" in page
        # Tested first against a port nobody listens on: said so, nothing saved.
        gone = free_port()
        answer = _post(owner, "test", _smtp_form(gone), **{"HX-Request": "true"})
        assert answer.status_code == 200 and "<html" not in answer.text
        assert 'class="error"' in answer.text and f"127.0.0.1:{gone}" in unescape(answer.text)
        # The right server: connected, nothing sent.
        answer = _post(owner, "test", _smtp_form(smtp.port), **{"HX-Request": "true"})
        assert 'class="ok"' in answer.text, answer.text
        assert f"127.0.0.1:{smtp.port}" in unescape(answer.text)
        assert peer.received == [] and _rows(services) == []
        # Without a script, the whole page with the result, the form's values kept.
        whole = _post(owner, "test", _smtp_form(smtp.port))
        assert whole.status_code == 200 and 'class="ok"' in whole.text
        assert 'value="Maison Lune"' in whole.text
        # Saved: the next email goes through it.
        assert _post(owner, "save", _smtp_form(smtp.port)).status_code == 303
        page = owner.get("/console/settings").text
        assert "Set up here: smtp, saved by owner@brand.example" in page
        send_email(services, "ana@example.com")
    [received] = peer.received
    assert received.recipients == ["ana@example.com"]
    assert received.message["From"] == "Maison Lune <news@maison.example>"
    assert [m["provider"] for m in outbox(services)] == ["smtp"]
    [entry] = _entries(services)
    assert entry.action == "settings.provider_changed" and entry.target == "channels.email"
    assert entry.user_email == "owner@brand.example" and entry.before is None
    assert entry.after == {
        "provider": "smtp",
        "host": "127.0.0.1",
        "port": str(smtp.port),
        "security": "none",
        "from_address": "news@maison.example",
        "from_name": "Maison Lune",
    }


def test_a_twilio_secret_is_sealed_never_shown_and_kept_when_left_blank(
    services: Services,
) -> None:
    _team(services)
    with TwilioPeer(auth_token=LONG_TOKEN) as twilio, _signed_in(services) as owner:
        # A wrong token: the test says what is wrong, and nothing is saved.
        wrong = _post(owner, "test", _twilio_form(twilio, auth_token="not-the-token"))
        assert "refused our credentials: 401 Authenticate" in unescape(wrong.text)
        assert "not-the-token" not in wrong.text
        assert _post(owner, "save", _twilio_form(twilio)).status_code == 303
        page = owner.get("/console/settings").text
        assert LONG_TOKEN not in page and "Stored (ends in 9z7q)" in page
        # Sealed at rest: the row holds no token, and says it only to the right key.
        [row] = _rows(services)
        assert LONG_TOKEN not in row.secrets and LONG_TOKEN not in row.settings
        assert row.secrets.startswith("v1:")
        # Changed again with the token left blank: the stored one is kept.
        changed = _twilio_form(twilio, auth_token="", from_number="+33700000001")
        assert _post(owner, "save", changed).status_code == 303
        # A test with the token left blank uses the stored one too.
        tested = _post(owner, "test", changed, **{"HX-Request": "true"})
        assert 'class="ok"' in tested.text
        publish(services, journey("{channel: sms, template: t}"))
        opt_in(services, "ana")
        track(services, "ana", "Go")
        [sent] = twilio.messages
        assert sent["From"] == "+33700000001" and sent["To"].startswith("+336")
    first, second = reversed(_entries(services))
    for entry in (first, second):
        assert LONG_TOKEN not in json.dumps([entry.before, entry.after])
    assert first.after is not None and first.after["auth_token"] == "changed"
    assert second.before is not None and second.before["auth_token"] == "set"
    assert second.after is not None and second.after["auth_token"] == "kept"
    assert second.after["from_number"] == "+33700000001"
    # Read once, the token is left out of the logs as the configured secrets are.
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, f"auth {LONG_TOKEN}", None, None)
    assert LONG_TOKEN not in TextFormatter([]).format(record)
    # The audit page shows no more than the entry.
    with _signed_in(services) as owner:
        assert LONG_TOKEN not in owner.get("/console/audit").text


def test_a_wrong_value_is_named_on_its_field_and_nothing_is_written(services: Services) -> None:
    _team(services)
    with _signed_in(services) as owner:
        cases = [
            (_smtp_form(25, from_address=""), "From address is required."),
            (_smtp_form(70000), "Port (blank: 587 with STARTTLS, else 465) must be a whole"),
            (_smtp_form(25, security="ssl"), "Encryption must be one of starttls, tls, none"),
            (_smtp_form(25, from_address="news@@maison"), "From address is not an email"),
            (_smtp_form(25, host="smtp.example\r\nRCPT"), "SMTP server holds a line break"),
            (
                {"channel": "sms", "provider": "twilio", "account_sid": "AC1", "auth_token": "x"},
                "Sender number or a messaging service SID is required.",
            ),
            (
                {"channel": "sms", "provider": "twilio", "account_sid": "AC1", "auth_token": ""},
                "Auth token is required.",
            ),
        ]
        for form, problem in cases:
            answer = _post(owner, "save", form)
            assert answer.status_code == 400, problem
            assert problem in unescape(answer.text), (problem, answer.text[-3000:])
            assert 'aria-invalid="true"' in answer.text
        french = owner.post(
            "/console/settings/providers/save",
            data={"csrf": _csrf(owner), **_smtp_form(25, from_address="")},
            headers={"Accept-Language": "fr"},
        )
        assert "Adresse d’expédition est obligatoire." in unescape(french.text)
        # An unknown provider is no form of the page.
        assert _post(owner, "save", {"channel": "sms", "provider": "smtp"}).status_code == 404
    assert _rows(services) == [] and _entries(services) == []


def _refused_to(
    services: Services,
    roles: tuple[str, ...],
    hidden: str,
    actions: tuple[tuple[str, dict[str, Any]], ...],
) -> None:
    """Each of these roles sees no `hidden` form on the Settings page, and each of these
    actions (test, save, remove with its form) is refused them server-side (403)."""
    for role in roles:
        with _signed_in(services, role) as someone:
            page = someone.get("/console/settings").text
            assert hidden not in page
            csrf = re.search(r'"X-CSRF-Token": "([^"]+)"', page)
            assert csrf is not None
            for action, form in actions:
                answer = someone.post(
                    f"/console/settings/providers/{action}",
                    data={"csrf": csrf.group(1), **form},
                )
                assert answer.status_code == 403, (role, action)


def test_only_an_owner_sets_up_a_provider(services: Services) -> None:
    _team(services, "viewer", "marketer")
    with TwilioPeer() as twilio:
        _refused_to(
            services,
            ("viewer", "marketer"),
            "Set up Twilio",
            (
                ("test", _twilio_form(twilio)),
                ("save", _twilio_form(twilio)),
                ("remove", {"channel": "sms"}),
            ),
        )
        assert twilio.messages == []
    assert _rows(services) == [] and _entries(services) == []


def test_the_configuration_files_provider_wins(settings: Settings, clock: Any) -> None:
    with (
        TwilioPeer() as file_twilio,
        TwilioPeer(auth_token="console-token") as console_twilio,
        _opened(
            settings, clock, channels={"sandbox": CERTAIN, "sms": file_twilio.provider_settings()}
        ) as services,
        _signed_in(services) as owner,
    ):
        page = unescape(owner.get("/console/settings").text)
        assert "Set by the configuration (twilio): change it there." in page
        assert "Set up Twilio" not in page and "Set up an SMTP server" in page
        refused = _post(owner, "save", _twilio_form(console_twilio))
        assert refused.status_code == 400
        assert "The configuration sets this channel's provider" in unescape(refused.text)
        assert _rows(services) == []
        # Even a row written beside the page does not take the channel over.
        live = services.delivery.providers
        assert isinstance(live, stored.LiveProviders)
        checked = stored.check(
            "sms", "twilio", _twilio_form(console_twilio), None, {}, live.public_url
        )
        stored.save(services.db, live.sealer, checked, 0, by="someone")
        live.refresh(force=True)
        publish(services, journey("{channel: sms, template: t}"))
        opt_in(services, "ana")
        track(services, "ana", "Go")
        assert len(file_twilio.messages) == 1 and console_twilio.messages == []


def test_whatsapp_set_up_in_the_console_answers_metas_webhook(
    settings: Settings, clock: Any
) -> None:
    port = free_port()
    with (
        MetaPeer() as meta,
        _opened(settings, clock, public_url=f"http://127.0.0.1:{port}") as services,
        LiveServer(services, port) as server,
        _signed_in(services) as owner,
    ):
        form = {
            "channel": "whatsapp",
            "provider": "meta",
            "phone_number_id": meta.phone_number_id,
            "access_token": "wrong",
            "app_secret": meta.app_secret,
            "verify_token": "let-me-in",
            "api_base": meta.url,
        }
        wrong = _post(owner, "test", form, **{"HX-Request": "true"})
        assert "401 Invalid OAuth access token." in unescape(wrong.text)
        form["access_token"] = meta.access_token
        assert 'class="ok"' in _post(owner, "test", form, **{"HX-Request": "true"}).text
        assert _post(owner, "save", form).status_code == 303
        challenge = {"hub.mode": "subscribe", "hub.verify_token": "let-me-in", "hub.challenge": "7"}
        answer = httpx.get(f"{server.url}/webhooks/whatsapp", params=challenge)
        assert answer.status_code == 200 and answer.text == "7"
        page = owner.get("/console/settings").text
        for secret in (meta.access_token, meta.app_secret, "let-me-in"):
            assert secret not in page
        # Back to the sandbox: the webhook knows no token any more.
        assert _post(owner, "remove", {"channel": "whatsapp"}).status_code == 303
        assert httpx.get(f"{server.url}/webhooks/whatsapp", params=challenge).status_code != 200
        actions = [e.action for e in _entries(services)]
        assert actions == ["settings.provider_removed", "settings.provider_changed"]


def test_another_process_uses_a_change_within_the_cache_time(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(
        "parcours.channels.stored.time", SimpleNamespace(monotonic=lambda: clock.now)
    )
    here = services.delivery.providers
    assert isinstance(here, stored.LiveProviders)
    elsewhere_db = Database(services.db.url)
    elsewhere = stored.LiveProviders(elsewhere_db, {}, "http://127.0.0.1", here.sealer)
    try:
        with TwilioPeer() as twilio:
            assert elsewhere.for_channel("sms").name == "sandbox"
            checked = stored.check("sms", "twilio", _twilio_form(twilio), None, {}, "http://x")
            stored.save(services.db, here.sealer, checked, 0, by="owner")
            assert elsewhere.for_channel("sms").name == "sandbox"  # its copy is fresh yet
            clock.now += stored.PROVIDERS_TTL_S + 0.1
            provider = elsewhere.for_channel("sms")
            assert provider.name == "twilio"
            message = OutgoingMessage(
                "k:1", 1, 1, "sms", "marketing", "+33612345678", {"text": "Hi"}, "en"
            )
            provider.send(message)
            assert [m["Body"] for m in twilio.messages] == ["Hi"]
    finally:
        elsewhere.close()
        elsewhere_db.dispose()


def test_secrets_sealed_under_another_key_hold_the_messages(services: Services) -> None:
    """A key that does not open the stored secrets (the setting changed): the channel's
    messages wait, transiently failed, rather than go to the sandbox; the page says why."""
    here = services.delivery.providers
    assert isinstance(here, stored.LiveProviders)
    with TwilioPeer() as twilio:
        checked = stored.check("sms", "twilio", _twilio_form(twilio), None, {}, "http://x")
        stored.save(services.db, stored.Sealer("another key"), checked, 0, by="owner")
    here.refresh(force=True)
    held = here.for_channel("sms")
    message = OutgoingMessage("k:1", 1, 1, "sms", "marketing", "+33612345678", {"text": "Hi"}, "en")
    with pytest.raises(TransientFailure, match="cannot be opened with this key"):
        held.send(message)
    with pytest.raises(SettingsError, match="provider_secrets_key must be at least 16"):
        Settings().with_overrides(provider_secrets_key="too short")
    # Sealed for one channel, a value does not open as another's.
    sealer = stored.Sealer("k")
    with pytest.raises(stored.SealError):
        sealer.open("email", "twilio", sealer.seal("sms", "twilio", {"auth_token": "x"}))
    _team(services)
    with _signed_in(services) as owner:
        page = unescape(owner.get("/console/settings").text)
        assert "The saved settings cannot be used: cannot be opened with this key" in page


# ---- a new key for the providers' secrets ---------------------------------------------------

OLD_KEY, NEW_KEY = "old-key-0123456789abcdef", "new-key-fedcba9876543210"
SMS = OutgoingMessage("k:1", 1, 1, "sms", "marketing", "+33612345678", {"text": "Hi"}, "en")


def _sealed_sms(services: Services) -> str:
    with services.db.read() as conn:
        return str(
            conn.execute(
                select(channel_providers.c.secrets).where(channel_providers.c.channel == "sms")
            ).scalar_one()
        )


def _save_sms(services: Services, twilio: TwilioPeer) -> None:
    providers = services.delivery.providers
    assert isinstance(providers, stored.LiveProviders)
    checked = stored.check("sms", "twilio", _twilio_form(twilio), None, {}, "http://x")
    stored.save(services.db, providers.sealer, checked, 0, by="owner")


def _sends(services: Services, twilio: TwilioPeer) -> None:
    providers = services.delivery.providers
    assert isinstance(providers, stored.LiveProviders)
    providers.refresh(force=True)
    providers.for_channel("sms").send(SMS)
    assert twilio.messages[-1]["Body"] == "Hi"


def test_a_new_key_with_the_old_one_among_the_previous_takes_over_the_secrets(
    settings: Settings, clock: Any
) -> None:
    """A rotation: the old key moves to `provider_secrets_previous_keys`; the secrets it
    sealed still open, and each process seals them again with the new key when it starts,
    after which the old key can go. A key that neither is, nor lists, the old one opens
    nothing: the messages wait."""
    with TwilioPeer() as twilio:
        with _services(settings, clock, provider_secrets_key=OLD_KEY) as services:
            _save_sms(services, twilio)
            before = _sealed_sms(services)
        with _opened(
            settings, clock, provider_secrets_key=NEW_KEY, provider_secrets_previous_keys=(OLD_KEY,)
        ) as services:
            _sends(services, twilio)
            after = _sealed_sms(services)
        assert after != before
        assert (
            stored.Sealer(NEW_KEY).open("sms", "twilio", after)["auth_token"] == twilio.auth_token
        )
        with pytest.raises(stored.SealError):
            stored.Sealer(OLD_KEY).open("sms", "twilio", after)
        with _services(settings, clock, provider_secrets_key=NEW_KEY) as services:  # old one gone
            _sends(services, twilio)
            assert _sealed_sms(services) == after  # nothing to seal again: left as it was
        with _services(settings, clock, provider_secrets_key="a third key, 0123456789") as services:
            providers = services.delivery.providers
            assert isinstance(providers, stored.LiveProviders)
            with pytest.raises(TransientFailure, match="cannot be opened with this key"):
                providers.for_channel("sms").send(SMS)
            assert _sealed_sms(services) == after


def test_a_key_set_where_parcours_had_made_one_takes_over_its_secrets(
    settings: Settings, clock: Any
) -> None:
    """Secrets sealed with the key Parcours made (no setting), then a key set: they open,
    and are sealed again with the key set (the database's copy then opens nothing)."""
    with TwilioPeer() as twilio:
        with _services(settings, clock) as services:
            _save_sms(services, twilio)
        with _services(settings, clock, provider_secrets_key=NEW_KEY) as services:
            _sends(services, twilio)
            after = _sealed_sms(services)
        assert (
            stored.Sealer(NEW_KEY).open("sms", "twilio", after)["auth_token"] == twilio.auth_token
        )


def test_previous_keys_are_read_as_a_list_checked_and_kept_out_of_the_logs() -> None:
    from parcours.runtime.settings import load_settings

    loaded = load_settings(
        {"PARCOURS_PROVIDER_SECRETS_PREVIOUS_KEYS": f" {OLD_KEY} , {NEW_KEY.upper()}"}
    )
    assert loaded.provider_secrets_previous_keys == (OLD_KEY, NEW_KEY.upper())  # case kept
    assert {OLD_KEY, NEW_KEY.upper()} <= loaded.secrets()
    with pytest.raises(SettingsError, match="provider_secrets_previous_keys: key 2 must be at"):
        load_settings({"PARCOURS_PROVIDER_SECRETS_PREVIOUS_KEYS": f"{OLD_KEY},short"})
