"""Mobile push through Firebase Cloud Messaging's HTTP v1 API: a service-account JWT
(RS256) exchanged for an OAuth access token, kept until it nearly expires; a token FCM
calls unregistered is barred (docs/channels.md)."""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from parcours.channels.apns import is_apns_token
from parcours.channels.base import (
    ConfigError,
    OutgoingMessage,
    PermanentFailure,
    TransientFailure,
    setting,
)
from parcours.runtime.documents import JsonObject

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GONE = {"UNREGISTERED", "SENDER_ID_MISMATCH"}
RETRY = {"UNAVAILABLE", "INTERNAL", "QUOTA_EXCEEDED"}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class ServiceAccount:
    project_id: str
    client_email: str
    private_key_id: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    token_uri: str

    @classmethod
    def load(cls, document: dict[str, Any], where: str) -> ServiceAccount:
        for name in ("project_id", "client_email", "private_key", "token_uri"):
            if not isinstance(document.get(name), str):
                raise ConfigError(f"{where}: the service account has no {name}")
        key = serialization.load_pem_private_key(document["private_key"].encode(), None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError(f"{where}: the service account's private_key is not RSA")
        return cls(
            document["project_id"],
            document["client_email"],
            str(document.get("private_key_id", "")),
            key,
            document["token_uri"],
        )

    def assertion(self, now: int, scope: str) -> str:
        """The signed JWT that asks for an access token to `scope` (RFC 7523)."""
        return self.sign_jwt(
            {
                "iss": self.client_email,
                "scope": scope,
                "aud": self.token_uri,
                "iat": now,
                "exp": now + 3600,
            }
        )

    def sign_jwt(self, claims: dict[str, Any]) -> str:
        """A JWT of these claims signed with the account's key (RS256)."""
        header = {"alg": "RS256", "typ": "JWT", "kid": self.private_key_id}
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        signature = self.private_key.sign(
            signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        return f"{signing_input}.{_b64url(signature)}"

    @classmethod
    def from_config(cls, config: dict[str, Any], where: str) -> ServiceAccount:
        """From `service_account_file`, or the JSON itself in `service_account(_env)`."""
        path = config.get("service_account_file")
        if path is not None:
            file = Path(str(path))
            if not file.is_file():
                raise ConfigError(f"{where}.service_account_file: {file} does not exist")
            text = file.read_text(encoding="utf-8")
        else:
            text = setting(config, where, "service_account", str)
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{where}: the service account is not JSON: {exc}") from None
        return cls.load(document, where)


class AccessTokens:
    """OAuth access tokens of a service account for one scope: its signed JWT exchanged at
    its `token_uri` (RFC 7523), each kept until a minute before it expires. The tokens are
    never logged nor shown in a repr."""

    def __init__(self, account: ServiceAccount, scope: str, client: httpx.Client) -> None:
        self.account = account
        self.scope = scope
        self._client = client
        self._token: tuple[str, float] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AccessTokens({self.account.client_email!r}, {self.scope!r})"

    def get(self, *, renew: bool = False) -> str:
        """A valid access token; `renew` asks for a new one (the last was refused)."""
        with self._lock:
            if self._token is not None and not renew and time.time() < self._token[1]:
                return self._token[0]
            try:
                response = self._client.post(
                    self.account.token_uri,
                    data={
                        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                        "assertion": self.account.assertion(int(time.time()), self.scope),
                    },
                )
            except httpx.HTTPError as exc:
                raise TransientFailure(f"cannot reach Google's token endpoint: {exc}") from None
            if response.status_code != 200:
                raise TransientFailure(
                    f"Google refused the service account ({response.status_code}): "
                    f"{response.text[:200]}"
                )
            answer = response.json()
            token = str(answer["access_token"])
            self._token = (token, time.time() + int(answer.get("expires_in", 3600)) - 60)
            return token


@dataclass
class FcmProvider:
    account: ServiceAccount = field(repr=False)
    api_base: str = "https://fcm.googleapis.com"
    timeout: float = 10.0
    connections: int = 4
    channel: str = "push"
    name: str = "fcm"

    def __post_init__(self) -> None:
        self._client = httpx.Client(timeout=self.timeout)
        self._tokens = AccessTokens(self.account, SCOPE, self._client)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FcmProvider:
        where = "channels.push.fcm"
        return cls(
            ServiceAccount.from_config(config, where),
            api_base=setting(config, where, "api_base", str, "https://fcm.googleapis.com"),
            timeout=setting(config, where, "timeout", float, 10.0),
            connections=setting(config, where, "connections", int, 4),
        )

    def payload(self, message: OutgoingMessage) -> JsonObject:
        content = message.content
        notification = {"title": content["title"], "body": content["body"]}
        if content.get("image"):
            notification["image"] = content["image"]
        data = {"message_id": f"msg_{message.outbox_id}"}
        if content.get("url"):
            data["url"] = content["url"]
        return {
            "message": {
                "token": message.address,
                "notification": notification,
                "data": data,
                "android": {"collapse_key": f"msg_{message.outbox_id}"},
            }
        }

    def send(self, message: OutgoingMessage) -> str:
        url = f"{self.api_base}/v1/projects/{self.account.project_id}/messages:send"
        for renew in (False, True):
            headers = {"Authorization": f"Bearer {self._tokens.get(renew=renew)}"}
            try:
                response = self._client.post(url, json=self.payload(message), headers=headers)
            except httpx.HTTPError as exc:
                raise TransientFailure(f"cannot reach FCM: {exc}") from None
            if response.status_code == 401 and not renew:
                continue  # the access token was revoked or expired early: a new one
            break
        if response.status_code == 200:
            return str(response.json().get("name", ""))
        status, code = google_error(response)
        reason = f"FCM {response.status_code} {status} {code}".strip()
        if response.status_code in (429, 500, 503) or status in RETRY or code in RETRY:
            raise TransientFailure(reason, code=code or status)
        raise PermanentFailure(reason, code=code or status, suppress=bool({status, code} & GONE))

    def close(self) -> None:
        self._client.close()


def google_error(response: httpx.Response) -> tuple[str, str]:
    """(status, FCM error code) of a Google API error answer (`{"error": {"status"}}`)."""
    try:
        error = response.json().get("error", {})
    except ValueError:
        return "", ""
    code = ""
    for detail in error.get("details", []):
        if str(detail.get("@type", "")).endswith("FcmError"):
            code = str(detail.get("errorCode", ""))
    return str(error.get("status", "")), code


@dataclass
class PushRouter:
    """Browsers (a subscription endpoint, an https URL) to Web Push or the sandbox; APNs
    device tokens (64 hex digits) to APNs when configured; other app tokens to FCM."""

    web: Any
    mobile: Any
    apple: Any = None
    channel: str = "push"
    name: str = "push"
    connections: int = 1  # each message is sent by the provider it is routed to

    def provider_for(self, address: str) -> Any:
        if address.startswith(("https://", "http://")):
            return self.web
        if self.apple is not None and is_apns_token(address):
            return self.apple
        return self.mobile

    def send(self, message: OutgoingMessage) -> str:
        return str(self.provider_for(message.address).send(message))

    def close(self) -> None:
        for provider in {id(p): p for p in (self.web, self.mobile, self.apple) if p}.values():
            provider.close()
