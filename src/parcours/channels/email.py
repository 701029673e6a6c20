"""Email over SMTP: STARTTLS or TLS, authentication, connections reused, DKIM-signed
multipart mail with the one-click unsubscribe headers of RFC 8058 (docs/channels.md)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import re
import smtplib
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.header import Header
from email.utils import formataddr, formatdate
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from parcours.channels.base import (
    ConfigError,
    OutgoingMessage,
    PermanentFailure,
    TransientFailure,
    setting,
)
from parcours.channels.email_bounces import SENDER_CODE, classify
from parcours.channels.email_tags import EmailTags, tagged, unsigned_message_id
from parcours.customers import BadEmail, check_email

log = logging.getLogger(__name__)

# What the DKIM signature covers: the unsubscribe headers among them, so that nobody on the
# way can change where the one-click unsubscribe goes.
SIGNED_HEADERS = (
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "mime-version",
    "content-type",
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WSP = re.compile(r"[ \t]+")


def _header_value(value: str) -> str:
    """One line (a line break in a subject would start a header of its own), ASCII as it
    is and anything else as RFC 2047 encoded words."""
    value = _CONTROL.sub(" ", value)
    if value.isascii():
        return value
    return Header(value, "utf-8", maxlinelen=998).encode(linesep="\r\n")


def _relaxed(name: str, value: str) -> str:
    """A header field in DKIM's "relaxed" canonical form (RFC 6376, 3.4.2)."""
    if "\r\n" in value:
        value = value.replace("\r\n", "")
    if "\t" in value or "  " in value:
        value = _WSP.sub(" ", value)
    return f"{name.lower()}:{value.strip(' ')}\r\n"


@dataclass(frozen=True)
class DkimSigner:
    """DKIM-Signature (RFC 6376: rsa-sha256, relaxed headers, simple body) for the messages
    we build ourselves. dkimpy re-parsed and re-canonicalised every message in Python, which
    cost as much as the RSA signature (measured, bench/RESULTS.md): we already hold the
    headers as fields and the body as bytes. The tests verify every signature with
    dkimpy's verifier."""

    domain: str
    selector: str
    key: rsa.RSAPrivateKey

    @classmethod
    def from_pem(cls, domain: str, selector: str, pem: bytes) -> DkimSigner:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"the DKIM key is not a PEM private key without a password: {exc}"
            ) from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError("the DKIM key must be an RSA key (rsa-sha256)")
        if key.key_size < 1024:
            raise ConfigError("the DKIM key has under 1024 bits: receivers ignore such keys")
        return cls(domain, selector, key)

    def signature(self, headers: list[tuple[str, str]], body: bytes, now_s: int) -> str:
        """The value of the DKIM-Signature field for these header fields and this body."""
        signed = [(name, value) for name, value in headers if name.lower() in SIGNED_HEADERS]
        signed.sort(key=lambda field: SIGNED_HEADERS.index(field[0].lower()))
        while body.endswith(b"\r\n\r\n"):  # simple body: no empty lines at the end
            body = body[:-2]
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        body_hash = base64.b64encode(hashlib.sha256(body).digest()).decode()
        names = " : ".join(name.lower() for name, _ in signed)
        value = (
            f"v=1; a=rsa-sha256; c=relaxed/simple; d={self.domain}; s={self.selector};\r\n"
            f" t={now_s}; bh={body_hash};\r\n h={names};\r\n b="
        )
        canonical = "".join(_relaxed(name, text) for name, text in signed)
        canonical += _relaxed("DKIM-Signature", value)[:-2]  # without its line break
        digest = hashlib.sha256(canonical.encode()).digest()
        signature = base64.b64encode(
            self.key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        ).decode()
        folded = "\r\n ".join(signature[i : i + 72] for i in range(0, len(signature), 72))
        return value + folded


def mime_parts(
    headers: list[tuple[str, str]], text: str, html: str | None, key: str
) -> tuple[list[tuple[str, str]], bytes]:
    """The message's header fields, its MIME ones added, and its body: the text
    (quoted-printable) and, when there is one, the HTML (base64) as multipart/alternative.
    Written directly: the standard library's generator cost as much as the DKIM signature
    (measured). The boundary comes from the key, so a re-sent message is the same bytes but
    for its Date."""
    plain = _lines(text).encode("utf-8")
    plain_body = binascii.b2a_qp(plain, istext=True).replace(b"\n", b"\r\n")
    if html is None:
        return [
            *headers,
            ("Content-Type", 'text/plain; charset="utf-8"'),
            ("Content-Transfer-Encoding", "quoted-printable"),
        ], plain_body
    boundary = f"=_parcours_{hashlib.sha256(key.encode()).hexdigest()[:24]}"
    mark = boundary.encode()
    encoded = binascii.b2a_base64(_lines(html).encode("utf-8"), newline=False)
    html_body = b"\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    body = b"".join(
        [
            b"--" + mark + b'\r\nContent-Type: text/plain; charset="utf-8"\r\n'
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + plain_body + b"\r\n",
            b"--" + mark + b'\r\nContent-Type: text/html; charset="utf-8"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n" + html_body + b"\r\n",
            b"--" + mark + b"--\r\n",
        ]
    )
    return [*headers, ("Content-Type", f'multipart/alternative; boundary="{boundary}"')], body


