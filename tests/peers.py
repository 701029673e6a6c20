"""Real peers on loopback for the channel tests: an SMTP server (aiosmtpd) that checks the
DKIM signature of every message it receives with dkimpy against our test key."""

from __future__ import annotations

import asyncio
import base64
import email
import http.server
import json
import socket
import threading
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import dkim
from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import free_port, wait_until


class JsonHandler(http.server.BaseHTTPRequestHandler):
    """What the loopback peers below have in common: quiet, and JSON answers."""

    def log_message(self, *args: Any) -> None:
        return None

    def answer(self, status: int, document: dict[str, Any]) -> None:
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@dataclass
class DkimKey:
    private_pem: bytes
    dns_record: bytes  # the TXT record a receiver would find at <selector>._domainkey.<domain>

    @classmethod
    def make(cls) -> DkimKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(private, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public))

    def write(self, directory: Path) -> Path:
        path = directory / "dkim.pem"
        path.write_bytes(self.private_pem)
        return path


@dataclass
class Received:
    sender: str
    recipients: list[str]
    raw: bytes
    dkim_valid: bool

    @property
    def message(self) -> Message:
        return email.message_from_bytes(self.raw)


@dataclass
class SmtpPeer:
    """An SMTP server that keeps what it receives. `refuse` maps a recipient to the reply
    given at RCPT TO (e.g. "550 5.1.1 no such user"); `hold` makes DATA wait on an event."""

    dns: dict[str, bytes]
    received: list[Received] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    connections: int = 0
    hold: threading.Event | None = None
    data_started: threading.Event = field(default_factory=threading.Event)

    def _dns(self, name: bytes, timeout: int = 5) -> bytes:
        return self.dns.get(name.decode().rstrip("."), b"")

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = bytes(envelope.original_content or envelope.content)
        valid = bool(dkim.verify(raw, dnsfunc=self._dns))
        # Kept before answering: with `hold`, the server has the message but the sender
        # has not heard so yet (the worst moment for the sender to die).
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), raw, valid))
        self.data_started.set()
        if self.hold is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.hold.wait)
        return "250 2.0.0 queued"


class RunningSmtp:
    def __init__(self, peer: SmtpPeer, *, smtputf8: bool = True) -> None:
        self.peer = peer
        self.port = free_port()
        self.controller = Controller(
            peer, hostname="127.0.0.1", port=self.port, enable_SMTPUTF8=smtputf8
        )

    def __enter__(self) -> RunningSmtp:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.peer.hold is not None:
            self.peer.hold.set()
        self.controller.stop()


# ---- Twilio ---------------------------------------------------------------------------------


def twilio_sign(auth_token: str, url: str, params: dict[str, str]) -> str:
    """Twilio's documented signature, written here independently of Parcours' own."""
    import hashlib
    import hmac

    payload = url
    for name in sorted(params):
        payload += name + params[name]
    mac = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


