"""Apple Wallet: `.pkpass` packages (pass.json, images, a manifest of SHA-1 digests and its
detached PKCS#7 signature by the pass certificate, with Apple's WWDR intermediate), stored
uncompressed; and Wallet order tracking `.order` packages (SHA-256 manifest)
(docs/channels.md)."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from parcours.channels.apns import HOSTS, PassUpdatePusher
from parcours.channels.base import ConfigError, OutgoingMessage, PermanentFailure, setting
from parcours.channels.fcm import ServiceAccount

PASS_STYLES = {"loyalty": "storeCard", "coupon": "coupon", "vip": "eventTicket"}


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
    def from_files(cls, certificate: Path, key: Path, intermediate: Path) -> PassSigner:
        where = "channels.wallet"
        for path in (certificate, key, intermediate):
            if not path.is_file():
                raise ConfigError(f"{where}: {path} does not exist")
        loaded = serialization.load_pem_private_key(key.read_bytes(), password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{where}.key_file: an RSA or EC private key is needed")
        return cls(
            x509.load_pem_x509_certificate(certificate.read_bytes()),
            loaded,
            x509.load_pem_x509_certificate(intermediate.read_bytes()),
        )

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
    channel: str = "wallet"
    name: str = "apple-wallet"
    connections: int = 1

    @classmethod
    def from_config(cls, config: dict[str, Any], public_url: str) -> WalletIssuer:
        where = "channels.wallet"
        signer = PassSigner.from_files(
            Path(setting(config, where, "certificate_file", str)),
            Path(setting(config, where, "key_file", str)),
            Path(setting(config, where, "wwdr_file", str)),
        )
        pass_type = setting(config, where, "pass_type_identifier", str)
        pusher = None
        if config.get("apns", True):
            environment = str(config.get("apns_environment", "production"))
            pusher = PassUpdatePusher(
                str(config["certificate_file"]),
                str(config["key_file"]),
                str(config["wwdr_file"]),
                pass_type,
                str(config.get("apns_api_base", HOSTS.get(environment, HOSTS["production"]))),
                config.get("apns_ca_file"),
            )
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
        )

    def pass_json(self, record: dict[str, Any]) -> dict[str, Any]:
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
        if self.pusher is not None:
            self.pusher.close()


@dataclass
class GoogleWalletLinks:
    """Google Wallet generic passes through a "save" link: a JWT signed with the brand's
    Google Cloud service account, holding the pass object itself."""

    account: ServiceAccount
    issuer_id: str
    class_suffix: str
    origins: list[str]

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
        )

    def save_url(self, record: dict[str, Any], organization: str, now: int) -> str:
        fields = record["fields"]
        card = {
            "id": f"{self.issuer_id}.{record['serial']}",
            "classId": f"{self.issuer_id}.{self.class_suffix}",
            "state": "ACTIVE",
            "cardTitle": {"defaultValue": {"language": "en", "value": organization}},
            "header": {"defaultValue": {"language": "en", "value": str(fields.get("value", ""))}},
            "subheader": {
                "defaultValue": {"language": "en", "value": str(fields.get("label", ""))}
            },
            "barcode": {"type": "QR_CODE", "value": str(fields.get("barcode", record["serial"]))},
        }
        claims = {
            "iss": self.account.client_email,
            "aud": "google",
            "typ": "savetowallet",
            "iat": now // 1000,
            "origins": self.origins,
            "payload": {"genericObjects": [card]},
        }
        return f"https://pay.google.com/gp/v/save/{self.account.sign_jwt(claims)}"


def order_package(order: dict[str, Any], signer: PassSigner) -> bytes:
    """A Wallet order (`.order`): order.json, its SHA-256 manifest and signature."""
    return package({"order.json": json.dumps(order, ensure_ascii=False).encode()}, signer, "sha256")
