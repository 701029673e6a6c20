"""Apple Push Notification service over HTTP/2: app notifications with an ES256 provider
token (renewed between 20 and 60 minutes of age, as Apple asks), and Wallet pass update
and order update pushes with their type's certificate (docs/channels.md)."""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from parcours.channels.base import (
    ConfigError,
    OutgoingMessage,
    PermanentFailure,
    TransientFailure,
    setting,
)
from parcours.runtime.documents import JsonObject

HOSTS = {
    "production": "https://api.push.apple.com",
    "sandbox": "https://api.sandbox.push.apple.com",
}
TOKEN_RENEW_S = 40 * 60  # Apple refuses tokens older than an hour, and renewals < 20 min
GONE = {"BadDeviceToken", "Unregistered", "DeviceTokenNotForTopic"}
RENEW = {"ExpiredProviderToken", "InvalidProviderToken"}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def is_apns_token(address: str) -> bool:
    """APNs device tokens are 64 hexadecimal characters (32 bytes)."""
    return len(address) == 64 and all(c in "0123456789abcdefABCDEF" for c in address)


def _context(ca_file: str | None, client_cert: tuple[str, str] | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["h2"])
    if client_cert is not None:
        context.load_cert_chain(*client_cert)
    return context


@dataclass
class ApnsProvider:
    team_id: str
    key_id: str
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    topic: str  # the app's bundle id
    api_base: str = HOSTS["production"]
    ca_file: str | None = None  # only to trust a test server
    timeout: float = 10.0
    connections: int = 4
    channel: str = "push"
    name: str = "apns"

    def __post_init__(self) -> None:
        self._client = httpx.Client(
            http2=True, verify=_context(self.ca_file, None), timeout=self.timeout
        )
        self._token: tuple[str, float] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ApnsProvider:
        where = "channels.push.apns"
        # The .p8 key from its file, or its text itself (`key`, `key_env`: the console's).
        if "key" in config or "key_env" in config:
            pem, what = setting(config, where, "key", str).encode(), "key"
        else:
            path = Path(setting(config, where, "key_file", str))
            if not path.is_file():
                raise ConfigError(f"{where}.key_file: {path} does not exist")
            pem, what = path.read_bytes(), "key_file"
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where}.{what}: not a PEM private key ({exc})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{where}.{what}: an APNs key (.p8, P-256) is needed")
        environment = setting(config, where, "environment", str, "production")
        if environment not in HOSTS:
            raise ConfigError(f"{where}.environment must be production or sandbox")
        return cls(
            team_id=setting(config, where, "team_id", str),
            key_id=setting(config, where, "key_id", str),
            key=key,
            topic=setting(config, where, "topic", str),
            api_base=setting(config, where, "api_base", str, HOSTS[environment]),
            ca_file=config.get("ca_file"),
            timeout=setting(config, where, "timeout", float, 10.0),
            connections=setting(config, where, "connections", int, 4),
        )

    def provider_token(self, *, renew: bool = False) -> str:
        """The ES256 JWT Apple authenticates us by, kept for 40 minutes."""
        with self._lock:
            now = time.time()
            if self._token is not None and not renew and now - self._token[1] < TOKEN_RENEW_S:
                return self._token[0]
            header = _b64url(json.dumps({"alg": "ES256", "kid": self.key_id}).encode())
            claims = _b64url(json.dumps({"iss": self.team_id, "iat": int(now)}).encode())
            der = self.key.sign(f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
            r, s = decode_dss_signature(der)
            signature = _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
            self._token = (f"{header}.{claims}.{signature}", now)
            return self._token[0]

    def payload(self, message: OutgoingMessage) -> JsonObject:
        content = message.content
        body: dict[str, Any] = {
            "aps": {
                "alert": {"title": content["title"], "body": content["body"]},
                "sound": "default",
            },
            "message_id": f"msg_{message.outbox_id}",
        }
        if content.get("url"):
            body["url"] = content["url"]
        return body

    def send(self, message: OutgoingMessage) -> str:
        for renew in (False, True):
            headers = {
                "authorization": f"bearer {self.provider_token(renew=renew)}",
                "apns-topic": self.topic,
                "apns-push-type": "alert",
                "apns-priority": "10",
                "apns-collapse-id": f"msg_{message.outbox_id}",
            }
            try:
                response = self._client.post(
                    f"{self.api_base}/3/device/{message.address}",
                    json=self.payload(message),
                    headers=headers,
                )
            except httpx.HTTPError as exc:
                raise TransientFailure(f"cannot reach APNs: {exc}") from None
            reason = _reason(response)
            if response.status_code == 403 and reason in RENEW and not renew:
                continue
            break
        if response.status_code == 200:
            return str(response.headers.get("apns-id", ""))
        text = f"APNs {response.status_code} {reason}".strip()
        if response.status_code in (429, 500, 503):
            raise TransientFailure(text, code=reason)
        raise PermanentFailure(text, code=reason, suppress=reason in GONE)

    def close(self) -> None:
        self._client.close()


def _reason(response: httpx.Response) -> str:
    try:
        return str(response.json().get("reason", ""))
    except ValueError:
        return ""


@dataclass
class PassUpdatePusher:
    """Tells the devices holding a Wallet pass or order that it changed: an empty push
    whose topic is the pass (or order) type identifier, authenticated by that type's
    certificate (TLS client certificate)."""

    certificate_file: str
    key_file: str
    intermediate_file: str
    topic: str  # the pass type identifier, or the order type identifier
    api_base: str = HOSTS["production"]
    ca_file: str | None = None
    # The certificate's, key's and intermediate's PEM texts instead of the files (a Wallet
    # set up in the console): written to private temporary files for OpenSSL to load.
    pems: tuple[bytes, bytes, bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.pems is not None:
            certificate, key, intermediate = self.pems
        else:
            certificate = Path(self.certificate_file).read_bytes()
            key = b""
            intermediate = Path(self.intermediate_file).read_bytes()
        # The client presents its certificate followed by the intermediate that signed it.
        made: list[str] = []
        try:
            with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as chain:
                made.append(chain.name)
                chain.write(certificate.rstrip(b"\n") + b"\n")
                chain.write(intermediate)
            key_file = self.key_file
            if self.pems is not None:
                with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as sealed:
                    made.append(sealed.name)  # mode 0600, removed once loaded
                    sealed.write(key)
                key_file = sealed.name
            context = _context(self.ca_file, (chain.name, key_file))
        finally:
            for name in made:
                os.unlink(name)
        self._client = httpx.Client(http2=True, verify=context, timeout=10.0)

    def push(self, push_token: str) -> bool:
        """True when APNs took it; False when the token is gone (410 or bad token)."""
        try:
            response = self._client.post(
                f"{self.api_base}/3/device/{push_token}",
                content=b"{}",
                headers={"apns-topic": self.topic, "apns-push-type": "background"},
            )
        except httpx.HTTPError as exc:
            raise TransientFailure(f"cannot reach APNs: {exc}") from None
        if response.status_code == 200:
            return True
        if response.status_code == 410 or _reason(response) in GONE:
            return False
        raise TransientFailure(f"APNs {response.status_code} {_reason(response)}")

    def close(self) -> None:
        self._client.close()
