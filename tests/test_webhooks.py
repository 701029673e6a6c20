"""Webhook steps: a signed POST to a real HTTP server on loopback, retried until it works,
and never to a host the operator did not allow."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import text

from parcours.journeys import webhooks
from parcours.journeys.definition import JourneyError, load_journey
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.settings import Settings, SettingsError
from parcours.services import Services
from tests.test_journeys_engine import opt_in, publish, track

SECRET = "whsec-test-0123456789"


class Receiver:
    """A brand's endpoint: fails the first `failures` calls, then answers `status`
    (with `location` for a redirect)."""

    def __init__(
        self,
        failures: int = 0,
        status: int = 204,
        location: str | None = None,
        tls: ssl.SSLContext | None = None,
        body_bytes: int = 0,
    ) -> None:
        self.failures = failures
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.cut_off = False
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append((dict(self.headers), body))
                failing = len(receiver.calls) <= receiver.failures
                self.send_response(500 if failing else status)
                if location and not failing:
                    self.send_header("Location", location)
                self.send_header("Content-Length", str(body_bytes))
                self.end_headers()
                try:
                    for _ in range(body_bytes // 65_536):
                        self.wfile.write(b"x" * 65_536)
                except OSError:
                    receiver.cut_off = True

            def log_message(self, *_: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(failures=1)
    yield server
    server.close()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Loopback receivers are allowed by name, as an operator would allow an internal CRM."""
    return settings.with_overrides(
        webhooks={"secrets": {"crm": SECRET}, "allow_hosts": ["127.0.0.1"]}
    )


def journey(url: str, extra: str = "") -> str:
    return f"""\
id: notify-crm
name: Notify the CRM
entry: {{event: Order Completed}}
steps:
  - webhook: {{url: "{url}"{extra}}}
"""


def jobs(services: Services) -> int:
    """Webhook deliveries still to be made (or retried)."""
    with services.db.read() as conn:
        query = text("SELECT count(*) FROM jobs WHERE kind = :kind")
        return int(conn.execute(query, {"kind": webhooks.DELIVER}).scalar_one())


def test_a_webhook_step_posts_a_signed_envelope_and_retries(
    services: Services, clock: SimulatedClock, receiver: Receiver
) -> None:
    publish(services, journey(receiver.url, ", secret: crm, body: {source: parcours}"))
    opt_in(services, "ola")
    track(services, "ola", "Order Completed", order_id="o-1")
    services.worker.run_due()
    assert len(receiver.calls) == 1  # answered 500: to be retried
    clock.advance_ms(5_000)
    services.worker.run_due()
    assert len(receiver.calls) == 2
    (first_headers, _), (headers, body) = receiver.calls
    sent_at = clock.now_ms() // 1000
    signature = headers["Parcours-Signature"]
    expected = hmac.new(SECRET.encode(), f"{sent_at}.".encode() + body, hashlib.sha256).hexdigest()
    assert signature == f"t={sent_at},v1={expected}"
    assert webhooks.verify(SECRET, signature, body, now=sent_at + 60)
    assert not webhooks.verify(SECRET, signature, body, now=sent_at + 301)  # too old: a replay
    assert not webhooks.verify(SECRET, signature, body + b" ", now=sent_at)
    # No header of a form that an inbound check (Meta's X-Hub-Signature-256) would read.
    assert not any("hub" in name.lower() for name in headers)
    assert headers["Parcours-Delivery"] == first_headers["Parcours-Delivery"]
    document = json.loads(body)
    assert document["type"] == "journey.webhook"
    assert document["journey_id"] == "notify-crm" and document["entry_event"] == "Order Completed"
    assert document["data"] == {"source": "parcours"}  # the author's body, under data only
    assert "source" not in document
    assert jobs(services) == 0