class TwilioPeer:
    """Twilio's Messages API on loopback: Basic auth with the account SID and auth token,
    form-encoded requests, JSON answers and errors as Twilio documents them. It can then
    call the status callback it was given, signed as Twilio signs it."""

    def __init__(self, account_sid: str = "AC" + "0" * 32, auth_token: str = "secret-token"):
        import http.server
        import urllib.parse

        self.account_sid = account_sid
        self.auth_token = auth_token
        self.messages: list[dict[str, str]] = []
        self.errors: dict[str, tuple[int, int, str]] = {}  # To -> (HTTP status, code, text)
        peer = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                """Fetch an Account: the read the settings page's connection test makes."""
                if self.headers.get("Authorization") != peer.basic():
                    return self.answer(401, {"code": 20003, "message": "Authenticate"})
                if self.path != f"/2010-04-01/Accounts/{peer.account_sid}.json":
                    return self.answer(404, {"code": 20404, "message": "not found"})
                self.answer(200, {"sid": peer.account_sid, "status": "active"})

            def do_POST(self) -> None:
                if self.headers.get("Authorization") != peer.basic():
                    return self.answer(401, {"code": 20003, "message": "Authenticate"})
                if self.path != f"/2010-04-01/Accounts/{peer.account_sid}/Messages.json":
                    return self.answer(404, {"code": 20404, "message": "not found"})
                length = int(self.headers.get("Content-Length", "0"))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                if form.get("To") in peer.errors:
                    status, code, text = peer.errors[form["To"]]
                    return self.answer(status, {"code": code, "message": text, "status": status})
                sid = "SM" + f"{len(peer.messages) + 1:032x}"
                peer.messages.append({**form, "sid": sid})
                self.answer(
                    201,
                    {
                        "sid": sid,
                        "status": "queued",
                        "to": form["To"],
                        "body": form["Body"],
                        "from": form.get("From"),
                        "num_segments": "1",
                    },
                )

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def provider_settings(self, **more: Any) -> dict[str, Any]:
        """Parcours' `channels.sms` settings for this peer (a French sender number)."""
        return {
            "provider": "twilio",
            "account_sid": self.account_sid,
            "auth_token": self.auth_token,
            "from_number": "+33700000000",
            "api_base": self.url,
            **more,
        }

    def basic(self) -> str:
        credentials = f"{self.account_sid}:{self.auth_token}".encode()
        return "Basic " + base64.b64encode(credentials).decode()

    def __enter__(self) -> TwilioPeer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def callback(self, message: dict[str, str], status: str, error_code: str = "") -> Any:
        """POST the status callback the message was sent with, signed."""
        import httpx

        url = message["StatusCallback"]
        params = {
            "MessageSid": message["sid"],
            "SmsSid": message["sid"],
            "MessageStatus": status,
            "SmsStatus": status,
            "AccountSid": self.account_sid,
            "From": message.get("From", ""),
            "To": message["To"],
            "ApiVersion": "2010-04-01",
        }
        if error_code:
            params["ErrorCode"] = error_code
        headers = {"X-Twilio-Signature": twilio_sign(self.auth_token, url, params)}
        return httpx.post(url, data=params, headers=headers, timeout=10)

    def incoming(self, base_url: str, sender: str, text: str, sid: str) -> Any:
        """A customer texts the brand's number."""
        import httpx

        url = f"{base_url}/webhooks/twilio/inbound"
        params = {
            "MessageSid": sid,
            "From": sender,
            "To": "+33700000000",
            "Body": text,
            "AccountSid": self.account_sid,
            "NumSegments": "1",
        }
        headers = {"X-Twilio-Signature": twilio_sign(self.auth_token, url, params)}
        return httpx.post(url, data=params, headers=headers, timeout=10)


# ---- Meta's WhatsApp Cloud API ------------------------------------------------------------


