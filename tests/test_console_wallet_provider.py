"""Apple Wallet set up on the console's Settings page (docs/console.md, "Settings";
docs/channels.md, "Providers set up in the console"), on SQLite and PostgreSQL: an owner
pastes the Pass Type ID certificate, its key and Apple's WWDR certificate; a pass issued
then is signed with them (checked by `openssl smime -verify` against the test authority)
and a Wallet message tells the phone through APNs with that certificate as TLS client;
the key is never in the page, the audit log or the logs; certificates and keys that do
not go together are named on their field (EN, FR); a non-owner is refused. Google Wallet
beside it: tested against Google's issuer, saved only beside Apple Wallet, its cards
then offered with the origins typed."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import zipfile
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from litestar.testing import TestClient

from parcours.app import create_app
from parcours.runtime.logs import TextFormatter
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.peers import ApnsPeer, GoogleWalletPeer, make_authority
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
from tests.test_wallet import GOOGLE_CLASS, GOOGLE_ISSUER, PASS_TYPE, issue, openssl_verifies


def _wallet_form(authority: dict[str, Path], apns: ApnsPeer, **more: str) -> dict[str, str]:
    return {
        "channel": "wallet",
        "provider": "apple",
        "pass_type_identifier": PASS_TYPE,
        "team_identifier": "TEAM123456",
        "organization_name": "Maison",
        "certificate": authority["cert"].read_text(),
        "signing_key": authority["key"].read_text().replace("\n", "\r\n"),
        "wwdr": authority["wwdr"].read_text(),
        "apns_api_base": apns.url,
        **more,
    }


@pytest.fixture
def wallet(
    settings: Settings, clock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Services, dict[str, Path], ApnsPeer]]:
    """Services (no Wallet in the configuration), the test authority (trusted by this
    process as Apple's is) and APNs wanting the pass certificate as TLS client."""
    authority = make_authority(tmp_path, PASS_TYPE)
    monkeypatch.setenv("SSL_CERT_FILE", str(authority["root"]))
    with (
        ApnsPeer(authority, client_ca=authority["root"]) as apns,
        _opened(settings, clock, channels={"sandbox": CERTAIN}) as services,
    ):
        yield services, authority, apns


def test_a_pass_signed_with_certificates_saved_in_the_console_verifies(
    wallet: tuple[Services, dict[str, Path], ApnsPeer], clock: Any, tmp_path: Path
) -> None:
    services, authority, apns = wallet
    key_lines = [line for line in authority["key"].read_text().splitlines() if "---" not in line]
    with _signed_in(services) as owner:
        assert "Set up Apple Wallet passes" in owner.get("/console/settings").text
        tested = _post(owner, "test", _wallet_form(authority, apns), **{"HX-Request": "true"})
        assert 'class="ok"' in tested.text and PASS_TYPE in tested.text, tested.text
        assert _rows(services) == []
        assert _post(owner, "save", _wallet_form(authority, apns)).status_code == 303
        page = owner.get("/console/settings").text
        assert not any(line in page for line in key_lines)
    with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
        opt_in(services, "ana")
        issued = issue(client, "ana")
        download = client.get(
            issued["download"].removeprefix(services.settings.resolved_public_url)
        )
        assert download.status_code == 200
        archive = zipfile.ZipFile(io.BytesIO(download.content))
        signature, manifest = archive.read("signature"), archive.read("manifest.json")
        assert openssl_verifies(signature, manifest, authority["root"], tmp_path)
        document = json.loads(archive.read("pass.json"))
        assert document["passTypeIdentifier"] == PASS_TYPE
        assert document["teamIdentifier"] == "TEAM123456"
        # A phone holding the pass is told of a Wallet message, through APNs.
        with services.db.read() as conn:
            from parcours.messaging import passes

            token = passes.get(conn, issued["serial"]).auth_token  # type: ignore[union-attr]
        path = f"/wallet/v1/devices/dev-1/registrations/{PASS_TYPE}/{issued['serial']}"
        auth = {"Authorization": f"ApplePass {token}"}
        assert client.post(path, json={"pushToken": "apns-1"}, headers=auth).status_code == 201
    clock.advance_ms(1000)
    publish(services, journey("{channel: wallet, template: t, purpose: transactional}"))
    track(services, "ana", "Go")
    [message] = outbox(services)
    assert message["channel"] == "wallet" and message["state"] == "sent"
    [pushed] = apns.received
    assert pushed["token"] == "apns-1" and pushed["headers"]["apns-topic"] == PASS_TYPE
    # Sealed, audited without the key, kept out of the logs.
    [row] = _rows(services)
    assert not any(line in row.secrets + row.settings for line in key_lines)
    [entry] = _entries(services)
    assert entry.target == "channels.wallet" and entry.after is not None
    assert entry.after["signing_key"] == "changed"
    assert not any(line in json.dumps(entry.after) for line in key_lines)
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, key_lines[2], None, None)
    assert key_lines[2] not in TextFormatter([]).format(record)


