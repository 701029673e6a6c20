"""Real peers on loopback for the channel tests: an SMTP server (aiosmtpd) that checks the
DKIM signature of every message it receives with dkimpy against our test key."""

from __future__ import annotations

import asyncio
import base64
import email
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
    def __init__(self, peer: SmtpPeer) -> None:
        self.peer = peer
        self.port = free_port()
        self.controller = Controller(peer, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> RunningSmtp:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.peer.hold is not None:
            self.peer.hold.set()
        self.controller.stop()
