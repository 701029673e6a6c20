"""Email over SMTP: STARTTLS or TLS, authentication, connections reused, DKIM-signed
multipart mail with the one-click unsubscribe headers of RFC 8058 (docs/channels.md)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import smtplib
import ssl
import threading
from dataclasses import dataclass, field
from email.header import Header
from email.utils import formataddr, formatdate
from pathlib import Path
from typing import Any

import dkim
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from parcours.channels.base import (
    ConfigError,
    OutgoingMessage,
    PermanentFailure,
    TransientFailure,
    setting,
)

# What the DKIM signature covers: the unsubscribe headers among them, so that nobody on the
# way can change where the one-click unsubscribe goes.
SIGNED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"mime-version",
    b"content-type",
)


# dkimpy canonicalises and assembles the signature well but computes RSA in pure Python
# (60% of a send, measured: bench/RESULTS.md). The same PKCS#1 v1.5 signature, computed
# by `cryptography`, takes its place; the output is identical (verified by the tests).
_pure_python_sign = dkim.RSASSA_PKCS1_v1_5_sign
_keys: dict[int, rsa.RSAPrivateKey] = {}


def _rsa_sign(digest: Any, private_key: dict[str, int]) -> bytes:
    if digest.name != "sha256":
        return bytes(_pure_python_sign(digest, private_key))
    key = _keys.get(private_key["modulus"])
    if key is None:
        public = rsa.RSAPublicNumbers(private_key["publicExponent"], private_key["modulus"])
        key = rsa.RSAPrivateNumbers(
            private_key["prime1"],
            private_key["prime2"],
            private_key["privateExponent"],
            private_key["exponent1"],
            private_key["exponent2"],
            private_key["coefficient"],
            public,
        ).private_key()
        _keys[private_key["modulus"]] = key
    return key.sign(digest.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))


dkim.RSASSA_PKCS1_v1_5_sign = _rsa_sign
# dkimpy also parses the PEM key, in Python, at every signature: once is enough.
dkim.parse_pem_private_key = functools.lru_cache(maxsize=8)(dkim.parse_pem_private_key)


def _encoded(value: str) -> str:
    """ASCII as it is; anything else as RFC 2047 encoded words."""
    if value.isascii():
        return value
    return Header(value, "utf-8", maxlinelen=998).encode(linesep="\r\n")


def mime_bytes(headers: list[tuple[str, str]], text: str, html: str | None, key: str) -> bytes:
    """The message on the wire: headers, then the text (quoted-printable) and, when there
    is one, the HTML (base64) as multipart/alternative. Written directly: the standard
    library's generator cost as much as the DKIM signature (measured). The boundary comes
    from the key, so a re-sent message is the same bytes but for its Date."""
    plain = text.replace("\r\n", "\n").encode("utf-8")
    plain_body = binascii.b2a_qp(plain, istext=True).replace(b"\n", b"\r\n")
    plain_headers = (
        b'Content-Type: text/plain; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: quoted-printable\r\n"
    )
    lines = [f"{name}: {value}".encode() for name, value in headers]
    if html is None:
        return b"\r\n".join(lines) + b"\r\n" + plain_headers + b"\r\n" + plain_body
    boundary = f"=_parcours_{hashlib.sha256(key.encode()).hexdigest()[:24]}".encode()
    html_body = base64.encodebytes(html.encode("utf-8")).replace(b"\n", b"\r\n")
    return b"".join(
        [
            b"\r\n".join(lines),
            b'\r\nContent-Type: multipart/alternative; boundary="' + boundary + b'"\r\n\r\n',
            b"--" + boundary + b"\r\n" + plain_headers + b"\r\n" + plain_body + b"\r\n",
            b"--" + boundary + b'\r\nContent-Type: text/html; charset="utf-8"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n" + html_body,
            b"--" + boundary + b"--\r\n",
        ]
    )


def message_id_for(key: str, domain: str) -> str:
    """The same Message-ID for every attempt to send the same message."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


