"""App push set up on the console's Settings page (docs/console.md, "Settings";
docs/channels.md, "Providers set up in the console"), on SQLite and PostgreSQL: an owner
pastes FCM's service account and APNs' .p8 key, tests each connection (Google's token
endpoint, Apple's TLS host: their loopback stand-ins), saves, and the next pushes reach
the stand-ins; the keys are sealed at rest and never in the page, the audit log or the
logs; key material that cannot serve is named on its field (EN, FR) and nothing is
written; the configuration's FCM wins while APNs is still set up here; a non-owner is
refused."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from parcours.runtime.logs import TextFormatter
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.peers import ApnsPeer, FcmPeer, make_authority
from tests.test_channels import CERTAIN, journey, outbox, publish
from tests.test_console_providers import (
    _csrf,
    _entries,
    _opened,
    _post,
    _refused_to,
    _rows,
    _signed_in,
)
from tests.test_journeys_engine import opt_in, track

IOS_TOKEN = "ab" * 32


def _pem(key: Any) -> str:
    return str(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
    )


def _fcm_form(fcm: FcmPeer, **more: str) -> dict[str, str]:
    return {
        "channel": "push.fcm",
        "provider": "fcm",
        "service_account": json.dumps(fcm.service_account(), indent=2),
        "api_base": fcm.url,
        **more,
    }


def _apns_form(apns_url: str, key: str, **more: str) -> dict[str, str]:
    return {
        "channel": "push.apns",
        "provider": "apns",
        # As a browser posts a pasted textarea: CRLF line ends.
        "key": key.replace("\n", "\r\n"),
        "key_id": "KEY123",
        "team_id": "TEAM123456",
        "topic": "com.maison.app",
        "environment": "sandbox",
        "api_base": apns_url,
        **more,
    }


@pytest.fixture
def pushing(
    settings: Settings, clock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Services, FcmPeer, ApnsPeer, str]]:
    """Services (the sandbox certain), FCM's and APNs' stand-ins, and the app's .p8 key;
    this process trusts the test authority's root as it trusts Apple's."""
    authority = make_authority(tmp_path, "pass.example")
    monkeypatch.setenv("SSL_CERT_FILE", str(authority["root"]))
    app_key = ec.generate_private_key(ec.SECP256R1())
    with (
        FcmPeer() as fcm,
        ApnsPeer(authority, app_key=app_key) as apns,
        _opened(settings, clock, channels={"sandbox": CERTAIN}) as services,
    ):
        yield services, fcm, apns, _pem(app_key)


def test_fcm_and_apns_set_up_in_the_console_carry_the_pushes(
    pushing: tuple[Services, FcmPeer, ApnsPeer, str],
) -> None:
    services, fcm, apns, p8 = pushing
    account_key = fcm.service_account()["private_key"]
    secret_lines = [line for line in (p8 + account_key).splitlines() if "-----" not in line]
    with _signed_in(services) as owner:
        page = owner.get("/console/settings").text
        assert "Set up Firebase Cloud Messaging" in page
        assert "Set up Apple Push Notification service" in page
        # Tested before saving: Google's token endpoint gives a token, nothing is saved.
        tested = _post(owner, "test", _fcm_form(fcm), **{"HX-Request": "true"})
        assert 'class="ok"' in tested.text, tested.text
        assert len(fcm.tokens) == 1 and _rows(services) == []
        tested = _post(owner, "test", _apns_form(apns.url, p8), **{"HX-Request": "true"})
        assert 'class="ok"' in tested.text, tested.text
        assert f"127.0.0.1:{apns.port}" in unescape(tested.text)
        # Saved, each in its own slot: both in force together.
        assert _post(owner, "save", _fcm_form(fcm)).status_code == 303
        assert _post(owner, "save", _apns_form(apns.url, p8)).status_code == 303
        # Left blank, the stored key is kept (for a test, and for a save).
        kept = _apns_form(apns.url, "", topic="com.maison.app")
        tested = _post(owner, "test", kept, **{"HX-Request": "true"})
        assert 'class="ok"' in tested.text, tested.text
        assert _post(owner, "save", kept).status_code == 303
        page = owner.get("/console/settings").text
        assert "Stored. Leave blank to keep it." in page
        assert not any(line in page for line in secret_lines)
        assert "PRIVATE KEY-----\n" not in page
    publish(services, journey("{channel: push, template: t, fallback: [email]}"))
    opt_in(services, "ana", push_token="fcm-token-ana")  # an Android app's token
    opt_in(services, "bob", push_token=IOS_TOKEN)  # an iOS app's
    track(services, "ana", "Go")
    track(services, "bob", "Go")
    [sent] = fcm.messages
    assert sent["token"] == "fcm-token-ana" and sent["notification"]["title"] == "Hello"
    [pushed] = apns.received
    assert pushed["token"] == IOS_TOKEN
    assert pushed["headers"]["apns-topic"] == "com.maison.app"
    assert sorted((m["provider"], m["state"]) for m in outbox(services)) == [
        ("apns", "sent"),
        ("fcm", "sent"),
    ]
    # Sealed at rest, never audited: said set, changed or kept.
    for row in _rows(services):
        assert row.secrets.startswith("v1:")
        assert not any(line in row.secrets + row.settings for line in secret_lines)
    entries = _entries(services)
    assert {e.target for e in entries} == {"channels.push.fcm", "channels.push.apns"}
    for entry in entries:
        audited = json.dumps([entry.before, entry.after])
        assert not any(line in audited for line in secret_lines)
    last_apns = next(e for e in entries if e.target == "channels.push.apns")
    assert last_apns.after is not None and last_apns.after["key"] == "kept"
    assert last_apns.before is not None and last_apns.before["key"] == "set"
    assert last_apns.after["team_id"] == "TEAM123456"
    # Once read, no line of either key reaches a log record, whole or quoted in JSON.
    for said in (p8, json.dumps(fcm.service_account()), secret_lines[3]):
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, f"key {said}", None, None)
        formatted = TextFormatter([]).format(record)
        assert not any(line in formatted for line in secret_lines), formatted
    with _signed_in(services) as owner:
        audit = owner.get("/console/audit").text
        assert not any(line in audit for line in secret_lines)


def test_key_material_that_cannot_serve_is_named_on_its_field(
    pushing: tuple[Services, FcmPeer, ApnsPeer, str],
) -> None:
    services, fcm, apns, p8 = pushing
    account = fcm.service_account()
    rsa_key = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    p384 = _pem(ec.generate_private_key(ec.SECP384R1()))

    def without(name: str) -> str:
        return json.dumps({k: v for k, v in account.items() if k != name})

    cases = [
        (_fcm_form(fcm, service_account="{not json"), "Service account (JSON) is not JSON"),
        (_fcm_form(fcm, service_account=without("private_key")), "has no private_key"),
        (_fcm_form(fcm, service_account=without("client_email")), "has no client_email"),
        (
            _fcm_form(fcm, service_account=json.dumps({**account, "private_key": "x"})),
            "its private_key is not a PEM private key",
        ),
        (
            _fcm_form(fcm, service_account=json.dumps({**account, "private_key": p8})),
            "its private_key is not an RSA key",
        ),
        (_fcm_form(fcm, service_account=""), "Service account (JSON) is required."),
        (_apns_form(apns.url, rsa_key), "APNs key (.p8) is not an EC P-256 key"),
        (_apns_form(apns.url, p384), "APNs key (.p8) is not an EC P-256 key"),
        (
            _apns_form(apns.url, p8.replace("MI", "??", 1)),
            "APNs key (.p8) is not a PEM private key",
        ),
        (_apns_form(apns.url, "AuthKey_KEY123.p8"), "APNs key (.p8) is not a PEM private key"),
        (_apns_form(apns.url, p8, team_id="TEAM"), "Team ID must be the 10 letters and digits"),
        (_apns_form(apns.url, p8, key_id="KEY-123"), "Key ID must be the key"),
        (_apns_form(apns.url, p8, topic="my app"), "Bundle ID (topic) must be the app"),
        (_apns_form(apns.url, p8, environment="staging"), "Environment must be one of"),
    ]
    pasted_lines = [
        line
        for key in (p8, rsa_key, p384, account["private_key"])
        for line in key.splitlines()
        if "-----" not in line
    ]
    with _signed_in(services) as owner:
        for form, problem in cases:
            answer = _post(owner, "save", form)
            assert answer.status_code == 400, problem
            text = unescape(answer.text)
            assert problem in text, (problem, text[-3000:])
            assert 'aria-invalid="true"' in answer.text
            # What was pasted is not drawn back.
            assert not any(line in answer.text for line in pasted_lines)
        # Tested rather than saved: the same words, in place.
        tested = _post(owner, "test", _apns_form(apns.url, rsa_key), **{"HX-Request": "true"})
        assert "is not an EC P-256 key" in unescape(tested.text)
        french = owner.post(
            "/console/settings/providers/save",
            data={"csrf": _csrf(owner), **_apns_form(apns.url, p384)},
            headers={"Accept-Language": "fr"},
        )
        assert "Clé APNs (.p8) n’est pas une clé EC P-256" in unescape(french.text)
        french = owner.post(
            "/console/settings/providers/save",
            data={"csrf": _csrf(owner), **_fcm_form(fcm, service_account=without("private_key"))},
            headers={"Accept-Language": "fr"},
        )
        assert "Compte de service (JSON) n’a pas de private_key" in unescape(french.text)
    assert _rows(services) == [] and _entries(services) == []
    assert fcm.tokens == [] and apns.received == []


def test_only_an_owner_sets_up_push(pushing: tuple[Services, FcmPeer, ApnsPeer, str]) -> None:
    services, fcm, apns, p8 = pushing
    _refused_to(
        services,
        ("viewer", "marketer"),
        "Set up Firebase Cloud Messaging",
        (
            ("test", _fcm_form(fcm)),
            ("save", _fcm_form(fcm)),
            ("save", _apns_form(apns.url, p8)),
            ("remove", {"channel": "push.apns"}),
        ),
    )
    assert fcm.tokens == [] and _rows(services) == [] and _entries(services) == []


def test_the_configurations_fcm_wins_and_apns_is_still_set_up_here(
    settings: Settings, clock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    authority = make_authority(tmp_path, "pass.example")
    monkeypatch.setenv("SSL_CERT_FILE", str(authority["root"]))
    app_key = ec.generate_private_key(ec.SECP256R1())
    with FcmPeer() as file_fcm, FcmPeer("console-app") as console_fcm:
        configured = {
            "fcm": {
                "service_account": json.dumps(file_fcm.service_account()),
                "api_base": file_fcm.url,
            }
        }
        with (
            ApnsPeer(authority, app_key=app_key) as apns,
            _opened(settings, clock, channels={"sandbox": CERTAIN, "push": configured}) as services,
            _signed_in(services) as owner,
        ):
            page = unescape(owner.get("/console/settings").text)
            assert "Set by the configuration (fcm): change it there." in page
            assert "Set up Firebase Cloud Messaging" not in page
            assert "Set up Apple Push Notification service" in page
            refused = _post(owner, "save", _fcm_form(console_fcm))
            assert refused.status_code == 400
            assert _post(owner, "save", _apns_form(apns.url, _pem(app_key))).status_code == 303
            publish(services, journey("{channel: push, template: t}"))
            opt_in(services, "ana", push_token="fcm-token-ana")
            opt_in(services, "bob", push_token=IOS_TOKEN)
            track(services, "ana", "Go")
            track(services, "bob", "Go")
            assert len(file_fcm.messages) == 1 and console_fcm.messages == []
            assert [r["token"] for r in apns.received] == [IOS_TOKEN]
            # Removed: the configuration's alone again (an iOS token goes to FCM then).
            removed = owner.post(
                "/console/settings/providers/remove",
                data={"csrf": _csrf(owner), "channel": "push.apns"},
                follow_redirects=False,
            )
            assert removed.status_code == 303
            track(services, "bob", "Go")
            assert len(apns.received) == 1 and len(file_fcm.messages) == 2
