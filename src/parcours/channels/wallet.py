"""Apple Wallet: `.pkpass` packages (pass.json, images, a manifest of SHA-1 digests and its
detached PKCS#7 signature by the pass certificate, with Apple's WWDR intermediate), stored
uncompressed; Wallet order tracking `.order` packages (order.json, SHA-256 manifest,
signed by the Order Type ID certificate); and Google Wallet generic objects, offered by a
signed "save" link and kept in step through Google's REST API (docs/channels.md)."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from parcours.channels.apns import HOSTS, PassUpdatePusher
from parcours.channels.base import (
    ConfigError,
    OutgoingMessage,
    PermanentFailure,
    TransientFailure,
    setting,
)
from parcours.channels.fcm import AccessTokens, ServiceAccount, google_error
from parcours.runtime.clock import iso
from parcours.runtime.documents import JsonObject
from parcours.runtime.i18n import text

PASS_STYLES = {"loyalty": "storeCard", "coupon": "coupon", "vip": "eventTicket"}
ORDER_MEDIA_TYPE = "application/vnd.apple.finance.order"
GOOGLE_WALLET_SCOPE = "https://www.googleapis.com/auth/wallet_object.issuer"
GOOGLE_WALLET_API = "https://walletobjects.googleapis.com"


def solid_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A one-colour PNG (the default icon and logo until the brand gives its own)."""
    row = b"\x00" + bytes(rgb) * width
    raw = zlib.compress(row * height, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


@dataclass
class PassSigner:
    """The brand's Pass Type ID certificate and key, and Apple's WWDR intermediate."""

    certificate: x509.Certificate
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = field(repr=False)
    intermediate: x509.Certificate

    @classmethod
    def from_files(
        cls, certificate: Path, key: Path, intermediate: Path, where: str = "channels.wallet"
    ) -> PassSigner:
        for path in (certificate, key, intermediate):
            if not path.is_file():
                raise ConfigError(f"{where}: {path} does not exist")
        return cls.from_pem(
            certificate.read_bytes(), key.read_bytes(), intermediate.read_bytes(), where
        )

    @classmethod
    def from_pem(
        cls, certificate: bytes, key: bytes, intermediate: bytes, where: str = "channels.wallet"
    ) -> PassSigner:
        """From the PEM texts themselves (a Wallet set up in the console)."""
        try:
            loaded = serialization.load_pem_private_key(key, password=None)
            found = x509.load_pem_x509_certificate(certificate)
            wwdr = x509.load_pem_x509_certificate(intermediate)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: a certificate or the key does not load ({exc})") from None
        if not isinstance(loaded, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{where}.key_file: an RSA or EC private key is needed")
        return cls(found, loaded, wwdr)

    def sign(self, manifest: bytes) -> bytes:
        """The detached PKCS#7 signature (DER) of the manifest, with the intermediate."""
        return (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(manifest)
            .add_signer(self.certificate, self.key, hashes.SHA256())
            .add_certificate(self.intermediate)
            .sign(
                serialization.Encoding.DER,
                [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary],
            )
        )


def package(files: dict[str, bytes], signer: PassSigner, digest: str) -> bytes:
    """The files, their manifest (SHA-1 for passes, SHA-256 for orders), its signature,
    zipped without compression."""
    hasher = hashlib.sha1 if digest == "sha1" else hashlib.sha256
    manifest = json.dumps(
        {name: hasher(data).hexdigest() for name, data in sorted(files.items())},
        sort_keys=True,
    ).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in sorted(files.items()):
            archive.writestr(name, data)
        archive.writestr("manifest.json", manifest)
        archive.writestr("signature", signer.sign(manifest))
    return out.getvalue()


@dataclass
class WalletIssuer:
    """Builds the brand's passes; `send` of the wallet channel updates a pass's message
    field, which devices fetch through the pass web service."""

    signer: PassSigner
    pass_type_identifier: str
    team_identifier: str
    organization_name: str
    web_service_url: str  # {public_url}/wallet
    colors: dict[str, str] = field(default_factory=dict)
    pusher: PassUpdatePusher | None = None  # tells devices a pass changed, through APNs
    google: GoogleWalletLinks | None = None  # the same card, offered for Google Wallet
    orders: WalletOrders | None = None  # Wallet orders (order tracking), when configured
    channel: str = "wallet"
    name: str = "apple-wallet"
    connections: int = 1

    @classmethod
    def from_config(cls, config: dict[str, Any], public_url: str) -> WalletIssuer:
        where = "channels.wallet"
        if "certificate" in config:  # the PEM texts themselves (set up in the console)
            pems = (
                setting(config, where, "certificate", str).encode(),
                setting(config, where, "signing_key", str).encode(),
                setting(config, where, "wwdr", str).encode(),
            )
            signer = PassSigner.from_pem(*pems)
        else:
            pems = None
            signer = PassSigner.from_files(
                Path(setting(config, where, "certificate_file", str)),
                Path(setting(config, where, "key_file", str)),
                Path(setting(config, where, "wwdr_file", str)),
            )
        pass_type = setting(config, where, "pass_type_identifier", str)
        pusher = _pusher(config, config, pass_type, pems)
        orders = None
        if "orders" in config:
            orders = WalletOrders.from_config(config["orders"], config, public_url)
        return cls(
            signer,
            pass_type,
            setting(config, where, "team_identifier", str),
            setting(config, where, "organization_name", str),
            f"{public_url}/wallet",
            {
                "backgroundColor": str(config.get("background_color", "rgb(255,255,255)")),
                "foregroundColor": str(config.get("foreground_color", "rgb(20,20,20)")),
            },
            pusher,
            GoogleWalletLinks.from_config(config["google"]) if "google" in config else None,
            orders,
        )

    def pass_json(self, record: dict[str, Any]) -> JsonObject:
        """pass.json for a stored pass: its kind, fields and the latest message."""
        style = PASS_STYLES[record["kind"]]
        fields: dict[str, Any] = record["fields"]
        message = fields.get("message") or {}
        back = [{"key": "terms", "label": "Terms", "value": str(fields.get("terms", ""))}]
        if message:
            back.insert(
                0,
                {
                    "key": "news",
                    "label": str(message.get("header", "")),
                    "value": str(message.get("body", "")),
                    "changeMessage": "%@",
                },
            )
        return {
            "formatVersion": 1,
            "passTypeIdentifier": self.pass_type_identifier,
            "serialNumber": record["serial"],
            "teamIdentifier": self.team_identifier,
            "organizationName": self.organization_name,
            "description": str(fields.get("description", self.organization_name)),
            "authenticationToken": record["auth_token"],
            "webServiceURL": self.web_service_url,
            **self.colors,
            "barcodes": [
                {
                    "format": "PKBarcodeFormatQR",
                    "message": str(fields.get("barcode", record["serial"])),
                    "messageEncoding": "iso-8859-1",
                }
            ],
            style: {
                "primaryFields": [
                    {
                        "key": "primary",
                        "label": str(fields.get("label", "")),
                        "value": str(fields.get("value", "")),
                    }
                ],
                "backFields": back,
            },
        }

    def build(self, record: dict[str, Any]) -> bytes:
        icon = solid_png(29, 29, (20, 20, 20))
        files = {
            "pass.json": json.dumps(self.pass_json(record), ensure_ascii=False).encode(),
            "icon.png": icon,
            "icon@2x.png": solid_png(58, 58, (20, 20, 20)),
            "logo.png": solid_png(160, 50, (255, 255, 255)),
        }
        return package(files, self.signer, "sha1")

    def send(self, message: OutgoingMessage) -> str:
        """The update itself is stored by delivery (the pass's news field); each device
        holding the pass is told through APNs, and fetches it from the web service."""
        tokens = list(message.target.get("push_tokens", []))
        reached = 0
        if self.pusher is not None:
            for token in tokens:
                reached += 1 if self.pusher.push(token) else 0
            if tokens and not reached:
                raise PermanentFailure("no device holding the pass can be reached any more")
        return f"pass:{message.address}:{message.outbox_id}"

    def close(self) -> None:
        for closing in (self.pusher, self.google, self.orders):
            if closing is not None:
                closing.close()


def _pusher(
    config: dict[str, Any],
    wallet: dict[str, Any],
    topic: str,
    pems: tuple[bytes, bytes, bytes] | None = None,
) -> PassUpdatePusher | None:
    """The APNs client telling devices that a pass (or order) of this type changed; the
    APNs settings are channels.wallet's (`apns`, `apns_environment`, `apns_api_base`).
    `pems`: the certificate, key and WWDR texts instead of files."""
    if not wallet.get("apns", True):
        return None
    environment = str(wallet.get("apns_environment", "production"))
    base = str(wallet.get("apns_api_base", HOSTS.get(environment, HOSTS["production"])))
    if pems is not None:
        return PassUpdatePusher("", "", "", topic, base, wallet.get("apns_ca_file"), pems)
    wwdr = config.get("wwdr_file", wallet.get("wwdr_file"))
    if wwdr is None:
        raise ConfigError("channels.wallet: wwdr_file is required")
    return PassUpdatePusher(
        str(config["certificate_file"]),
        str(config["key_file"]),
        str(wwdr),
        topic,
        base,
        wallet.get("apns_ca_file"),
    )


@dataclass
class GoogleWalletLinks:
    """Google Wallet generic passes through a "save" link: a JWT signed with the brand's
    Google Cloud service account, holding the pass object itself."""

    account: ServiceAccount = field(repr=False)
    issuer_id: str
    class_suffix: str
    origins: list[str]
    api_base: str = GOOGLE_WALLET_API
    timeout: float = 10.0
    name: ClassVar[str] = "google-wallet"  # as the Settings page lists it

    def __post_init__(self) -> None:
        self._client = httpx.Client(timeout=self.timeout)
        self._tokens = AccessTokens(self.account, GOOGLE_WALLET_SCOPE, self._client)

    @classmethod
    def from_config(cls, config: Any) -> GoogleWalletLinks:
        where = "channels.wallet.google"
        if not isinstance(config, dict):
            raise ConfigError(f"{where} must be a table")
        origins = config.get("origins", [])
        if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
            raise ConfigError(f"{where}.origins must be a list of https:// origins")
        return cls(
            ServiceAccount.from_config(config, where),
            setting(config, where, "issuer_id", str),
            setting(config, where, "class_suffix", str, "loyalty"),
            origins,
            setting(config, where, "api_base", str, GOOGLE_WALLET_API).rstrip("/"),
            setting(config, where, "timeout", float, 10.0),
        )

    def card(self, record: dict[str, Any], organization: str) -> dict[str, Any]:
        """The pass as Google's generic object: the same title, value, label, barcode and
        latest message as the Apple pass."""
        fields = record["fields"]

        def localized(value: Any) -> dict[str, Any]:
            return {"defaultValue": {"language": "en", "value": str(value)}}

        card: dict[str, Any] = {
            "id": record.get("google_object_id") or f"{self.issuer_id}.{record['serial']}",
            "classId": f"{self.issuer_id}.{self.class_suffix}",
            "state": "ACTIVE",
            "cardTitle": localized(organization),
            "header": localized(fields.get("value", "")),
            "subheader": localized(fields.get("label", "")),
            "barcode": {"type": "QR_CODE", "value": str(fields.get("barcode", record["serial"]))},
        }
        message = fields.get("message") or {}
        if message:
            card["textModulesData"] = [
                {
                    "id": "news",
                    "header": str(message.get("header", "")),
                    "body": str(message.get("body", "")),
                }
            ]
        return card

    def save_url(self, record: dict[str, Any], organization: str, now: int) -> str:
        card = self.card(record, organization)
        claims = {
            "iss": self.account.client_email,
            "aud": "google",
            "typ": "savetowallet",
            "iat": now // 1000,
            "origins": self.origins,
            "payload": {"genericObjects": [card]},
        }
        return f"https://pay.google.com/gp/v/save/{self.account.sign_jwt(claims)}"

    def upsert(self, card: dict[str, Any]) -> str:
        """Bring the generic object in Google Wallet in step with `card`: PATCH it, or
        insert it when Google has never seen it (the customer has not saved it yet, so it
        is there when they do). "patched" or "inserted"; raises TransientFailure (try
        again: 429, 5xx, no answer) or PermanentFailure."""
        url = f"{self.api_base}/walletobjects/v1/genericObject"
        response = self._call("PATCH", f"{url}/{quote(card['id'], safe='')}", card)
        if response.status_code == 404:
            response = self._call("POST", url, card)
            if response.status_code == 409:  # saved meanwhile, through the link: patch it
                response = self._call("PATCH", f"{url}/{quote(card['id'], safe='')}", card)
            elif response.status_code == 200:
                return "inserted"
        if response.status_code == 200:
            return "patched"
        status, _ = google_error(response)
        reason = f"Google Wallet {response.status_code} {status}".strip()
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise TransientFailure(reason, code=status)
        raise PermanentFailure(reason, code=status)

    def _call(self, method: str, url: str, card: dict[str, Any]) -> httpx.Response:
        for renew in (False, True):
            headers = {"Authorization": f"Bearer {self._tokens.get(renew=renew)}"}
            try:
                response = self._client.request(method, url, json=card, headers=headers)
            except httpx.HTTPError as exc:
                raise TransientFailure(f"cannot reach Google Wallet: {exc}") from None
            if response.status_code != 401 or renew:
                return response
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._client.close()


def order_package(
    order: dict[str, Any], signer: PassSigner, images: dict[str, bytes] | None = None
) -> bytes:
    """A Wallet order (`.order`): order.json, its images, the SHA-256 manifest and its
    signature."""
    files = {"order.json": json.dumps(order, ensure_ascii=False).encode(), **(images or {})}
    return package(files, signer, "sha256")


@dataclass
class WalletOrders:
    """The brand's Wallet orders: order.json for a stored order (messaging/wallet_orders.py)
    in Apple's schema, signed with the Order Type ID certificate, and the APNs client that
    tells devices an order changed."""

    signer: PassSigner
    order_type_identifier: str
    merchant_identifier: str
    merchant_name: str
    merchant_url: str
    order_management_url: str  # with {order_id}
    web_service_url: str  # {public_url}/wallet/orders
    pusher: PassUpdatePusher | None = None

    @classmethod
    def from_config(cls, config: Any, wallet: dict[str, Any], public_url: str) -> WalletOrders:
        where = "channels.wallet.orders"
        if not isinstance(config, dict):
            raise ConfigError(f"{where} must be a table")
        order_type = setting(config, where, "order_type_identifier", str)
        management = setting(config, where, "order_management_url", str)
        if not management.startswith(("https://", "http://")):
            raise ConfigError(f"{where}.order_management_url must be an https:// address")
        origin = urlsplit(management)
        signer = PassSigner.from_files(
            Path(setting(config, where, "certificate_file", str)),
            Path(setting(config, where, "key_file", str)),
            Path(setting(config, where, "wwdr_file", str, wallet.get("wwdr_file"))),
            where,
        )
        return cls(
            signer,
            order_type,
            setting(config, where, "merchant_identifier", str),
            setting(config, where, "merchant_name", str, wallet.get("organization_name")),
            setting(config, where, "merchant_url", str, f"{origin.scheme}://{origin.netloc}"),
            management,
            f"{public_url}/wallet/orders",
            _pusher(config, wallet, order_type),
        )

    def order_json(self, record: dict[str, Any]) -> JsonObject:
        """order.json for a stored Wallet order, in the customer's language."""
        details = record["details"]
        locale = str(details.get("locale") or "en")
        currency = str(details["currency"])
        total, refunded = Decimal(details["total"]), Decimal(details["refunded"])
        status = str(record["status"])
        document: dict[str, Any] = {
            "schemaVersion": 1,
            "orderTypeIdentifier": self.order_type_identifier,
            "orderIdentifier": record["identifier"],
            "orderType": "ecommerce",
            "orderNumber": record["order_id"],
            "orderManagementURL": self.order_management_url.replace(
                "{order_id}", quote(str(record["order_id"]), safe="")
            ),
            "createdAt": iso(min(int(details["placed_at"]), int(record["created_at"]))),
            "updatedAt": iso(int(record["updated_at"])),
            "status": status,
            "merchant": {
                "merchantIdentifier": self.merchant_identifier,
                "displayName": self.merchant_name,
                "url": self.merchant_url,
                "logo": "logo.png",
            },
            "authenticationToken": record["auth_token"],
            "webServiceURL": self.web_service_url,
            "lineItems": [_line_item(line, currency) for line in details["lines"]],
            "payment": {
                "total": _amount(total, currency),
                "status": "refunded" if refunded > 0 and refunded >= total else "paid",
            },
            "fulfillments": [
                _fulfillment(shipment, status, locale) for shipment in details["shipments"]
            ],
        }
        if status == "cancelled":
            document["statusDescription"] = text(locale, "wallet_order.cancelled")
        elif refunded > 0:
            key = "wallet_order.refunded" if refunded >= total else "wallet_order.partly_refunded"
            document["statusDescription"] = text(locale, key, amount=f"{refunded} {currency}")
        return document

    def build(self, record: dict[str, Any]) -> bytes:
        logo = solid_png(96, 96, (20, 20, 20))
        return order_package(self.order_json(record), self.signer, {"logo.png": logo})

    def close(self) -> None:
        if self.pusher is not None:
            self.pusher.close()


def _amount(value: Decimal, currency: str) -> dict[str, Any]:
    return {"amount": float(value), "currency": currency}


def _line_item(line: dict[str, Any], currency: str) -> dict[str, Any]:
    item: dict[str, Any] = {"title": line["name"] or "-", "quantity": int(line["quantity"])}
    if line.get("price") is not None:
        item["price"] = _amount(Decimal(line["price"]), currency)
    if line.get("sku"):
        item["sku"] = line["sku"]
    return item


def _fulfillment(shipment: dict[str, Any], order_status: str, locale: str) -> dict[str, Any]:
    """A shipping fulfillment: Apple's status (`status`, mapped from commerce's by
    messaging/wallet_orders.py), described in the customer's language from commerce's
    (`stage`); the estimated delivery window as its start and duration."""
    status, stage = str(shipment["status"]), str(shipment["stage"])
    if order_status == "cancelled" and status != "delivered":
        status, stage = "cancelled", "cancelled"
    fulfillment: dict[str, Any] = {
        "fulfillmentType": "shipping",
        "fulfillmentIdentifier": shipment["id"] or "shipment",
        "status": status,
        "statusDescription": text(locale, f"wallet_order.shipment.{stage}"),
    }
    for ours, apple in (("carrier", "carrier"), ("tracking_number", "trackingNumber")):
        if shipment.get(ours):
            fulfillment[apple] = shipment[ours]
    link = str(shipment.get("tracking_url") or "")
    if link.lower().startswith(("https://", "http://")):  # the web's only, as the tracking page
        fulfillment["trackingURL"] = link
    start, end = shipment.get("estimated_from"), shipment.get("estimated_to")
    if start is not None:
        fulfillment["estimatedDeliveryAt"] = iso(int(start))
        if end is not None and int(end) > int(start):
            fulfillment["estimatedDeliveryWindowDuration"] = iso_duration(int(end) - int(start))
    for ours, apple in (("shipped_at", "shippedAt"), ("delivered_at", "deliveredAt")):
        if shipment.get(ours) is not None:
            fulfillment[apple] = iso(int(shipment[ours]))
    return fulfillment


def iso_duration(milliseconds: int) -> str:
    """An ISO 8601 duration to the second: `PT4H`, `P2DT30M`."""
    seconds = milliseconds // 1000
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3_600)
    minutes, seconds = divmod(seconds, 60)
    time = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n)
    if not (days or time):
        return "PT0S"
    return "P" + (f"{days}D" if days else "") + (f"T{time}" if time else "")