def test_a_webhook_is_given_up_after_its_retries(services: Services, clock: SimulatedClock) -> None:
    receiver = Receiver(failures=100)
    try:
        publish(services, journey(receiver.url, ", retries: 2"))
        opt_in(services, "ola")
        track(services, "ola", "Order Completed", order_id="o-1")
        for _ in range(10):
            clock.advance_ms(60_000)
            services.worker.run_due()
        assert len(receiver.calls) == 3  # the first call and two retries
        assert "Parcours-Signature" not in receiver.calls[0][0]  # no secret named: unsigned
        assert jobs(services) == 0
    finally:
        receiver.close()


@pytest.mark.parametrize(
    ("host_of", "refusal"),
    [
        (lambda port: f"http://127.0.0.1:{port}/hook", "plain http is refused"),
        (lambda port: f"https://localhost:{port}/hook", "not a public address"),
        (lambda port: f"https://[::ffff:127.0.0.1]:{port}/hook", "not a public address"),
    ],
)
def test_a_webhook_to_an_internal_host_is_refused_and_not_retried(
    services: Services,
    clock: SimulatedClock,
    caplog: pytest.LogCaptureFixture,
    host_of: Any,
    refusal: str,
) -> None:
    webhooks.WebhookSender(services.worker, webhooks.WebhookSettings({}, frozenset()))
    receiver = Receiver()
    try:
        publish(services, journey(host_of(receiver.port)))
        opt_in(services, "ola")
        track(services, "ola", "Order Completed", order_id="o-1")
        services.worker.run_due()
        clock.advance_ms(3_600_000)
        services.worker.run_due()
        assert receiver.calls == []
        assert jobs(services) == 0  # given up at once: the destination will not change
        assert refusal in caplog.text
    finally:
        receiver.close()


