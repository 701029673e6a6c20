"""Email over SMTP: STARTTLS or TLS, authentication, connections reused, DKIM-signed
multipart mail with the one-click unsubscribe headers of RFC 8058 (docs/channels.md)."""

from __future__ import annotations

import contextlib
import hashlib
import smtplib
import ssl
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr, formatdate
from pathlib import Path
from typing import Any

import dkim

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


# Long headers (the unsubscribe link) are kept whole rather than folded into encoded words.
_POLICY = SMTP.clone(max_line_length=998)


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
            verify_tls=bool(config.get("verify_tls", True)),
        )
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
        mail = EmailMessage(policy=_POLICY)
        mail["From"] = formataddr((self.from_name, self.from_address))
        mail["To"] = message.address
        mail["Subject"] = content["subject"]
        mail["Date"] = formatdate(now_s, usegmt=True)
        mail["Message-ID"] = message_id_for(message.key, self.domain)
        if self.reply_to:
            mail["Reply-To"] = self.reply_to.replace("{id}", str(message.outbox_id))
        unsubscribe = message.links.get("unsubscribe")
        if unsubscribe:
            mail["List-Unsubscribe"] = f"<{unsubscribe}>"
            mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        mail["X-Parcours-Message"] = str(message.outbox_id)
        mail.set_content(content.get("text") or "", charset="utf-8")
        if content.get("html"):
            mail.add_alternative(content["html"], subtype="html", charset="utf-8")
        raw = mail.as_bytes(policy=_POLICY)
        if self.dkim_key is not None and self.dkim_selector is not None:
            present = {h for h in SIGNED_HEADERS if mail.get(h.decode()) is not None}
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