def _expired(authority: dict[str, Path]) -> str:
    """A Pass Type ID certificate for the same key, expired yesterday."""
    key = serialization.load_pem_private_key(authority["key"].read_bytes(), None)
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test WWDR")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old")]))
        .issuer_name(name)
        .public_key(key.public_key())  # type: ignore[arg-type]
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now - dt.timedelta(days=1))
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def test_certificates_and_keys_that_do_not_go_together_are_named(
    wallet: tuple[Services, dict[str, Path], ApnsPeer],
) -> None:
    services, authority, apns = wallet
    other_key = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    root = authority["root"].read_text()
    cases = [
        (
            _wallet_form(authority, apns, certificate="MIIB..."),
            "Pass Type ID certificate (PEM) is not a PEM certificate",
        ),
        (
            _wallet_form(authority, apns, certificate=_expired(authority)),
            "Pass Type ID certificate (PEM) expired on",
        ),
        (
            _wallet_form(authority, apns, signing_key=other_key),
            "The certificate's private key (PEM) is not the key of the Pass Type ID",
        ),
        (
            _wallet_form(authority, apns, wwdr=root),
            "Apple WWDR certificate (PEM) did not issue the Pass Type ID certificate",
        ),
        (
            _wallet_form(authority, apns, pass_type_identifier="maison.loyalty"),
            "Pass Type ID must start with pass.",
        ),
        (_wallet_form(authority, apns, signing_key=""), "private key (PEM) is required."),
    ]
    with _signed_in(services) as owner:
        for form, problem in cases:
            answer = _post(owner, "save", form)
            assert answer.status_code == 400, problem
            assert problem in unescape(answer.text), (problem, answer.text[-3000:])
            assert 'aria-invalid="true"' in answer.text
        french = owner.post(
            "/console/settings/providers/save",
            data={"csrf": _csrf(owner), **_wallet_form(authority, apns, signing_key=other_key)},
            headers={"Accept-Language": "fr"},
        )
        assert "n’est pas la clé du certificat du Pass Type ID" in unescape(french.text)
    _refused_to(
        services,
        ("marketer",),
        "Set up Apple Wallet passes",
        (("save", _wallet_form(authority, apns)),),
    )
    assert _rows(services) == [] and _entries(services) == []


def _google_form(google: GoogleWalletPeer, **more: str) -> dict[str, str]:
    return {
        "channel": "wallet.google",
        "provider": "google",
        "issuer_id": GOOGLE_ISSUER,
        "service_account": json.dumps(google.service_account(), indent=2),
        "class_suffix": "maison_loyalty",
        "origins": "https://maison.example,\r\nhttps://shop.maison.example:8443",
        "api_base": google.url,
        **more,
    }


def _claims(save_url: str) -> dict[str, Any]:
    import base64

    claims = save_url.rsplit("/", 1)[1].split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4))))