def test_a_redirect_to_a_host_not_allowed_is_not_followed(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    inside = Receiver()
    redirecting = Receiver(status=307, location=f"http://localhost:{inside.port}/admin")
    try:
        publish(services, journey(redirecting.url))
        opt_in(services, "ola")
        track(services, "ola", "Order Completed", order_id="o-1")
        services.worker.run_due()
        assert len(redirecting.calls) == 1
        assert inside.calls == []
        assert "plain http is refused" in caplog.text and "localhost" in caplog.text
    finally:
        inside.close()
        redirecting.close()


def test_a_permanent_redirect_to_an_allowed_host_is_followed_with_the_body(
    services: Services,
) -> None:
    final = Receiver()
    moved = Receiver(status=308, location=f"{final.url}?moved=1")
    try:
        publish(services, journey(moved.url, ", body: {n: 1}"))
        opt_in(services, "ola")
        track(services, "ola", "Order Completed", order_id="o-1")
        services.worker.run_due()
        assert len(moved.calls) == 1 and len(final.calls) == 1
        assert final.calls[0][1] == moved.calls[0][1]
        assert json.loads(final.calls[0][1])["data"] == {"n": 1}
        assert jobs(services) == 0
    finally:
        final.close()
        moved.close()


def test_an_answer_is_read_no_further_than_the_cap(services: Services) -> None:
    chatty = Receiver(body_bytes=256 * 1024 * 1024)
    try:
        publish(services, journey(chatty.url))
        opt_in(services, "ola")
        track(services, "ola", "Order Completed", order_id="o-1")
        services.worker.run_due()
        assert len(chatty.calls) == 1
        assert jobs(services) == 0  # a 2xx: delivered
        for _ in range(100):  # the server notices the closed connection when it next writes
            if chatty.cut_off:
                break
            threading.Event().wait(0.05)
        assert chatty.cut_off
    finally:
        chatty.close()


def test_an_answer_dripped_slowly_is_cut_at_the_total_time_and_tried_again(
    services: Services,
    clock: SimulatedClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each read has its timeout; a receiver sending a byte at a time within it would hold
    the worker for hours without a limit on the whole call."""
    monkeypatch.setattr(webhooks, "TOTAL_SECONDS", 1.0)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def drip() -> None:
        connection, _ = listener.accept()
        connection.recv(65_536)
        try:
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"z" * 1000:
                if stop.wait(0.1):
                    break
                connection.send(bytes([byte]))
        except OSError:
            pass
        connection.close()

    threading.Thread(target=drip, daemon=True).start()
    try:
        publish(services, journey(f"http://127.0.0.1:{port}/hook"))
        opt_in(services, "ola")
        track(services, "ola", "Order Completed", order_id="o-1")
        services.worker.run_due()
        assert "no whole answer within 1 s" in caplog.text
        assert jobs(services) == 1  # to be tried again
    finally:
        stop.set()
        listener.close()


def test_https_goes_to_the_checked_address_and_verifies_the_host_name(
    services: Services, clock: SimulatedClock, tmp_path: Path
) -> None:
    """The connection is made to the address that was checked, with the host name as SNI
    and in Host: the certificate for `localhost` is verified against that name."""
    cert_file, key_file = _self_signed("localhost", tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert_file, key_file)
    receiver = Receiver(tls=server_tls)
    settings = webhooks.WebhookSettings({}, frozenset({"localhost"}), ca_file=str(cert_file))
    webhooks.WebhookSender(services.worker, settings)
    try:
        publish(services, journey(f"https://localhost:{receiver.port}/hook"))
        opt_in(services, "ola")
        track(services, "ola", "Order Completed", order_id="o-1")
        services.worker.run_due()
        assert len(receiver.calls) == 1
        assert receiver.calls[0][0]["Host"] == f"localhost:{receiver.port}"
        assert jobs(services) == 0
    finally:
        receiver.close()


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # shared address space
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("fd00:ec2::254", False),  # cloud metadata over IPv6
        ("fe80::1%eth0", False),
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("64:ff9b::808:808", True),  # NAT64 of 8.8.8.8
        ("64:ff9b:1::808:808", False),  # a network's own NAT64: inside by definition
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("2002:808:808::1", True),  # 6to4 of 8.8.8.8
        ("::7f00:1", False),  # IPv4-compatible 127.0.0.1
        ("::a00:1", False),  # IPv4-compatible 10.0.0.1
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
    ],
)
def test_only_public_addresses_may_be_called(address: str, public: bool) -> None:
    assert webhooks.public_address(address) is public


def test_a_webhook_key_must_be_its_own(settings: Settings) -> None:
    shared = "shared-secret-0123456789"
    with_shopify = settings.with_overrides(shopify_webhook_secret=shared)
    with pytest.raises(SettingsError, match=r"webhooks.secrets.crm is also a key"):
        with_shopify.with_overrides(webhooks={"secrets": {"crm": shared}})
    with pytest.raises(SettingsError, match="at least 16 characters"):
        settings.with_overrides(webhooks={"secrets": {"crm": "short"}})
    with pytest.raises(SettingsError, match="unknown keys"):
        settings.with_overrides(webhooks={"secret_env": "PARCOURS_SHOPIFY_WEBHOOK_SECRET"})


def test_a_journey_names_a_webhook_key_never_an_environment_variable() -> None:
    with pytest.raises(JourneyError, match="secret_env"):
        load_journey(journey("https://crm.example.com/hook", ", secret_env: SHOPIFY_SECRET"))
    with pytest.raises(JourneyError, match=r"\[webhooks.secrets\]"):
        load_journey(journey("https://crm.example.com/hook", ", secret: SHOPIFY-SECRET"))
    with pytest.raises(JourneyError, match="https://"):
        load_journey(journey("file:///etc/passwd"))
    assert load_journey(journey("https://crm.example.com/hook", ", secret: crm"))


def test_a_key_name_not_configured_is_given_up_at_once(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = Receiver()
    try:
        publish(services, journey(receiver.url, ", secret: other"))
        opt_in(services, "ola")
        track(services, "ola", "Order Completed", order_id="o-1")
        services.worker.run_due()
        assert receiver.calls == []
        assert jobs(services) == 0
        assert "no webhook secret named 'other'" in caplog.text
    finally:
        receiver.close()


def _self_signed(host: str, folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file