class MetaPeer:
    """The WhatsApp Cloud API on loopback: Bearer token, JSON bodies checked as Meta
    documents them (`messaging_product`, `to` without `+`, `text` or `template` with a
    language code and body parameters), `wamid` ids, Graph API errors. It then posts
    webhooks signed with the app secret (X-Hub-Signature-256)."""

    def __init__(
        self,
        phone_number_id: str = "109876543210",
        access_token: str = "EAAG-test-token",
        app_secret: str = "app-secret",
    ) -> None:
        import http.server
        import json as json_module

        self.phone_number_id = phone_number_id
        self.access_token = access_token
        self.app_secret = app_secret
        self.messages: list[dict[str, Any]] = []
        self.errors: dict[str, tuple[int, int, str]] = {}  # to -> (HTTP status, code, text)
        peer = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                """The phone number's fields: the settings page's connection test."""
                if self.headers.get("Authorization") != f"Bearer {peer.access_token}":
                    return self._error(401, 190, "Invalid OAuth access token.")
                if not self.path.split("?")[0].endswith(f"/{peer.phone_number_id}"):
                    return self._error(404, 100, "Unsupported get request.")
                self.answer(200, {"id": peer.phone_number_id, "verified_name": "Maison"})

            def do_POST(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {peer.access_token}":
                    return self._error(401, 190, "Invalid OAuth access token.")
                if not self.path.endswith(f"/{peer.phone_number_id}/messages"):
                    return self._error(404, 100, "Unsupported post request.")
                body = json_module.loads(self.rfile.read(int(self.headers["Content-Length"])))
                problem = peer.check(body)
                if problem:
                    return self._error(400, 100, problem)
                if body["to"] in peer.errors:
                    status, code, text = peer.errors[body["to"]]
                    return self._error(status, code, text)
                wamid = f"wamid.{len(peer.messages) + 1:020d}"
                peer.messages.append({**body, "id": wamid})
                self.answer(
                    200,
                    {
                        "messaging_product": "whatsapp",
                        "contacts": [{"input": body["to"], "wa_id": body["to"]}],
                        "messages": [{"id": wamid, "message_status": "accepted"}],
                    },
                )

            def _error(self, status: int, code: int, text: str) -> None:
                self.answer(
                    status,
                    {
                        "error": {
                            "message": text,
                            "type": "OAuthException",
                            "code": code,
                            "fbtrace_id": "AbCdEf",
                        }
                    },
                )

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def provider_settings(self, **more: Any) -> dict[str, Any]:
        """Parcours' `channels.whatsapp` settings for this peer."""
        return {
            "provider": "meta",
            "phone_number_id": self.phone_number_id,
            "access_token": self.access_token,
            "app_secret": self.app_secret,
            "verify_token": "let-me-in",
            "api_base": self.url,
            **more,
        }

    @staticmethod
    def check(body: dict[str, Any]) -> str | None:
        if body.get("messaging_product") != "whatsapp":
            return "messaging_product must be whatsapp"
        if not str(body.get("to", "")).isdigit():
            return "to must be the number in international form, digits only"
        if body.get("type") == "text":
            return None if body.get("text", {}).get("body") else "text.body is required"
        if body.get("type") == "template":
            template = body.get("template", {})
            if not template.get("name") or not template.get("language", {}).get("code"):
                return "template.name and template.language.code are required"
            for component in template.get("components", []):
                if component.get("type") == "button":
                    problem = MetaPeer.check_button(component)
                    if problem:
                        return problem
                    continue
                for parameter in component.get("parameters", []):
                    if parameter.get("type") != "text" or not isinstance(
                        parameter.get("text"), str
                    ):
                        return "parameters are {type: text, text: ...}"
            return None
        if body.get("type") == "interactive":
            return MetaPeer.check_interactive(body.get("interactive", {}))
        return f"unsupported type {body.get('type')!r}"

    @staticmethod
    def check_button(component: dict[str, Any]) -> str | None:
        """A template's button component: a quick reply's payload or a URL's suffix."""
        wanted = {"quick_reply": "payload", "url": "text"}.get(component.get("sub_type", ""))
        if wanted is None or not str(component.get("index", "")).isdigit():
            return "a button component has a sub_type (quick_reply, url) and an index"
        [parameter] = component.get("parameters") or [{}]
        if parameter.get("type") != wanted or not isinstance(parameter.get(wanted), str):
            return f"a {component['sub_type']} button's parameter is {{type: {wanted}, ...}}"
        return None

    @staticmethod
    def check_interactive(interactive: dict[str, Any]) -> str | None:
        """Reply buttons (at most 3, titles of at most 20 characters) or one cta_url."""
        if not interactive.get("body", {}).get("text"):
            return "interactive.body.text is required"
        action = interactive.get("action", {})
        if interactive.get("type") == "button":
            buttons = action.get("buttons", [])
            if not 1 <= len(buttons) <= 3:
                return "interactive.action.buttons: 1 to 3 buttons"
            for button in buttons:
                reply = button.get("reply", {})
                if button.get("type") != "reply" or not reply.get("id"):
                    return "a button is {type: reply, reply: {id, title}}"
                if not 1 <= len(reply.get("title", "")) <= 20:
                    return "a reply button's title has 1 to 20 characters"
            return None
        if interactive.get("type") == "cta_url":
            parameters = action.get("parameters", {})
            if action.get("name") != "cta_url" or not parameters.get("display_text"):
                return "interactive.action is {name: cta_url, parameters: {display_text, url}}"
            if not str(parameters.get("url", "")).startswith(("https://", "http://")):
                return "interactive.action.parameters.url must be a URL"
            return None
        return f"unsupported interactive type {interactive.get('type')!r}"

    def __enter__(self) -> MetaPeer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _post(self, url: str, value: dict[str, Any], secret: str | None = None) -> Any:
        import hashlib
        import hmac
        import json as json_module

        import httpx

        body = json_module.dumps(
            {
                "object": "whatsapp_business_account",
                "entry": [
                    {
                        "id": "WABA-1",
                        "changes": [
                            {
                                "field": "messages",
                                "value": {
                                    "messaging_product": "whatsapp",
                                    "metadata": {
                                        "display_phone_number": "33700000000",
                                        "phone_number_id": self.phone_number_id,
                                    },
                                    **value,
                                },
                            }
                        ],
                    }
                ],
            }
        ).encode()
        mac = hmac.new((secret or self.app_secret).encode(), body, hashlib.sha256).hexdigest()
        headers = {"X-Hub-Signature-256": f"sha256={mac}", "Content-Type": "application/json"}
        return httpx.post(url, content=body, headers=headers, timeout=10)

    def status(self, url: str, message: dict[str, Any], status: str, code: int = 0) -> Any:
        item: dict[str, Any] = {
            "id": message["id"],
            "status": status,
            "timestamp": "1790000000",
            "recipient_id": message["to"],
        }
        if code:
            item["errors"] = [{"code": code, "title": "Message undeliverable."}]
        return self._post(url, {"statuses": [item]})

    def incoming(
        self, url: str, sender: str, text: str, wamid: str, at_s: int, secret: str | None = None
    ) -> Any:
        message = {
            "from": sender.lstrip("+"),
            "id": wamid,
            "timestamp": str(at_s),
            "type": "text",
            "text": {"body": text},
        }
        contacts = [{"profile": {"name": "Ana"}, "wa_id": sender.lstrip("+")}]
        return self._post(url, {"contacts": contacts, "messages": [message]}, secret)

    def tap(self, url: str, message: dict[str, Any], wamid: str, at_s: int) -> Any:
        """The customer taps a button of a message we sent (`message`, as this peer
        received it): a reply button of an interactive message comes back as Meta
        documents it (`interactive.button_reply`), a template's quick reply as `button`
        with the payload it was sent with; both with the message answered in `context`."""
        tapped: dict[str, Any] = {
            "context": {"from": "33700000000", "id": message["id"]},
            "from": message["to"],
            "id": wamid,
            "timestamp": str(at_s),
        }
        if message["type"] == "interactive":
            reply = message["interactive"]["action"]["buttons"][0]["reply"]
            tapped["type"] = "interactive"
            tapped["interactive"] = {"type": "button_reply", "button_reply": reply}
        else:
            component = next(
                c for c in message["template"]["components"] if c.get("sub_type") == "quick_reply"
            )
            payload = component["parameters"][0]["payload"]
            tapped["type"] = "button"
            tapped["button"] = {"payload": payload, "text": payload.title()}
        contacts = [{"profile": {"name": "Ana"}, "wa_id": message["to"]}]
        return self._post(url, {"contacts": contacts, "messages": [tapped]})


# ---- a Web Push service and the browser behind it --------------------------------------------


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class PushBrowser:
    """A browser's subscription: its own P-256 key pair and auth secret (what
    `pushManager.subscribe` makes), and the decryption of what is pushed to it, written
    here from RFC 8291 and RFC 8188 with `cryptography` alone."""

    def __init__(self, endpoint: str) -> None:
        import os

        from cryptography.hazmat.primitives.asymmetric import ec

        self.endpoint = endpoint
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.public_raw = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.auth_secret = os.urandom(16)

    def subscription(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": _b64url(self.public_raw), "auth": _b64url(self.auth_secret)},
        }

    def decrypt(self, body: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        salt, record_size, id_length = body[:16], int.from_bytes(body[16:20], "big"), body[20]
        sender_raw = body[21 : 21 + id_length]
        ciphertext = body[21 + id_length :]
        assert len(ciphertext) <= record_size  # one record
        sender = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), sender_raw)
        shared = self.private_key.exchange(ec.ECDH(), sender)
        key_info = b"WebPush: info\x00" + self.public_raw + sender_raw
        ikm = HKDF(hashes.SHA256(), 32, self.auth_secret, key_info).derive(shared)
        cek = HKDF(hashes.SHA256(), 16, salt, b"Content-Encoding: aes128gcm\x00").derive(ikm)
        nonce = HKDF(hashes.SHA256(), 12, salt, b"Content-Encoding: nonce\x00").derive(ikm)
        padded = AESGCM(cek).decrypt(nonce, ciphertext, None)
        content = padded.rstrip(b"\x00")
        assert content.endswith(b"\x02"), "the last record ends with the 0x02 delimiter"
        return content[:-1]