@dataclass
class SmtpProvider:
    host: str
    port: int
    from_address: str
    from_name: str = ""
    security: str = "starttls"  # starttls | tls | none
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    reply_to: str | None = None
    return_path: str | None = None  # envelope sender; `{id}` becomes the outbox id (VERP)
    dkim_domain: str | None = None
    dkim_selector: str | None = None
    dkim_key: bytes | None = field(default=None, repr=False)
    timeout: float = 30.0
    verify_tls: bool = True
    connections: int = 4  # messages sent at once, each on a connection of its own
    channel: str = "email"
    name: str = "smtp"

    def __post_init__(self) -> None:
        self._idle: list[smtplib.SMTP] = []
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SmtpProvider:
        where = "channels.email"
        security = setting(config, where, "security", str, "starttls")
        if security not in ("starttls", "tls", "none"):
            raise ConfigError(f"{where}.security must be starttls, tls or none")
        dkim_key = None
        key_file = config.get("dkim_key_file")
        if key_file is not None:
            path = Path(str(key_file))
            if not path.is_file():
                raise ConfigError(f"{where}.dkim_key_file: {path} does not exist")
            dkim_key = path.read_bytes()
        elif config.get("dkim_key_env") is not None:
            dkim_key = setting(config, where, "dkim_key", str).encode()
        provider = cls(
            host=setting(config, where, "host", str),
            port=setting(config, where, "port", int, 587 if security == "starttls" else 465),
            from_address=setting(config, where, "from_address", str),
            from_name=setting(config, where, "from_name", str, ""),
            security=security,
            username=config.get("username"),
            password=(
                setting(config, where, "password", str)
                if "password" in config or "password_env" in config
                else None
            ),
            reply_to=config.get("reply_to"),
            return_path=config.get("return_path"),
            dkim_domain=config.get("dkim_domain"),
            dkim_selector=config.get("dkim_selector"),
            dkim_key=dkim_key,
            timeout=setting(config, where, "timeout", float, 30.0),
            connections=setting(config, where, "connections", int, 4),
            verify_tls=bool(config.get("verify_tls", True)),
        )
        if not 1 <= provider.connections <= 64:
            raise ConfigError(f"{where}.connections must be between 1 and 64")
        if (provider.dkim_key is None) != (provider.dkim_selector is None):
            raise ConfigError(f"{where}: DKIM needs both dkim_selector and dkim_key_file")
        return provider

    @property
    def domain(self) -> str:
        return self.dkim_domain or self.from_address.rpartition("@")[2]

    # ---- building -------------------------------------------------------------------

    def build(self, message: OutgoingMessage, now_s: float | None = None) -> bytes:
        """The message as it goes on the wire, DKIM signature first."""
        content = message.content
        headers: list[tuple[str, str]] = [
            ("From", formataddr((self.from_name, self.from_address), charset="utf-8")),
            ("To", message.address),
            ("Subject", _encoded(content["subject"])),
            ("Date", formatdate(now_s, usegmt=True)),
            ("Message-ID", message_id_for(message.key, self.domain)),
        ]
        if self.reply_to:
            headers.append(("Reply-To", self.reply_to.replace("{id}", str(message.outbox_id))))
        unsubscribe = message.links.get("unsubscribe")
        if unsubscribe:
            headers.append(("List-Unsubscribe", f"<{unsubscribe}>"))
            headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
        headers.append(("X-Parcours-Message", str(message.outbox_id)))
        headers.append(("MIME-Version", "1.0"))
        raw = mime_bytes(headers, content.get("text") or "", content.get("html"), message.key)
        if self.dkim_key is not None and self.dkim_selector is not None:
            present = {name.lower().encode() for name, _ in headers} | {b"content-type"}
            signature = dkim.sign(
                raw,
                self.dkim_selector.encode(),
                self.domain.encode(),
                self.dkim_key,
                include_headers=[h for h in SIGNED_HEADERS if h in present],
                linesep=b"\r\n",
            )
            raw = signature + raw
        return raw

    # ---- sending --------------------------------------------------------------------

    def send(self, message: OutgoingMessage) -> str:
        raw = self.build(message)
        sender = (self.return_path or self.from_address).replace("{id}", str(message.outbox_id))
        for attempt in (1, 2):
            connection = self._connection()
            try:
                refused = connection.sendmail(sender, [message.address], raw)
            except smtplib.SMTPServerDisconnected as exc:
                # A reused connection the server closed: once more on a fresh one.
                self._discard(connection)
                if attempt == 2:
                    raise TransientFailure(
                        f"the SMTP server closed the connection: {exc}"
                    ) from None
                continue
            except smtplib.SMTPRecipientsRefused as exc:
                self._release(connection)
                code, text = next(iter(exc.recipients.values()))
                raise _failure(code, text) from None
            except smtplib.SMTPResponseException as exc:
                self._discard(connection)
                raise _failure(exc.smtp_code, exc.smtp_error) from None
            except (OSError, smtplib.SMTPException) as exc:
                self._discard(connection)
                raise TransientFailure(f"SMTP error: {exc}") from None
            self._release(connection)
            if refused:
                code, text = next(iter(refused.values()))
                raise _failure(code, text)
            return message_id_for(message.key, self.domain).strip("<>")
        raise AssertionError("unreachable")

    def _connection(self) -> smtplib.SMTP:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        try:
            context = ssl.create_default_context()
            if not self.verify_tls:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            connection: smtplib.SMTP
            if self.security == "tls":
                connection = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=context
                )
            else:
                connection = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
                if self.security == "starttls":
                    connection.starttls(context=context)
            if self.username:
                connection.login(self.username, self.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise TransientFailure(
                f"the SMTP server refused our login ({exc.smtp_code}); check the credentials"
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise TransientFailure(
                f"cannot reach the SMTP server {self.host}:{self.port}: {exc}"
            ) from None
        return connection

    def _release(self, connection: smtplib.SMTP) -> None:
        with self._lock:
            self._idle.append(connection)

    def _discard(self, connection: smtplib.SMTP) -> None:
        with contextlib.suppress(OSError):
            connection.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            try:
                connection.quit()
            except (OSError, smtplib.SMTPException):
                connection.close()


def _failure(code: int, text: bytes | str) -> PermanentFailure | TransientFailure:
    """5xx: the server will never take it (a hard bounce when it is about the mailbox);
    anything else: try again later."""
    reason = f"{code} {text.decode(errors='replace') if isinstance(text, bytes) else text}"
    if 500 <= code < 600:
        mailbox = code in (550, 551, 553) or "5.1." in reason
        return PermanentFailure(reason, code=str(code), suppress=mailbox)
    return TransientFailure(reason, code=str(code))