def test_google_wallet_is_tested_against_its_issuer_and_saved_beside_apple_wallet(
    wallet: tuple[Services, dict[str, Path], ApnsPeer],
) -> None:
    services, authority, apns = wallet
    with GoogleWalletPeer(GOOGLE_ISSUER, {GOOGLE_CLASS}) as google:
        key_lines = [
            line
            for line in google.service_account()["private_key"].splitlines()
            if "--" not in line
        ]
        with _signed_in(services) as owner:
            page = unescape(owner.get("/console/settings").text)
            assert "Set up Google Wallet (generic passes)" in page
            # Tested on its own (no Apple pass needed): a token, then the issuer read.
            tested = _post(owner, "test", _google_form(google), **{"HX-Request": "true"})
            assert 'class="ok"' in tested.text and "took our credentials" in tested.text
            assert ("GET", f"/walletobjects/v1/issuer/{GOOGLE_ISSUER}") in google.requests
            other = _post(
                owner, "test", _google_form(google, issuer_id="42"), **{"HX-Request": "true"}
            )
            assert "refused our credentials: 403 The caller does not have permission" in (
                unescape(other.text)
            )
            # Not saved without Apple Wallet's passes, which its cards copy.
            alone = _post(owner, "save", _google_form(google))
            assert alone.status_code == 400
            assert "set up Apple Wallet's passes first" in unescape(alone.text)
            french = owner.post(
                "/console/settings/providers/save",
                data={"csrf": _csrf(owner), **_google_form(google)},
                headers={"Accept-Language": "fr"},
            )
            assert "configurez d’abord les cartes Apple Wallet" in unescape(french.text)
            assert _rows(services) == []
            for form, problem in (
                (_google_form(google, issuer_id="maison"), "Issuer ID must be the digits"),
                (
                    _google_form(google, origins="https://maison.example/shop"),
                    "https://maison.example/shop is not a web origin",
                ),
                (_google_form(google, origins="http://maison.example"), "is not a web origin"),
                (_google_form(google, class_suffix="maison loyalty"), "Pass class (the part"),
                (_google_form(google, service_account="{}"), "has no client_email"),
            ):
                answer = _post(owner, "save", form)
                assert answer.status_code == 400 and problem in unescape(answer.text), problem
            # Beside Apple Wallet: saved, and a pass issued is offered for Google Wallet
            # with the origins typed.
            assert _post(owner, "save", _wallet_form(authority, apns)).status_code == 303
            assert _post(owner, "save", _google_form(google)).status_code == 303
            page = owner.get("/console/settings").text
            assert not any(line in page for line in key_lines)
            assert "https://shop.maison.example:8443" in page  # the origins, shown back
        with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
            opt_in(services, "ana")
            issued = issue(client, "ana")
        claims = _claims(issued["google_save_url"])
        assert claims["origins"] == ["https://maison.example", "https://shop.maison.example:8443"]
        [card] = claims["payload"]["genericObjects"]
        assert card["classId"] == GOOGLE_CLASS
        [entry] = [e for e in _entries(services) if e.target == "channels.wallet.google"]
        assert entry.after is not None
        assert entry.after["service_account"] == "changed"
        assert not any(line in json.dumps(entry.after) for line in key_lines)
        # Apple Wallet removed: Google's kept, not used, and the page says so.
        with _signed_in(services) as owner:
            removed = owner.post(
                "/console/settings/providers/remove",
                data={"csrf": _csrf(owner), "channel": "wallet"},
                follow_redirects=False,
            )
            assert removed.status_code == 303
            page = unescape(owner.get("/console/settings").text)
            assert "Not in use: Wallet has no Apple Wallet passes set up" in page
        assert [row.channel for row in _rows(services)] == ["wallet.google"]
    _refused_to(
        services,
        ("marketer",),
        "Set up Google Wallet",
        (("save", _google_form(google)), ("test", _google_form(google))),
    )
