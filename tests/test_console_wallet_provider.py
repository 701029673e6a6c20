"""Apple Wallet set up on the console's Settings page (docs/console.md, "Settings";
docs/channels.md, "Providers set up in the console"), on SQLite and PostgreSQL: an owner
pastes the Pass Type ID certificate, its key and Apple's WWDR certificate; a pass issued
then is signed with them (checked by `openssl smime -verify` against the test authority)
and a Wallet message tells the phone through APNs with that certificate as TLS client;
the key is never in the page, the audit log or the logs; certificates and keys that do
not go together are named on their field (EN, FR); a non-owner is refused."""

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
from tests.peers import ApnsPeer, make_authority
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
from tests.test_wallet import PASS_TYPE, issue, openssl_verifies


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
