"""Apple Wallet: signed .pkpass and .order packages checked with `openssl smime -verify`
against a test certificate authority, and Apple's pass web service protocol."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from litestar.testing import TestClient

from parcours.app import create_app
from parcours.channels.wallet import PassSigner, order_package
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.conftest import admin_headers
from tests.peers import ApnsPeer, make_authority
from tests.test_channels import CERTAIN, events_named, journey, outbox, publish
from tests.test_journeys_engine import opt_in, track

PASS_TYPE = "pass.example.maison.loyalty"
GOOGLE_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
GOOGLE_ACCOUNT = {
    "type": "service_account",
    "project_id": "maison-wallet",
    "private_key_id": "k1",
    "private_key": GOOGLE_KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode(),
    "client_email": "wallet@maison-wallet.iam.gserviceaccount.com",
    "token_uri": "https://oauth2.googleapis.com/token",
}


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_authority(tmp_path_factory.mktemp("ca"), PASS_TYPE)


def openssl_verifies(signature: bytes, content: bytes, root: Path, folder: Path) -> bool:
    (folder / "signature").write_bytes(signature)
    (folder / "content").write_bytes(content)
    result = subprocess.run(
        [
            "openssl",
            "smime",
            "-verify",
            "-binary",
            "-inform",
            "DER",
            "-in",
            str(folder / "signature"),
            "-content",
            str(folder / "content"),
            "-CAfile",
            str(root),
            "-purpose",
            "any",
            "-out",
            "/dev/null",
        ],
        capture_output=True,
    )
    return result.returncode == 0


@pytest.fixture
def apns(authority: dict[str, Path]) -> Iterator[ApnsPeer]:
    """APNs for pass updates: it wants the Pass Type ID certificate as TLS client."""
    with ApnsPeer(authority, client_ca=authority["root"]) as peer:
        yield peer


@pytest.fixture
def wired(
    settings: Settings, clock: SimulatedClock, authority: dict[str, Path], apns: ApnsPeer
) -> Iterator[tuple[Services, TestClient[Any]]]:
    channels = {
        "sandbox": CERTAIN,
        "wallet": {
            "provider": "apple",
            "pass_type_identifier": PASS_TYPE,
            "team_identifier": "TEAM123456",
            "organization_name": "Maison",
            "certificate_file": str(authority["cert"]),
            "key_file": str(authority["key"]),
            "wwdr_file": str(authority["wwdr"]),
            "apns_api_base": apns.url,
            "apns_ca_file": str(authority["root"]),
            "google": {
                "issuer_id": "3388000000012345678",
                "class_suffix": "maison_loyalty",
                "origins": ["https://maison.example"],
                "service_account": json.dumps(GOOGLE_ACCOUNT),
            },
        },
    }
    services = Services.open(settings.with_overrides(channels=channels), clock=clock)
    try:
        with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
            yield services, client
    finally:
        services.close()


def issue(client: TestClient[Any], customer: str) -> dict[str, Any]:
    answer = client.post(
        "/api/wallet/passes",
        json={
            "customer": customer,
            "kind": "loyalty",
            "fields": {"label": "Points", "value": "120", "description": "Maison loyalty card"},
        },
        headers=admin_headers(),
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def test_a_pass_is_signed_and_packed_as_wallet_wants(
    wired: tuple[Services, TestClient[Any]], authority: dict[str, Path], tmp_path: Path
) -> None:
    services, client = wired
    opt_in(services, "ana")
    issued = issue(client, "ana")
    download = client.get(issued["download"].removeprefix(services.settings.resolved_public_url))
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/vnd.apple.pkpass"
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    names = set(archive.namelist())
    assert {"pass.json", "icon.png", "manifest.json", "signature"} <= names
    manifest = json.loads(archive.read("manifest.json"))
    assert set(manifest) == names - {"manifest.json", "signature"}
    for name, digest in manifest.items():
        assert hashlib.sha1(archive.read(name)).hexdigest() == digest
    document = json.loads(archive.read("pass.json"))
    assert document["passTypeIdentifier"] == PASS_TYPE
    assert document["serialNumber"] == issued["serial"]
    assert document["webServiceURL"] == "http://127.0.0.1:8000/wallet"
    assert document["storeCard"]["primaryFields"][0]["value"] == "120"
    signature, raw_manifest = archive.read("signature"), archive.read("manifest.json")
    assert openssl_verifies(signature, raw_manifest, authority["root"], tmp_path)
    assert not openssl_verifies(signature, raw_manifest + b" ", authority["root"], tmp_path)
    assert client.get("/wallet/download/forged.pkpass").status_code == 404


def test_the_pass_web_service_and_a_wallet_message(
    wired: tuple[Services, TestClient[Any]], clock: SimulatedClock, apns: ApnsPeer
) -> None:
    services, client = wired
    opt_in(services, "ana")
    serial = issue(client, "ana")["serial"]
    with services.db.read() as conn:
        from parcours.messaging import passes

        token = passes.get(conn, serial)["auth_token"]  # type: ignore[index]
    path = f"/wallet/v1/devices/dev-1/registrations/{PASS_TYPE}/{serial}"
    wrong = client.post(path, json={"pushToken": "p"}, headers={"Authorization": "ApplePass x"})
    assert wrong.status_code == 401
    auth = {"Authorization": f"ApplePass {token}"}
    assert client.post(path, json={"pushToken": "apns-1"}, headers=auth).status_code == 201
    clock.advance_ms(1000)
    assert client.post(path, json={"pushToken": "apns-1"}, headers=auth).status_code == 200
    listed = client.get(f"/wallet/v1/devices/dev-1/registrations/{PASS_TYPE}").json()
    assert listed["serialNumbers"] == [serial]
    tag = listed["lastUpdated"]
    nothing = client.get(
        f"/wallet/v1/devices/dev-1/registrations/{PASS_TYPE}?passesUpdatedSince={tag}"
    )
    assert nothing.status_code == 204
    # A journey step on the Wallet channel: the customer's pass carries the news.
    clock.advance_ms(1000)
    publish(services, journey("{channel: wallet, template: t, purpose: transactional}"))
    track(services, "ana", "Go")
    [message] = outbox(services)
    assert message["channel"] == "wallet" and message["state"] == "sent"
    # The device was told, through APNs with the pass certificate, that the pass changed.
    [pushed] = apns.received
    assert pushed["token"] == "apns-1" and pushed["headers"]["apns-topic"] == PASS_TYPE
    changed = client.get(
        f"/wallet/v1/devices/dev-1/registrations/{PASS_TYPE}?passesUpdatedSince={tag}"
    ).json()
    assert changed["serialNumbers"] == [serial] and int(changed["lastUpdated"]) > int(tag)
    latest = client.get(f"/wallet/v1/passes/{PASS_TYPE}/{serial}", headers=auth)
    assert latest.status_code == 200
    back = json.loads(zipfile.ZipFile(io.BytesIO(latest.content)).read("pass.json"))
    news = back["storeCard"]["backFields"][0]
    assert news["label"] == "Hello" and news["value"] == "From Parcours demo shop"
    unchanged = client.get(
        f"/wallet/v1/passes/{PASS_TYPE}/{serial}",
        headers={**auth, "If-Modified-Since": latest.headers["last-modified"]},
    )
    assert unchanged.status_code == 304
    assert client.delete(path, headers=auth).status_code == 200
    assert client.post("/wallet/v1/log", json={"logs": ["a device said hello"]}).status_code == 200
    # Without a device holding the pass, Wallet no longer reaches Ana.
    clock.advance_ms(1000)
    track(services, "ana", "Go")
    held = events_named(services, "Message Held")
    assert held and held[-1]["reason"] == "no Wallet pass installed"


def test_an_order_package_is_signed_over_sha256(authority: dict[str, Path], tmp_path: Path) -> None:
    signer = PassSigner.from_files(authority["cert"], authority["key"], authority["wwdr"])
    order = {
        "schemaVersion": 1,
        "orderIdentifier": "o-1",
        "orderType": "ecommerce",
        "status": "open",
        "fulfillments": [{"fulfillmentType": "shipping", "status": "shipped"}],
    }
    archive = zipfile.ZipFile(io.BytesIO(order_package(order, signer)))
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest == {"order.json": hashlib.sha256(archive.read("order.json")).hexdigest()}
    assert openssl_verifies(
        archive.read("signature"), archive.read("manifest.json"), authority["root"], tmp_path
    )


def test_the_same_card_is_offered_for_google_wallet(
    wired: tuple[Services, TestClient[Any]],
) -> None:
    import base64

    services, client = wired
    opt_in(services, "ana")
    issued = issue(client, "ana")
    url = issued["google_save_url"]
    assert url.startswith("https://pay.google.com/gp/v/save/")
    token = url.rsplit("/", 1)[1]
    head, claims, signature = token.split(".")

    def decode(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    GOOGLE_KEY.public_key().verify(
        decode(signature), f"{head}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    document = json.loads(decode(claims))
    assert document["aud"] == "google" and document["typ"] == "savetowallet"
    assert document["iss"] == GOOGLE_ACCOUNT["client_email"]
    assert document["origins"] == ["https://maison.example"]
    [card] = document["payload"]["genericObjects"]
    assert card["id"] == f"3388000000012345678.{issued['serial']}"
    assert card["classId"] == "3388000000012345678.maison_loyalty"
    assert card["header"]["defaultValue"]["value"] == "120"
