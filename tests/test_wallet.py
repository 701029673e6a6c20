"""Apple Wallet: signed .pkpass and .order packages checked with `openssl smime -verify`
against a test certificate authority, Apple's pass web service protocol, pass changes
reaching the phones (APNs) and Google Wallet (its REST API on loopback), and Wallet orders
kept in step with their parcel through Apple's Wallet Orders web service."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import zipfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from litestar.testing import TestClient

from parcours import commerce
from parcours.app import create_app
from parcours.channels.wallet import ORDER_MEDIA_TYPE, PassSigner, iso_duration, order_package
from parcours.commerce import statuses
from parcours.ingest.carriers import sign
from parcours.messaging import wallet_orders
from parcours.messaging.tables import wallet_orders as wallet_orders_table
from parcours.messaging.wallet_orders import APPLE_STATUSES
from parcours.runtime.clock import SimulatedClock, iso
from parcours.runtime.i18n import text
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.conftest import admin_headers, make_event
from tests.peers import ApnsPeer, GoogleWalletPeer, make_authority
from tests.test_channels import CERTAIN, events_named, journey, outbox, publish, publish_strict
from tests.test_journeys_engine import opt_in, track

PASS_TYPE = "pass.example.maison.loyalty"
ORDER_TYPE = "order.example.maison"
GOOGLE_ISSUER = "3388000000012345678"
GOOGLE_CLASS = f"{GOOGLE_ISSUER}.maison_loyalty"
CARRIER_SECRET = "carrier-secret"


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
def google() -> Iterator[GoogleWalletPeer]:
    """Google Wallet's REST API, where the brand made the loyalty class."""
    with GoogleWalletPeer(GOOGLE_ISSUER, {GOOGLE_CLASS}) as peer:
        yield peer


def apple_wallet(authority: dict[str, Path], apns: ApnsPeer) -> dict[str, Any]:
    """`channels.wallet` for Apple passes signed under the test authority, the phones
    holding them told through the APNs peer."""
    return {
        "provider": "apple",
        "pass_type_identifier": PASS_TYPE,
        "team_identifier": "TEAM123456",
        "organization_name": "Maison",
        "certificate_file": str(authority["cert"]),
        "key_file": str(authority["key"]),
        "wwdr_file": str(authority["wwdr"]),
        "apns_api_base": apns.url,
        "apns_ca_file": str(authority["root"]),
    }