def check_configured_address(where: str, name: str, value: Any) -> None:
    """An address of the brand's settings (from, reply-to, return path; `{id}` stands for
    a message's id) passes the same check as every address: ConfigError naming it."""
    if value is None:
        return
    try:
        check_email(str(value).replace("{id}", "0"))
    except BadEmail as exc:
        raise ConfigError(f"{where}.{name} is not an email address: {exc}") from None


def _lines(text: str) -> str:
    """Line breaks as "\\n" only, a lone carriage return included: SMTP knows no line
    break but CRLF, and a bare CR is what mail-smuggling tricks are made of."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


@dataclass
class SmtpProvider:
    host: str
    port: int
    from_address: str
    from_name: str = ""
    security: str = "starttls"  # starttls | tls | none
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    reply_to: str | None = None  # `{id}` becomes the message's signed tag
    return_path: str | None = None  # envelope sender; `{id}` as above (VERP)
    dkim_domain: str | None = None
    dkim_selector: str | None = None
    dkim_key: bytes | None = field(default=None, repr=False)
    timeout: float = 30.0
    verify_tls: bool = True
    connections: int = 4  # messages sent at once, each on a connection of its own
    channel: str = "email"
    name: str = "smtp"
    # What signs the tags and Message-IDs (channels/email_tags.py), given by Services.open.
    tags: EmailTags | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._idle: list[smtplib.SMTP] = []
        self._lock = threading.Lock()
        self._from_header = formataddr((self.from_name, self.from_address), charset="utf-8")
        self._signer = (
            DkimSigner.from_pem(self.domain, self.dkim_selector, self.dkim_key)
            if self.dkim_key is not None and self.dkim_selector is not None
            else None
        )

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
        for name in ("from_address", "reply_to", "return_path"):
            check_configured_address(where, name, getattr(provider, name))
        if (provider.dkim_key is None) != (provider.dkim_selector is None):
            raise ConfigError(f"{where}: DKIM needs both dkim_selector and dkim_key_file")
        return provider

    @property
    def domain(self) -> str:
        return self.dkim_domain or self.from_address.rpartition("@")[2]

    def message_id(self, message: OutgoingMessage) -> str:
        """The same Message-ID for every attempt to send the same message."""
        if self.tags is None:
            return unsigned_message_id(message.key, self.domain)
        return self.tags.message_id(message.key, message.outbox_id, self.domain)

    # ---- building -------------------------------------------------------------------

    def build(
        self, message: OutgoingMessage, now_s: float | None = None, to: str | None = None
    ) -> bytes:
        """The message as it goes on the wire, DKIM signature first; `to` is the address
        as written in it (the checked one, by default the message's)."""
        content = message.content
        now = time.time() if now_s is None else now_s
        headers: list[tuple[str, str]] = [
            ("From", self._from_header),
            ("To", to or message.address),
            ("Subject", _header_value(content["subject"])),
            ("Date", formatdate(now, usegmt=True)),
            ("Message-ID", self.message_id(message)),
        ]
        if self.reply_to:
            headers.append(("Reply-To", tagged(self.reply_to, message.outbox_id, self.tags)))
        unsubscribe = message.links.get("unsubscribe")
        if unsubscribe:
            headers.append(("List-Unsubscribe", f"<{_header_value(unsubscribe)}>"))
            headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
        headers.append(("X-Parcours-Message", str(message.outbox_id)))
        headers.append(("MIME-Version", "1.0"))
        headers, body = mime_parts(
            headers, content.get("text") or "", content.get("html"), message.key
        )
        if self._signer is not None:
            headers.insert(0, ("DKIM-Signature", self._signer.signature(headers, body, int(now))))
        return "".join(f"{name}: {value}\r\n" for name, value in headers).encode() + (
            b"\r\n" + body
        )

    # ---- sending --------------------------------------------------------------------

    def send(self, message: OutgoingMessage) -> str:
        sender = tagged(self.return_path or self.from_address, message.outbox_id, self.tags)
        try:
            address = check_email(message.address)
        except BadEmail as exc:
            raise PermanentFailure(
                f"{message.address!r} is not an email address: {exc}", suppress=True
            ) from None
        # A mailbox name that is not ASCII goes only through a server offering SMTPUTF8
        # (RFC 6531); a domain that is not ASCII goes as IDNA, through any server.
        utf8 = address.ascii is None
        recipient = address.ascii or address.address
        raw = self.build(message, to=recipient)
        for attempt in (1, 2):
            connection = self._connection()
            try:
                connection.ehlo_or_helo_if_needed()
                if utf8 and not connection.has_extn("smtputf8"):
                    self._release(connection)
                    raise PermanentFailure(
                        f"{recipient} has a mailbox name that is not ASCII, which needs "
                        f"SMTPUTF8, and the SMTP server {self.host} does not offer it",
                        code="smtputf8",
                    )
                _transmit(connection, sender, recipient, raw, utf8=utf8)
            except PermanentFailure:
                raise
            except smtplib.SMTPServerDisconnected as exc:
                # A reused connection the server closed: once more on a fresh one.
                self._discard(connection)
                if attempt == 2:
                    raise TransientFailure(
                        f"the SMTP server closed the connection: {exc}"
                    ) from None
                continue
            except smtplib.SMTPRecipientsRefused as exc:
                code, text = next(iter(exc.recipients.values()))
                if code == 421:  # the server is closing this connection
                    self._discard(connection)
                else:
                    self._release(connection)
                raise _failure(code, text, about_recipient=True) from None
            except smtplib.SMTPSenderRefused as exc:
                self._discard(connection)
                raise _failure(exc.smtp_code, exc.smtp_error, about_recipient=False) from None
            except smtplib.SMTPResponseException as exc:
                self._discard(connection)
                raise _failure(exc.smtp_code, exc.smtp_error, about_recipient=True) from None
            except (OSError, smtplib.SMTPException) as exc:
                self._discard(connection)
                raise TransientFailure(f"SMTP error: {exc}") from None
            except BaseException:
                self._discard(connection)  # never left open and out of the pool
                raise
            self._release(connection)
            return self.message_id(message).strip("<>")
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


def _transmit(
    connection: smtplib.SMTP, sender: str, recipient: str, raw: bytes, *, utf8: bool = False
) -> None:
    """One mail transaction (MAIL, RCPT, DATA), as smtplib's `sendmail` does it, for a
    message we built ourselves: its addresses are bare and checked, its lines end in CRLF,
    so neither is parsed again (sendmail cost eight times as many instructions, measured).
    `utf8`: the transaction is SMTPUTF8 (the server offers it; the caller checked).
    Raises smtplib's exceptions; after a refused recipient the connection is reset, ready
    for the next message (as sendmail does, a server gone meanwhile is found out then)."""
    connection.ehlo_or_helo_if_needed()
    options = f" SIZE={len(raw)}" if connection.has_extn("size") else ""
    if utf8:
        options += " SMTPUTF8"
        if connection.has_extn("8bitmime"):
            options += " BODY=8BITMIME"
    code, reply = connection.docmd("MAIL", f"FROM:<{sender}>{options}")
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, reply, sender)
    connection.command_encoding = "utf-8" if utf8 else "ascii"
    try:
        code, reply = connection.docmd("RCPT", f"TO:<{recipient}>")
    finally:
        connection.command_encoding = "ascii"
    if code not in (250, 251):
        if code != 421:
            with contextlib.suppress(smtplib.SMTPServerDisconnected):
                connection.rset()
        raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
    code, reply = connection.docmd("DATA")
    if code != 354:
        raise smtplib.SMTPDataError(code, reply)
    # Dot-stuffing (RFC 5321, 4.5.2); the message starts with a header, never with a dot.
    data = raw.replace(b"\n.", b"\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    connection.send(data + b".\r\n")
    code, reply = connection.getreply()
    if code != 250:
        raise smtplib.SMTPDataError(code, reply)


def _failure(
    code: int, text: bytes | str, *, about_recipient: bool
) -> PermanentFailure | TransientFailure:
    """5xx: the server will never take it; 4xx: try again later. A reply about the
    recipient (to RCPT or DATA) is a bounce, hard or soft by the shared rule
    (channels/email_bounces.py). One about our sender (to MAIL), or one the rule puts
    down to our sending setup (SPF, DKIM, DMARC, our IP on a block list...), says nothing
    of the address: it counts against none, is logged for the operator and carries the
    code `sender` (counted as such in parcours_provider_errors_total)."""
    reason = f"{code} {text.decode(errors='replace') if isinstance(text, bytes) else text}"
    if code == 421:  # the server closes, whoever is asked
        return TransientFailure(reason, code=str(code))
    ours = not about_recipient or classify(reason, code=code).ours
    if ours:
        log.warning(
            "the receiving server refused our sending setup, not the address: %s "
            "(check the sender address, SPF, DKIM, DMARC and the sending IP's reputation)",
            reason,
        )
        if 500 <= code < 600:
            return PermanentFailure(reason, code=SENDER_CODE)
        return TransientFailure(reason, code=SENDER_CODE)
    verdict = classify(reason, code=code)
    if 500 <= code < 600:
        return PermanentFailure(
            reason, code=str(code), suppress=verdict.hard, soft_bounce=verdict.counted
        )
    return TransientFailure(reason, code=str(code), soft_bounce=True)