class PushService:
    """A push service on loopback (RFC 8030): checks each push's VAPID authorization
    (RFC 8292: an ES256 JWT for this origin, signed by the key it names), keeps the
    encrypted bodies, and answers 201, or 410 for subscriptions it was told are gone."""

    def __init__(self) -> None:
        import http.server

        self.received: list[dict[str, Any]] = []
        self.gone: set[str] = set()
        peer = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                problem = peer.check_vapid(self.headers.get("Authorization", ""))
                if problem:
                    self.send_response(403)
                    self.end_headers()
                    self.wfile.write(problem.encode())
                    return
                if self.path in peer.gone:
                    self.send_response(410)
                    self.end_headers()
                    return
                peer.received.append(
                    {
                        "path": self.path,
                        "body": body,
                        "encoding": self.headers.get("Content-Encoding"),
                        "ttl": self.headers.get("TTL"),
                        "topic": self.headers.get("Topic"),
                    }
                )
                self.send_response(201)
                self.send_header("Location", f"{peer.url}/m/{len(peer.received)}")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def check_vapid(self, header: str) -> str | None:
        import json as json_module
        import time

        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        if not header.startswith("vapid "):
            return "no VAPID authorization"
        fields = dict(part.strip().split("=", 1) for part in header[6:].split(","))
        token, key = fields.get("t", ""), fields.get("k", "")
        head, claims, signature = token.split(".")
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _b64url_decode(key))
        raw = _b64url_decode(signature)
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        try:
            public.verify(der, f"{head}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return "bad VAPID signature"
        document = json_module.loads(_b64url_decode(claims))
        if document.get("aud") != self.url:
            return f"aud {document.get('aud')} is not this push service"
        if not str(document.get("sub", "")).startswith(("mailto:", "https://")):
            return "sub must be mailto: or https:"
        if not time.time() < int(document.get("exp", 0)) <= time.time() + 24 * 3600:
            return "exp must be within 24 hours"
        return None

    def browser(self, name: str) -> PushBrowser:
        return PushBrowser(f"{self.url}/push/{name}")

    def __enter__(self) -> PushService:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---- Firebase Cloud Messaging (HTTP v1) and Google's OAuth token endpoint ----------------------


FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


class GooglePeer:
    """What Google's APIs on loopback have in common: the service account a brand
    downloads, and Google's token endpoint, which verifies the account's RS256 assertion
    (RFC 7523) with its public key and the scope asked for, and hands out access tokens."""

    scope = ""

    def __init__(self, project_id: str) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.project_id = project_id
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.tokens: list[str] = []
        self.server: http.server.ThreadingHTTPServer
        self.url = ""

    def start_server(self, handler: type[JsonHandler]) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def token_answer(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """The token endpoint's answer to a POST of this form body."""
        import urllib.parse

        form = dict(urllib.parse.parse_qsl(body.decode()))
        problem = self.check_assertion(form)
        if problem:
            return 400, {"error": "invalid_grant", "error_description": problem}
        token = f"ya29.test-{len(self.tokens) + 1}"
        self.tokens.append(token)
        return 200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}

    def authorised(self, header: str | None) -> bool:
        return (header or "").removeprefix("Bearer ") in self.tokens

    def service_account(self) -> dict[str, str]:
        """The JSON a brand downloads from the Google Cloud (or Firebase) console."""
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": "key-1",
            "private_key": self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
            "client_email": f"parcours@{self.project_id}.iam.gserviceaccount.com",
            "token_uri": f"{self.url}/token",
        }

    def check_assertion(self, form: dict[str, str]) -> str | None:
        import json as json_module
        import time

        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return "grant_type"
        head, claims, signature = form.get("assertion", "..").split(".")
        try:
            self.key.public_key().verify(
                _b64url_decode(signature),
                f"{head}.{claims}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            return "bad signature"
        document = json_module.loads(_b64url_decode(claims))
        if json_module.loads(_b64url_decode(head)).get("alg") != "RS256":
            return "alg"
        if document.get("aud") != f"{self.url}/token":
            return "aud"
        if document.get("scope") != self.scope:
            return "scope"
        if not document["iat"] <= time.time() + 5 < document["exp"] <= document["iat"] + 3600:
            return "times"
        return None

    def __enter__(self) -> Any:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class FcmPeer(GooglePeer):
    """Google's token endpoint and FCM's HTTP v1 send endpoint on loopback; the send
    endpoint wants one of the access tokens the token endpoint gave out."""

    scope = "https://www.googleapis.com/auth/firebase.messaging"

    def __init__(self, project_id: str = "maison-app") -> None:
        import json as json_module

        super().__init__(project_id)
        self.messages: list[dict[str, Any]] = []
        self.unregistered: set[str] = set()
        peer = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path == "/token":
                    return self.answer(*peer.token_answer(body))
                if self.path != f"/v1/projects/{peer.project_id}/messages:send":
                    return self.answer(404, {"error": {"code": 404, "status": "NOT_FOUND"}})
                if not peer.authorised(self.headers.get("Authorization")):
                    return self.answer(401, {"error": {"code": 401, "status": "UNAUTHENTICATED"}})
                message = json_module.loads(body).get("message", {})
                if not message.get("token") or not message.get("notification", {}).get("title"):
                    return self.answer(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT"}})
                if message["token"] in peer.unregistered:
                    return self.answer(
                        404,
                        {
                            "error": {
                                "code": 404,
                                "message": "Requested entity was not found.",
                                "status": "NOT_FOUND",
                                "details": [
                                    {
                                        "@type": FCM_ERROR_TYPE,
                                        "errorCode": "UNREGISTERED",
                                    }
                                ],
                            }
                        },
                    )
                peer.messages.append(message)
                name = f"projects/{peer.project_id}/messages/0:{len(peer.messages)}"
                self.answer(200, {"name": name})

        self.start_server(Handler)

    def __enter__(self) -> FcmPeer:
        super().__enter__()
        return self


# ---- Google Wallet's REST API (generic objects) -------------------------------------------


def google_api_error(code: int, status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


class GoogleWalletPeer(GooglePeer):
    """Google Wallet's REST API for generic objects on loopback: `PATCH
    /walletobjects/v1/genericObject/{resourceId}` (404 for an object it does not hold) and
    `POST /walletobjects/v1/genericObject` (409 for one it holds), each with a bearer token
    from its token endpoint (scope wallet_object.issuer) and the body checked as Google
    documents a GenericObject (ids `issuer.identifier`, LocalizedStrings, text modules,
    barcode); `GET /walletobjects/v1/issuer/{resourceId}` answers its issuer, and 403
    PERMISSION_DENIED for another (the account is none of its users). `fail_next` answers
    the next requests with these statuses (429, 503)."""

    scope = "https://www.googleapis.com/auth/wallet_object.issuer"

    def __init__(self, issuer_id: str, classes: set[str]) -> None:
        import json as json_module
        import urllib.parse

        super().__init__("maison-wallet")
        self.issuer_id = issuer_id
        self.classes = classes  # the class ids the brand made in the console
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.fail_next: list[int] = []
        peer = self
        base = "/walletobjects/v1/genericObject"

        class Handler(JsonHandler):
            def _body(self) -> Any:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                return raw if self.path == "/token" else json_module.loads(raw or b"{}")

            def _refused(self, method: str) -> bool:
                if not peer.authorised(self.headers.get("Authorization")):
                    self.answer(401, google_api_error(401, "UNAUTHENTICATED", "bad token"))
                    return True
                peer.requests.append((method, self.path))
                if peer.fail_next:
                    status = peer.fail_next.pop(0)
                    self.answer(status, google_api_error(status, "UNAVAILABLE", "try later"))
                    return True
                return False

            def do_POST(self) -> None:
                body = self._body()
                if self.path == "/token":
                    return self.answer(*peer.token_answer(body))
                if self.path != base:
                    return self.answer(404, google_api_error(404, "NOT_FOUND", "no such method"))
                if self._refused("POST"):
                    return None
                problem = peer.check_object(body)
                if problem:
                    return self.answer(400, google_api_error(400, "INVALID_ARGUMENT", problem))
                if body["id"] in peer.objects:
                    return self.answer(
                        409, google_api_error(409, "ALREADY_EXISTS", "the object exists")
                    )
                peer.objects[body["id"]] = body
                self.answer(200, body)

            def do_GET(self) -> None:
                issuer = "/walletobjects/v1/issuer/"
                if not self.path.startswith(issuer):
                    return self.answer(404, google_api_error(404, "NOT_FOUND", "no such method"))
                if not peer.authorised(self.headers.get("Authorization")):
                    return self.answer(401, google_api_error(401, "UNAUTHENTICATED", "bad token"))
                peer.requests.append(("GET", self.path))
                if self.path.removeprefix(issuer) != peer.issuer_id:
                    message = "The caller does not have permission"
                    return self.answer(403, google_api_error(403, "PERMISSION_DENIED", message))
                self.answer(200, {"issuerId": peer.issuer_id, "name": "Maison"})

            def do_PATCH(self) -> None:
                body = self._body()
                if not self.path.startswith(base + "/"):
                    return self.answer(404, google_api_error(404, "NOT_FOUND", "no such method"))
                if self._refused("PATCH"):
                    return None
                resource = urllib.parse.unquote(self.path.removeprefix(base + "/"))
                if resource not in peer.objects:
                    return self.answer(
                        404, google_api_error(404, "NOT_FOUND", "Requested entity was not found.")
                    )
                merged = {**peer.objects[resource], **body}
                problem = peer.check_object(merged)
                if problem or merged["id"] != resource:
                    message = problem or "id differs from the resource id"
                    return self.answer(400, google_api_error(400, "INVALID_ARGUMENT", message))
                peer.objects[resource] = merged
                self.answer(200, merged)

        self.start_server(Handler)

    def check_object(self, card: dict[str, Any]) -> str | None:
        import re

        def localized(value: Any) -> bool:
            default = value.get("defaultValue") if isinstance(value, dict) else None
            return (
                isinstance(default, dict)
                and isinstance(default.get("language"), str)
                and isinstance(default.get("value"), str)
            )

        identifier = str(card.get("id", ""))
        if not re.fullmatch(rf"{self.issuer_id}\.[A-Za-z0-9._-]+", identifier):
            return "id must be issuerId.identifier (letters, digits, . _ -)"
        if card.get("classId") not in self.classes:
            return f"no class {card.get('classId')}"
        if not localized(card.get("cardTitle")) or not localized(card.get("header")):
            return "cardTitle and header are required LocalizedStrings"
        if "subheader" in card and not localized(card["subheader"]):
            return "subheader must be a LocalizedString"
        if card.get("state", "ACTIVE") not in ("ACTIVE", "COMPLETED", "EXPIRED", "INACTIVE"):
            return "state"
        for module in card.get("textModulesData", []):
            if not all(isinstance(module.get(k), str) for k in ("header", "body", "id")):
                return "textModulesData items have header, body and id"
        barcode = card.get("barcode", {})
        if barcode and (
            barcode.get("type") not in ("QR_CODE", "CODE_128") or not barcode.get("value")
        ):
            return "barcode"
        return None

    def __enter__(self) -> GoogleWalletPeer:
        super().__enter__()
        return self


# ---- a test certificate authority, and APNs over HTTP/2 -----------------------------------------


def make_authority(
    folder: Path, pass_type: str, order_type: str = "order.example.maison"
) -> dict[str, Path]:
    """A root, an intermediate standing for Apple's WWDR, a Pass Type ID certificate, an
    Order Type ID certificate, and a TLS server certificate for 127.0.0.1, as PEM files."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def certificate(
        subject: str, key: Any, issuer: str, issuer_key: Any, ca: bool, server: bool = False
    ) -> x509.Certificate:
        import ipaddress

        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return builder.sign(issuer_key, hashes.SHA256())

    root_key, wwdr_key, pass_key, order_key, server_key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(5)
    )
    certificates = {
        "root": certificate("Test Root CA", root_key, "Test Root CA", root_key, True),
        "wwdr": certificate("Test WWDR", wwdr_key, "Test Root CA", root_key, True),
        "cert": certificate(f"Pass Type ID: {pass_type}", pass_key, "Test WWDR", wwdr_key, False),
        "order_cert": certificate(
            f"Order Type ID: {order_type}", order_key, "Test WWDR", wwdr_key, False
        ),
        "server": certificate("127.0.0.1", server_key, "Test Root CA", root_key, False, True),
    }
    paths: dict[str, Path] = {}
    for label, cert in certificates.items():
        paths[label] = folder / f"{label}.pem"
        paths[label].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    for label, key in (("key", pass_key), ("order_key", order_key), ("server_key", server_key)):
        paths[label] = folder / f"{label}.pem"
        paths[label].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    # The pass certificate and the intermediate, as a client presents them.
    paths["chain"] = folder / "chain.pem"
    paths["chain"].write_bytes(paths["cert"].read_bytes() + paths["wwdr"].read_bytes())
    return paths


class ApnsPeer:
    """APNs on loopback over TLS and HTTP/2 only (hypercorn): `POST /3/device/<token>`,
    the provider token (ES256 JWT) checked against the app's key, answers and `reason`s
    as Apple documents them. With `client_ca`, a TLS client certificate is required (the
    Wallet pass update pushes)."""

    def __init__(
        self, authority: dict[str, Path], app_key: Any = None, client_ca: Path | None = None
    ) -> None:
        self.authority = authority
        self.app_key = app_key
        self.client_ca = client_ca
        self.received: list[dict[str, Any]] = []
        self.gone: set[str] = set()
        self.expire_next_token = False
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self._stop: Any = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self._ready = threading.Event()

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        import json as json_module

        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        status, answer = self.handle(scope["http_version"], scope["path"], headers, body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"apns-id", b"00000000-0000-0000-0000-000000000001"),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send(
            {
                "type": "http.response.body",
                "body": json_module.dumps(answer).encode() if answer else b"",
            }
        )

    def handle(
        self, version: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any] | None]:
        import json as json_module

        if version != "2":
            return 400, {"reason": "BadMethod"}  # APNs speaks HTTP/2 only
        if not path.startswith("/3/device/"):
            return 404, {"reason": "BadPath"}
        token = path.removeprefix("/3/device/")
        if self.app_key is not None:
            problem = self.check_token(headers.get("authorization", ""))
            if problem:
                return 403, {"reason": problem}
            if self.expire_next_token:
                self.expire_next_token = False
                return 403, {"reason": "ExpiredProviderToken"}
        if token in self.gone:
            return 410, {"reason": "Unregistered", "timestamp": 1790000000000}
        self.received.append(
            {"token": token, "headers": headers, "body": json_module.loads(body or b"{}")}
        )
        return 200, None

    def check_token(self, authorization: str) -> str | None:
        import json as json_module
        import time

        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        if not authorization.startswith("bearer "):
            return "MissingProviderToken"
        head, claims, signature = authorization[7:].split(".")
        raw = _b64url_decode(signature)
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        try:
            self.app_key.public_key().verify(
                der, f"{head}.{claims}".encode(), ec.ECDSA(hashes.SHA256())
            )
        except InvalidSignature:
            return "InvalidProviderToken"
        header = json_module.loads(_b64url_decode(head))
        document = json_module.loads(_b64url_decode(claims))
        if header.get("alg") != "ES256" or header.get("kid") != "KEY123":
            return "InvalidProviderToken"
        if document.get("iss") != "TEAM123456" or time.time() - document["iat"] > 3600:
            return "ExpiredProviderToken"
        return None

    def _serve(self) -> None:
        import asyncio
        import ssl

        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.certfile = str(self.authority["server"])
        config.keyfile = str(self.authority["server_key"])
        config.alpn_protocols = ["h2"]
        config.loglevel = "WARNING"
        if self.client_ca is not None:
            config.ca_certs = str(self.client_ca)
            config.verify_mode = ssl.CERT_REQUIRED

        async def main() -> None:
            self._stop = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            self._ready.set()
            await serve(self.app, config, shutdown_trigger=self._stop.wait)  # type: ignore[arg-type]

        asyncio.run(main())

    def __enter__(self) -> ApnsPeer:
        self.thread.start()
        self._ready.wait(10)
        wait_until(self._listening, 10, what="the APNs peer to listen")
        return self

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
        except OSError:
            return False
        return True

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)


# ---- Postmark ---------------------------------------------------------------------------------


class PostmarkPeer:
    """Postmark's `POST /email` on loopback (server token header, JSON as documented,
    ErrorCode answers), and its webhooks posted with the URL's Basic credentials."""

    def __init__(self, token: str = "server-token") -> None:
        import http.server
        import json as json_module
        import uuid

        self.token = token
        self.messages: list[dict[str, Any]] = []
        self.inactive: set[str] = set()
        peer = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                """The server's settings: the settings page's connection test."""
                if self.headers.get("X-Postmark-Server-Token") != peer.token:
                    return self.answer(
                        401, {"ErrorCode": 10, "Message": "Bad or missing API token"}
                    )
                if self.path != "/server":
                    return self.answer(404, {"ErrorCode": 404, "Message": "not found"})
                self.answer(200, {"ID": 1, "Name": "Maison"})

            def do_POST(self) -> None:
                if self.headers.get("X-Postmark-Server-Token") != peer.token:
                    return self.answer(
                        401, {"ErrorCode": 10, "Message": "Bad or missing API token"}
                    )
                body = json_module.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/email":
                    return self.answer(404, {"ErrorCode": 404, "Message": "not found"})
                if not body.get("From") or not body.get("To") or not body.get("Subject"):
                    return self.answer(422, {"ErrorCode": 300, "Message": "Invalid email request"})
                if not (body.get("TextBody") or body.get("HtmlBody")):
                    return self.answer(422, {"ErrorCode": 300, "Message": "Provide a body"})
                if body["To"] in peer.inactive:
                    return self.answer(
                        422,
                        {
                            "ErrorCode": 406,
                            "Message": "You tried to send to a recipient that "
                            "has been marked as inactive.",
                        },
                    )
                message_id = str(uuid.uuid4())
                peer.messages.append({**body, "MessageID": message_id})
                self.answer(
                    200,
                    {
                        "To": body["To"],
                        "SubmittedAt": "2026-11-24T10:00:00Z",
                        "MessageID": message_id,
                        "ErrorCode": 0,
                        "Message": "OK",
                    },
                )

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def webhook(self, url: str, record: dict[str, Any], user: str, password: str) -> Any:
        import httpx

        return httpx.post(url, json=record, auth=(user, password), timeout=10)

    def __enter__(self) -> PostmarkPeer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