@pytest.fixture
def wired(
    settings: Settings,
    clock: SimulatedClock,
    authority: dict[str, Path],
    apns: ApnsPeer,
    google: GoogleWalletPeer,
) -> Iterator[tuple[Services, TestClient[Any]]]:
    channels = {
        "sandbox": CERTAIN,
        "wallet": {
            **apple_wallet(authority, apns),
            "google": {
                "issuer_id": GOOGLE_ISSUER,
                "class_suffix": "maison_loyalty",
                "origins": ["https://maison.example"],
                "service_account": json.dumps(google.service_account()),
                "api_base": google.url,
            },
            "orders": {
                "order_type_identifier": ORDER_TYPE,
                "merchant_identifier": "merchant.example.maison",
                "certificate_file": str(authority["order_cert"]),
                "key_file": str(authority["order_key"]),
                "order_management_url": "https://maison.example/account/orders/{order_id}",
            },
        },
    }
    configured = settings.with_overrides(channels=channels, carrier_webhook_secret=CARRIER_SECRET)
    services = Services.open(configured, clock=clock)
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

        token = passes.get(conn, serial).auth_token  # type: ignore[union-attr]
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
    wired: tuple[Services, TestClient[Any]], google: GoogleWalletPeer
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

    google.key.public_key().verify(
        decode(signature), f"{head}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    document = json.loads(decode(claims))
    assert document["aud"] == "google" and document["typ"] == "savetowallet"
    assert document["iss"] == google.service_account()["client_email"]
    assert document["origins"] == ["https://maison.example"]
    [card] = document["payload"]["genericObjects"]
    assert card["id"] == f"{GOOGLE_ISSUER}.{issued['serial']}"
    assert card["classId"] == GOOGLE_CLASS
    assert card["header"]["defaultValue"]["value"] == "120"


def register_device(
    client: TestClient[Any], services: Services, serial: str, device: str, push_token: str
) -> None:
    from parcours.messaging import passes

    with services.db.read() as conn:
        token = passes.get(conn, serial).auth_token  # type: ignore[union-attr]
    answer = client.post(
        f"/wallet/v1/devices/{device}/registrations/{PASS_TYPE}/{serial}",
        json={"pushToken": push_token},
        headers={"Authorization": f"ApplePass {token}"},
    )
    assert answer.status_code == 201


def test_new_points_reach_the_phones_and_google_wallet(
    wired: tuple[Services, TestClient[Any]],
    clock: SimulatedClock,
    apns: ApnsPeer,
    google: GoogleWalletPeer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    services, client = wired
    opt_in(services, "ana")
    serial = issue(client, "ana")["serial"]
    register_device(client, services, serial, "dev-1", "apns-1")
    assert google.requests == []  # offered by a link; Google has not been told of it yet
    # Ana earns points: the card changes.
    clock.advance_ms(1000)
    answer = client.patch(
        f"/api/wallet/passes/{serial}", json={"fields": {"value": "150"}}, headers=admin_headers()
    )
    assert answer.status_code == 200 and answer.json()["fields"]["value"] == "150"
    services.worker.run_due()
    # Her phone is told (APNs, the pass type as topic) and finds the new value.
    [pushed] = apns.received
    assert pushed["token"] == "apns-1" and pushed["headers"]["apns-topic"] == PASS_TYPE
    listed = client.get(f"/wallet/v1/devices/dev-1/registrations/{PASS_TYPE}").json()
    assert listed["serialNumbers"] == [serial]
    # Google Wallet never held the object (she has not saved it yet): it is inserted, so
    # that it shows 150 when she does.
    object_id = f"{GOOGLE_ISSUER}.{serial}"
    assert [method for method, _ in google.requests] == ["PATCH", "POST"]
    assert google.objects[object_id]["header"]["defaultValue"]["value"] == "150"
    # A wallet message (a send step) patches the object she now holds.
    clock.advance_ms(1000)
    publish(services, journey("{channel: wallet, template: t, purpose: transactional}"))
    track(services, "ana", "Go")
    assert [method for method, _ in google.requests] == ["PATCH", "POST", "PATCH"]
    [news] = google.objects[object_id]["textModulesData"]
    assert news["header"] == "Hello" and news["body"] == "From Parcours demo shop"
    # Google is unavailable, then rate limits: the change is kept and tried again later.
    google.fail_next = [503, 429]
    clock.advance_ms(1000)
    client.patch(
        f"/api/wallet/passes/{serial}", json={"fields": {"value": "180"}}, headers=admin_headers()
    )
    services.worker.run_due()
    assert google.objects[object_id]["header"]["defaultValue"]["value"] == "150"
    for _ in range(2):
        clock.advance_ms(60_000)
        services.worker.run_due()
    assert google.objects[object_id]["header"]["defaultValue"]["value"] == "180"
    assert [method for method, _ in google.requests][-3:] == ["PATCH", "PATCH", "PATCH"]
    # Nothing secret in the logs: no access token, no key.
    assert google.tokens and not any(token in caplog.text for token in google.tokens)
    assert "PRIVATE KEY" not in caplog.text
    # Bad input is refused and changes nothing.
    assert (
        client.patch(
            "/api/wallet/passes/nope", json={"fields": {"value": "1"}}, headers=admin_headers()
        ).status_code
        == 404
    )
    assert (
        client.patch(
            f"/api/wallet/passes/{serial}",
            json={"fields": {"message": {}}},
            headers=admin_headers(),
        ).status_code
        == 400
    )
    assert (
        client.patch(
            f"/api/wallet/passes/{serial}", json={"value": "1"}, headers=admin_headers()
        ).status_code
        == 400
    )


# ---- Wallet orders -----------------------------------------------------------------------

CONFIRMATION = (
    resources.files("parcours.journeys") / "templates" / "order-confirmation.yaml"
).read_text(encoding="utf-8")
REGISTRATIONS = f"/wallet/orders/v1/devices/dev-1/registrations/{ORDER_TYPE}"
HOUR = 3_600_000


def place_order(services: Services, user: str = "ana", order_id: str = "o-1") -> None:
    track(
        services,
        user,
        "Order Completed",
        order_id=order_id,
        total="59.90",
        currency="EUR",
        products=[
            {"product_id": "p1", "name": "Pull", "quantity": 2, "price": "29.95", "sku": "P-1"}
        ],
    )


def carrier(services: Services, name: str, at: int, **properties: Any) -> None:
    """A carrier's update: it names the order, not the person."""
    event = make_event(
        "track",
        identity_required=False,
        event=name,
        at=at,
        properties={"order_id": "o-1", "shipment_id": "sh-1", **properties},
    )
    services.writer.append_sync([event])
    services.worker.run_due()


def order_of(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == ORDER_MEDIA_TYPE
    document: dict[str, Any] = json.loads(
        zipfile.ZipFile(io.BytesIO(response.content)).read("order.json")
    )
    return document


def added(services: Services, client: TestClient[Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The confirmation's "Add to Apple Wallet" link, followed: the order, and the
    Authorization header of its web service calls."""
    [message] = [m for m in outbox(services) if m["template"] == "order-confirmation"]
    link = re.search(r'href="([^"]*/wallet/orders/add/[^"]+)"', message["content"]["html"])
    assert link is not None, message["content"]["html"]
    order = order_of(client.get(link.group(1).removeprefix(services.settings.resolved_public_url)))
    return order, {"Authorization": f"AppleOrder {order['authenticationToken']}"}


def test_an_order_in_apple_wallet_follows_its_parcel(
    wired: tuple[Services, TestClient[Any]],
    clock: SimulatedClock,
    apns: ApnsPeer,
    authority: dict[str, Path],
    tmp_path: Path,
) -> None:
    services, client = wired
    opt_in(services, "ana", locale="fr")
    publish_strict(services, CONFIRMATION)
    place_order(services)
    # The confirmation offers the order for Apple Wallet, in Ana's language.
    [message] = outbox(services)
    assert "La suivre dans Apple Wallet" in message["content"]["html"]
    [link] = re.findall(r'href="([^"]*/wallet/orders/add/[^"]+)"', message["content"]["html"])
    answer = client.get(link.removeprefix(services.settings.resolved_public_url))
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    manifest = json.loads(archive.read("manifest.json"))
    assert set(manifest) == {"order.json", "logo.png"}
    signature, raw_manifest = archive.read("signature"), archive.read("manifest.json")
    assert openssl_verifies(signature, raw_manifest, authority["root"], tmp_path)
    assert signer_name(signature, tmp_path) == f"Order Type ID: {ORDER_TYPE}"
    order, auth = added(services, client)
    assert order["orderTypeIdentifier"] == ORDER_TYPE and order["orderType"] == "ecommerce"
    assert order["orderNumber"] == "o-1" and order["status"] == "open"
    assert order["webServiceURL"] == "http://127.0.0.1:8000/wallet/orders"
    assert order["orderManagementURL"] == "https://maison.example/account/orders/o-1"
    assert order["merchant"]["merchantIdentifier"] == "merchant.example.maison"
    assert order["lineItems"] == [
        {
            "title": "Pull",
            "quantity": 2,
            "price": {"amount": 29.95, "currency": "EUR"},
            "sku": "P-1",
        }
    ]
    assert order["payment"]["total"] == {"amount": 59.9, "currency": "EUR"}
    assert order["fulfillments"] == []
    identifier = order["orderIdentifier"]
    # Wallet registers Ana's iPhone for the order's updates.
    path = f"{REGISTRATIONS}/{identifier}"
    wrong = {"Authorization": "AppleOrder not-the-token"}
    assert client.post(path, json={"pushToken": "apns-o"}, headers=wrong).status_code == 401
    unknown = f"{REGISTRATIONS}/ord_0123"
    assert client.post(unknown, json={"pushToken": "apns-o"}, headers=auth).status_code == 404
    other_type = path.replace(ORDER_TYPE, "order.example.other")
    assert client.post(other_type, json={"pushToken": "apns-o"}, headers=auth).status_code == 404
    assert client.post(path, json={}, headers=auth).status_code == 400
    assert client.post(path, json={"pushToken": "apns-o"}, headers=auth).status_code == 201
    assert client.post(path, json={"pushToken": "apns-o"}, headers=auth).status_code == 200
    listed = client.get(REGISTRATIONS).json()
    assert listed["orderIdentifiers"] == [identifier]
    tag = listed["lastModified"]
    assert client.get(f"{REGISTRATIONS}?ordersModifiedSince={tag}").status_code == 204
    latest_path = f"/wallet/orders/v1/orders/{ORDER_TYPE}/{identifier}"
    first = client.get(latest_path, headers=auth)
    assert order_of(first)["orderIdentifier"] == identifier
    seen = {**auth, "If-Modified-Since": first.headers["last-modified"]}
    assert client.get(latest_path, headers=seen).status_code == 304
    assert client.get(latest_path, headers=wrong).status_code == 401
    assert client.get(latest_path.replace(identifier, "ord_0123"), headers=auth).status_code == 404
    # The carrier scans the parcel: the order shows it on its way, and the phone is told.
    estimated = clock.now_ms() + 48 * HOUR
    carrier(
        services,
        "Shipment In Transit",
        clock.now_ms(),
        status="in_transit",
        carrier="Colissimo",
        tracking_number="6A12345678901",
        tracking_url="https://www.laposte.fr/outils/suivre-vos-envois?code=6A12345678901",
        estimated_delivery_at=iso(estimated),
    )
    [pushed] = apns.received
    assert pushed["token"] == "apns-o" and pushed["headers"]["apns-topic"] == ORDER_TYPE
    assert pushed["body"] == {}
    changed = client.get(f"{REGISTRATIONS}?ordersModifiedSince={tag}").json()
    assert changed["orderIdentifiers"] == [identifier]
    assert int(changed["lastModified"]) > int(tag)
    moving = order_of(client.get(latest_path, headers=seen))
    assert moving["status"] == "open"
    [fulfillment] = moving["fulfillments"]
    assert fulfillment == {
        "fulfillmentType": "shipping",
        "fulfillmentIdentifier": "sh-1",
        "status": "onTheWay",
        "statusDescription": "En route",
        "carrier": "Colissimo",
        "trackingNumber": "6A12345678901",
        "trackingURL": "https://www.laposte.fr/outils/suivre-vos-envois?code=6A12345678901",
        "estimatedDeliveryAt": iso(estimated),
        "shippedAt": iso(clock.now_ms()),
    }
    assert moving["updatedAt"] > order["updatedAt"]
    # Out for delivery, then delivered: the order is complete.
    clock.advance_ms(24 * HOUR)
    carrier(services, "Shipment Out For Delivery", clock.now_ms(), status="out_for_delivery")
    clock.advance_ms(3 * HOUR)
    carrier(services, "Shipment Delivered", clock.now_ms(), status="delivered")
    assert [p["token"] for p in apns.received] == ["apns-o"] * 3
    done = order_of(client.get(latest_path, headers=auth))
    assert done["status"] == "completed"
    assert done["fulfillments"][0]["status"] == "delivered"
    assert done["fulfillments"][0]["deliveredAt"] == iso(clock.now_ms())
    assert done["fulfillments"][0]["statusDescription"] == "Livrée"
    merchant_view = client.get("/api/wallet/orders/o-1", headers=admin_headers()).json()
    assert merchant_view["status"] == "completed" and merchant_view["devices"] == 1
    assert merchant_view["fulfillment_status"] == "delivered"
    assert merchant_view["add_to_wallet"] == link
    # Ana removes the order from Wallet: no more pushes, the order still follows refunds.
    assert client.delete(path, headers=auth).status_code == 200
    clock.advance_ms(HOUR)
    track(services, "ana", "Order Refunded", order_id="o-1", total="59.90", currency="EUR")
    assert len(apns.received) == 3
    refunded = order_of(client.get(latest_path, headers=auth))
    assert refunded["payment"]["status"] == "refunded"
    assert refunded["statusDescription"] == "Remboursée : 59.90 EUR"
    assert client.post("/wallet/orders/v1/log", json={"logs": ["hello"]}).status_code == 200


def signer_name(signature: bytes, folder: Path) -> str:
    """The common name of the certificate that signed a package."""
    (folder / "sig.der").write_bytes(signature)
    printed = subprocess.run(
        ["openssl", "pkcs7", "-inform", "DER", "-in", str(folder / "sig.der"), "-print_certs"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = re.findall(r"subject=.*?CN\s*=\s*([^\n,]+)", printed)
    return next(name.strip() for name in names if "Type ID" in name)


def ordered(services: Services, client: TestClient[Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Ana places order o-1 and adds it to Wallet from her confirmation."""
    opt_in(services, "ana")
    publish_strict(services, CONFIRMATION)
    place_order(services)
    return added(services, client)


def test_a_late_scan_does_not_move_a_parcel_back_and_a_cancellation_shows(
    wired: tuple[Services, TestClient[Any]], clock: SimulatedClock
) -> None:
    services, client = wired
    order, auth = ordered(services, client)
    latest_path = f"/wallet/orders/v1/orders/{ORDER_TYPE}/{order['orderIdentifier']}"
    delivered_at = clock.now_ms() + 2 * HOUR
    clock.advance_ms(3 * HOUR)
    carrier(services, "Shipment Delivered", delivered_at)
    carrier(services, "Shipment In Transit", delivered_at - HOUR, tracking_number="TN-1")
    [fulfillment] = order_of(client.get(latest_path, headers=auth))["fulfillments"]
    assert fulfillment["status"] == "delivered" and fulfillment["trackingNumber"] == "TN-1"
    assert fulfillment["statusDescription"] == "Delivered"
    # A second order, cancelled before it ships.
    place_order(services, order_id="o-2")
    carrier(services, "Shipment Label Created", clock.now_ms(), order_id="o-2", shipment_id="sh-2")
    clock.advance_ms(HOUR)
    track(services, "ana", "Order Cancelled", order_id="o-2")
    view = client.get("/api/wallet/orders/o-2", headers=admin_headers()).json()
    link = view["add_to_wallet"].removeprefix(services.settings.resolved_public_url)
    cancelled = order_of(client.get(link))
    assert cancelled["status"] == "cancelled"
    assert cancelled["statusDescription"] == "Order cancelled"
    [shipment] = cancelled["fulfillments"]
    assert shipment["status"] == "cancelled" and shipment["statusDescription"] == "Cancelled"
    assert client.get("/api/wallet/orders/o-404", headers=admin_headers()).status_code == 404


def test_a_phone_that_is_gone_is_forgotten(
    wired: tuple[Services, TestClient[Any]], clock: SimulatedClock, apns: ApnsPeer
) -> None:
    services, client = wired
    order, auth = ordered(services, client)
    path = f"{REGISTRATIONS}/{order['orderIdentifier']}"
    assert client.post(path, json={"pushToken": "apns-gone"}, headers=auth).status_code == 201
    apns.gone.add("apns-gone")
    clock.advance_ms(HOUR)
    carrier(services, "Shipment In Transit", clock.now_ms())
    assert apns.received == []
    assert client.get(REGISTRATIONS).status_code == 204  # the device no longer holds it


def test_a_wallet_order_link_that_is_not_ours_is_refused_in_the_customers_words(
    wired: tuple[Services, TestClient[Any]],
) -> None:
    _, client = wired
    answer = client.get("/wallet/orders/add/forged.order", headers={"Accept-Language": "fr"})
    assert answer.status_code == 404
    assert answer.text.startswith("Ce lien n’est pas valide")


def test_a_wrong_wallet_orders_setting_stops_parcours_with_its_name(
    settings: Settings, authority: dict[str, Path]
) -> None:
    from parcours.runtime.settings import SettingsError

    wallet = {
        "provider": "apple",
        "pass_type_identifier": PASS_TYPE,
        "team_identifier": "TEAM123456",
        "organization_name": "Maison",
        "certificate_file": str(authority["cert"]),
        "key_file": str(authority["key"]),
        "wwdr_file": str(authority["wwdr"]),
        "apns": False,
    }
    orders = {
        "order_type_identifier": ORDER_TYPE,
        "merchant_identifier": "merchant.example.maison",
        "certificate_file": str(authority["order_cert"]),
        "key_file": str(authority["order_key"]),
        "order_management_url": "https://maison.example/orders/{order_id}",
    }
    for broken, message in (
        ({**orders, "order_type_identifier": None}, "orders.order_type_identifier is required"),
        ({**orders, "order_management_url": "maison.example"}, "orders.order_management_url"),
        ({**orders, "key_file": "/nowhere.pem"}, "orders: /nowhere.pem does not exist"),
    ):
        channels = {"wallet": {**wallet, "orders": {k: v for k, v in broken.items() if v}}}
        with pytest.raises(SettingsError, match=message):
            Services.open(settings.with_overrides(channels=channels))


# ---- Wallet orders read commerce's shipments ----------------------------------------------


def carrier_webhook(
    services: Services, client: TestClient[Any], event_id: str, **body: Any
) -> None:
    """The carrier's signed webhook (docs/commerce.md), then the jobs it made."""
    raw = json.dumps({"event_id": event_id, "order_id": "o-1", "shipment_id": "sh-1", **body})
    answer = client.post(
        "/api/commerce/carrier-webhook",
        content=raw.encode(),
        headers={"X-Parcours-Signature": sign(CARRIER_SECRET, raw.encode())},
    )
    assert answer.status_code == 200, answer.text
    services.worker.run_due()


def as_commerce_has_it(services: Services, fulfillment: dict[str, Any]) -> None:
    """The fulfillment shows the parcel as `commerce.shipment` gives it: its status (in
    Apple's word, described in commerce's), estimated window, carrier and link (a web
    address only, as the tracking page)."""
    with services.db.read() as conn:
        parcel = commerce.shipment(conn, fulfillment["fulfillmentIdentifier"])
    assert parcel is not None
    assert fulfillment["status"] == APPLE_STATUSES[parcel.status]
    assert fulfillment["statusDescription"] == text("en", f"wallet_order.shipment.{parcel.status}")
    assert fulfillment.get("carrier") == parcel.carrier
    assert fulfillment.get("trackingNumber") == parcel.tracking_number
    web = parcel.tracking_url and parcel.tracking_url.startswith(("https://", "http://"))
    assert fulfillment.get("trackingURL") == (parcel.tracking_url if web else None)
    assert parcel.estimated_from is not None and parcel.estimated_to is not None
    assert fulfillment["estimatedDeliveryAt"] == iso(parcel.estimated_from)
    window = parcel.estimated_to - parcel.estimated_from
    assert fulfillment.get("estimatedDeliveryWindowDuration") == (
        iso_duration(window) if window else None
    )


def test_a_parcel_reported_by_the_carrier_webhook_shows_in_wallet_as_commerce_has_it(
    wired: tuple[Services, TestClient[Any]], clock: SimulatedClock, apns: ApnsPeer
) -> None:
    services, client = wired
    order, auth = ordered(services, client)
    identifier = order["orderIdentifier"]
    path = f"{REGISTRATIONS}/{identifier}"
    assert client.post(path, json={"pushToken": "apns-o"}, headers=auth).status_code == 201
    latest_path = f"/wallet/orders/v1/orders/{ORDER_TYPE}/{identifier}"
    tag = client.get(REGISTRATIONS).json()["lastModified"]
    # The carrier has the parcel, to be delivered the day after tomorrow between 9 and 13.
    clock.advance_ms(HOUR)
    day_after = clock.now_ms() + 48 * HOUR
    carrier_webhook(
        services,
        client,
        "evt-1",
        status="in_transit",
        occurred_at=iso(clock.now_ms()),
        carrier="Colissimo",
        tracking_number="6A1",
        tracking_url="https://www.laposte.fr/suivi?code=6A1",
        estimated_delivery_from=iso(day_after),
        estimated_delivery_to=iso(day_after + 4 * HOUR),
    )
    assert [p["token"] for p in apns.received] == ["apns-o"]
    changed = client.get(f"{REGISTRATIONS}?ordersModifiedSince={tag}").json()
    assert changed["orderIdentifiers"] == [identifier]
    [fulfillment] = order_of(client.get(latest_path, headers=auth))["fulfillments"]
    assert fulfillment["status"] == "onTheWay" and fulfillment["statusDescription"] == "On its way"
    assert fulfillment["estimatedDeliveryWindowDuration"] == "PT4H"
    assert fulfillment["shippedAt"] == iso(clock.now_ms())
    as_commerce_has_it(services, fulfillment)
    # A later scan: out for delivery, the window narrowed; the phone is told again.
    clock.advance_ms(40 * HOUR)
    carrier_webhook(
        services,
        client,
        "evt-2",
        status="out_for_delivery",
        occurred_at=iso(clock.now_ms()),
        estimated_delivery_from=iso(day_after + HOUR),
        estimated_delivery_to=iso(day_after + 2 * HOUR + 30 * 60_000),
    )
    assert [p["token"] for p in apns.received] == ["apns-o"] * 2
    later = client.get(f"{REGISTRATIONS}?ordersModifiedSince={changed['lastModified']}").json()
    assert later["orderIdentifiers"] == [identifier]
    [fulfillment] = order_of(client.get(latest_path, headers=auth))["fulfillments"]
    assert fulfillment["status"] == "outForDelivery"
    assert fulfillment["estimatedDeliveryWindowDuration"] == "PT1H30M"
    as_commerce_has_it(services, fulfillment)
    # A report that moves nothing commerce shows (late, and an older stage): no push.
    clock.advance_ms(HOUR)
    late = iso(clock.now_ms() - 30 * HOUR)
    carrier_webhook(services, client, "evt-3", status="in_transit", occurred_at=late)
    assert len(apns.received) == 2
    assert (
        client.get(f"{REGISTRATIONS}?ordersModifiedSince={later['lastModified']}").status_code
        == 204
    )
    # Delivered: the order is complete, as commerce has it.
    clock.advance_ms(HOUR)
    carrier_webhook(services, client, "evt-4", status="delivered", occurred_at=iso(clock.now_ms()))
    done = order_of(client.get(latest_path, headers=auth))
    assert done["status"] == "completed" and len(apns.received) == 3
    assert done["fulfillments"][0]["deliveredAt"] == iso(clock.now_ms())
    as_commerce_has_it(services, done["fulfillments"][0])
    merchant_view = client.get("/api/wallet/orders/o-1", headers=admin_headers()).json()
    assert merchant_view["fulfillment_status"] == "delivered"


def test_shipment_events_show_in_wallet_as_commerce_has_them_parcel_by_parcel(
    wired: tuple[Services, TestClient[Any]], clock: SimulatedClock, apns: ApnsPeer
) -> None:
    services, client = wired
    order, auth = ordered(services, client)
    latest_path = f"/wallet/orders/v1/orders/{ORDER_TYPE}/{order['orderIdentifier']}"
    clock.advance_ms(HOUR)
    tomorrow = clock.now_ms() + 24 * HOUR
    # Two parcels: one missed at the door, one at a pickup point (Shopify's words too).
    carrier(
        services,
        "Shipment Updated",
        clock.now_ms(),
        status="delivery_attempted",
        carrier="DHL",
        tracking_url="javascript:alert(1)",  # not the web's: shown nowhere
        estimated_delivery_from=iso(tomorrow),
        estimated_delivery_to=iso(tomorrow + 26 * HOUR),
    )
    carrier(
        services,
        "Shipment Updated",
        clock.now_ms(),
        shipment_id="sh-2",
        status="ready_for_pickup",
        estimated_delivery_at=iso(tomorrow),
    )
    first, second = order_of(client.get(latest_path, headers=auth))["fulfillments"]
    assert (first["status"], second["status"]) == ("issue", "onTheWay")
    assert second["statusDescription"] == "Ready for pickup"
    assert "trackingURL" not in first and first["estimatedDeliveryWindowDuration"] == "P1DT2H"
    with services.db.read() as conn:
        assert commerce.shipment(conn, "sh-1").tracking_url == "javascript:alert(1)"  # type: ignore[union-attr]
    as_commerce_has_it(services, first)
    as_commerce_has_it(services, second)
    # Shopify's `picked_up` is the customer collecting it: delivered, for Wallet as for commerce.
    clock.advance_ms(HOUR)
    carrier(services, "Shipment Updated", clock.now_ms(), shipment_id="sh-2", status="picked_up")
    _, second = order_of(client.get(latest_path, headers=auth))["fulfillments"]
    assert second["status"] == "delivered" and second["deliveredAt"] == iso(clock.now_ms())


def test_every_status_of_commerce_has_apple_s_word_and_a_description_in_both_languages() -> None:
    for status in (*statuses.STATUSES, "cancelled"):
        assert status == "cancelled" or APPLE_STATUSES[status] in {
            "processing",
            "onTheWay",
            "outForDelivery",
            "delivered",
            "issue",
        }
        key = f"wallet_order.shipment.{status}"
        assert text("en", key) != text("fr", key)
    assert [iso_duration(ms) for ms in (0, 1000, 90 * 60_000, 26 * HOUR, 48 * HOUR)] == [
        "PT0S",
        "PT1S",
        "PT1H30M",
        "P1DT2H",
        "P2D",
    ]


def test_a_wallet_order_from_before_commerce_shows_what_it_stored(services: Services) -> None:
    """A row issued before commerce projected orders (its order unknown to commerce)
    shows what it stored then, its shipment words read through commerce's taxonomy."""
    stored = {
        "locale": "fr",
        "currency": "EUR",
        "total": "59.90",
        "refunded": "0",
        "placed_at": 1000,
        "lines": [{"name": "Pull", "quantity": 2, "price": "29.95", "sku": "P-1"}],
        "shipments": [
            {"id": "sh-1", "status": "delivery_attempted", "status_at": 2000, "carrier": "DHL"}
        ],
    }
    with services.db.write() as conn:
        conn.execute(
            wallet_orders_table.insert().values(
                identifier="ord_old",
                order_id="o-old",
                customer_id=1,
                auth_token="t",
                status="open",
                fulfillment_status="issue",
                details=json.dumps(stored),
                created_at=1000,
                updated_at=3000,
            )
        )
        assert wallet_orders.refresh(conn, "o-old", 4000) is None  # it changes no more
    with services.db.read() as conn:
        record = wallet_orders.by_order(conn, "o-old")
    assert record is not None and record.updated_at == 3000
    assert record.details["total"] == "59.90" and record.fulfillment_status == "issue"
    [shipment] = record.details["shipments"]
    assert (shipment["stage"], shipment["carrier"]) == (statuses.FAILED_ATTEMPT, "DHL")
