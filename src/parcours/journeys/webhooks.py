"""Webhook steps: a signed POST to the brand's URL, retried with backoff, at least once.

The step enqueues a delivery job in the run's transaction; the job makes the call after
its own commit. A call that succeeded but whose result was lost is made again, so
receivers deduplicate on the `Parcours-Delivery` header, the same for every attempt.

Outbound webhooks are signed with keys made for them alone (`[webhooks.secrets]`), in a
scheme of their own (`Parcours-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<body>">`) that no inbound check of Parcours or of its providers accepts, and the
step's `body` travels under `data` in a fixed envelope: a signed delivery can never be
replayed as a Shopify, Meta or Segment call. The destination must be `https`, and it must
resolve to public addresses only, checked after DNS resolution and on every redirect,
unless the operator allows the host by name (`[webhooks] allow_hosts`). docs/security.md
has the threat model.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
from sqlalchemy import Connection

from parcours.runtime.clock import iso
from parcours.runtime.documents import JsonObject
from parcours.runtime.queue import CallAfterCommit, Job, Outcome, Worker, enqueue

log = logging.getLogger(__name__)

DELIVER = "journeys.webhook"
SIGNATURE_HEADER = "Parcours-Signature"
DELIVERY_HEADER = "Parcours-Delivery"
TOLERANCE_SECONDS = 300  # what receivers should accept between `t` and their own clock
MAX_REDIRECTS = 3
RESPONSE_BYTES = 16_384  # what is read of an answer at most (only its status matters)
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
TOTAL_SECONDS = 30.0  # for the whole call, redirects included
LEASE_MS = 5 * 60_000

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class WebhookSettings:
    """What the operator allows: the signing keys by name, and the hosts that may be
    reached over plain http or at a private address (an internal CRM, a test receiver)."""

    secrets: Mapping[str, str]
    allow_hosts: frozenset[str]
    ca_file: str | None = None  # certificates trusted besides the system's (a private CA)

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> WebhookSettings:
        """From the `[webhooks]` table of the settings (checked when they were loaded)."""
        return cls(
            secrets=dict(table.get("secrets", {})),
            allow_hosts=frozenset(host.lower() for host in table.get("allow_hosts", [])),
            ca_file=table.get("ca_file"),
        )

    def tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.ca_file:
            context.load_verify_locations(cafile=self.ca_file)
        return context


class UnsafeDestination(Exception):
    """The URL may not be called: the message says which rule it breaks."""


def schedule_delivery(
    conn: Connection,
    *,
    delivery_id: str,
    url: str,
    envelope: JsonObject,
    secret: str | None,
    retries: int,
    now: int,
    customer_id: int,
) -> None:
    """Enqueue the call. `envelope` is the whole document sent; `secret` names a key of
    `[webhooks.secrets]` (never the key itself, which stays out of the database)."""
    enqueue(
        conn,
        DELIVER,
        {"delivery_id": delivery_id, "url": url, "body": envelope, "secret": secret},
        run_at=now,
        now=now,
        queue="journeys",
        unique_key=f"webhook:{delivery_id}",
        on_conflict="ignore",
        customer_id=customer_id,
        max_attempts=max(1, retries + 1),
    )


def envelope(
    *,
    delivery_id: str,
    now: int,
    journey_id: str,
    run_id: int,
    step: str,
    customer_id: str,
    entry_event: str | None,
    data: JsonObject,
) -> JsonObject:
    """The document a receiver gets: Parcours' fields at the top, the step's body under
    `data`, so that nothing a journey author writes can shape what is signed."""
    return {
        "id": delivery_id,
        "type": "journey.webhook",
        "created_at": iso(now),
        "journey_id": journey_id,
        "run_id": run_id,
        "step": step,
        "customer_id": customer_id,
        "entry_event": entry_event,
        "data": data,
    }


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The `Parcours-Signature` value for this body sent at `timestamp` (unix seconds)."""
    digest = hmac.new(
        secret.encode("utf-8"), str(timestamp).encode("ascii") + b"." + body, hashlib.sha256
    ).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(
    secret: str, header: str, body: bytes, now: int, tolerance: int = TOLERANCE_SECONDS
) -> bool:
    """What a receiver does: the signature matches this body and `t` is within
    `tolerance` seconds of `now` (unix seconds), which bounds a replay."""
    fields = dict(part.partition("=")[::2] for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields.get("t", ""))
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).partition(",v1=")[2]
    return hmac.compare_digest(expected, fields.get("v1", ""))


_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the IPv4 address in the last 32 bits
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: a network's own translator
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d


def public_address(address: str) -> bool:
    """True for an address on the public internet: never loopback, private, link-local
    (cloud metadata), shared, multicast, reserved or unspecified, and an IPv4 address
    carried inside IPv6 (mapped, 6to4, NAT64, IPv4-compatible) is judged as itself."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _LOCAL_NAT64:
            return False
        carried = ip.ipv4_mapped or ip.sixtofour
        if carried is None and (ip in _NAT64 or ip in _IPV4_COMPATIBLE):
            carried = ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
        if carried is not None:
            return carried.is_global and not carried.is_multicast
    return ip.is_global and not ip.is_multicast


def resolve(url: httpx.URL, allow_hosts: frozenset[str]) -> str:
    """The address to connect to for this URL, or UnsafeDestination saying why not."""
    if url.scheme not in ("https", "http"):
        raise UnsafeDestination(f"{url}: only https URLs can be called")
    host = url.host.lower()
    allowed = host in allow_hosts
    if url.scheme == "http" and not allowed:
        raise UnsafeDestination(
            f"{url}: plain http is refused; use https, or allow the host {host} by name "
            "in [webhooks] allow_hosts"
        )
    try:
        found = socket.getaddrinfo(host, url.port or 443, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UnsafeDestination(f"{url}: the host {host} does not resolve ({exc})") from None
    addresses = [str(info[4][0]) for info in found]
    if not allowed:
        for address in addresses:
            if not public_address(address):
                raise UnsafeDestination(
                    f"{url}: {host} resolves to {address}, which is not a public address; "
                    "allow the host by name in [webhooks] allow_hosts if it is meant"
                )
    return addresses[0]


class WebhookSender:
    """The delivery job's handler: a call made after the job's transaction commits
    (`CallAfterCommit`: put back first for the end of a lease naming this worker, so a
    crash during the call means one more call with the same delivery id, never none, and
    a dead worker's call is made again as soon as its death is seen)."""

    def __init__(self, worker: Worker, settings: WebhookSettings) -> None:
        self.clock = worker.clock
        self.settings = settings
        CallAfterCommit(worker, DELIVER, self._request, self._call, lease_ms=LEASE_MS)

    def _request(self, conn: Connection, job: Job) -> dict[str, Any]:
        return dict(job.payload)

    def _call(self, payload: dict[str, Any]) -> Outcome:
        """Make the call: done when the receiver answered 2xx; else what went wrong, not
        retried when trying again is pointless (a refused destination, a missing key)."""
        body = _encode(payload["body"])
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Parcours-Webhook/2",
            DELIVERY_HEADER: payload["delivery_id"],
        }
        name = payload.get("secret")
        if name:
            secret = self.settings.secrets.get(name)
            if secret is None:
                return Outcome(f"no webhook secret named {name!r} in [webhooks.secrets]", False)
            headers[SIGNATURE_HEADER] = sign(secret, body, self.clock.now_ms() // 1000)
        try:
            status = _post_guarded(httpx.URL(payload["url"]), body, headers, self.settings)
        except UnsafeDestination as exc:
            return Outcome(str(exc), retry=False)
        except httpx.HTTPError as exc:
            return Outcome(f"{payload['url']}: {exc}")
        if not 200 <= status < 300:
            return Outcome(f"{payload['url']} answered {status}")
        return Outcome()


def _post_guarded(
    url: httpx.URL, body: bytes, headers: dict[str, str], settings: WebhookSettings
) -> int:
    """POST to the address that was checked (not to a second DNS answer: the connection
    goes to that address, with the host name in `Host` and in TLS's SNI, against which the
    certificate is verified), following only 307 and 308 (which keep the method and body)
    and checking each new destination. No proxy from the environment is used."""
    with httpx.Client(
        timeout=TIMEOUT, follow_redirects=False, trust_env=False, verify=settings.tls()
    ) as client:
        # Timeouts count per read: a receiver dripping its answer is cut at a total too.
        out_of_time = threading.Event()

        def cut() -> None:
            out_of_time.set()
            client.close()

        watchdog = threading.Timer(TOTAL_SECONDS, cut)
        watchdog.daemon = True
        watchdog.start()
        try:
            return _follow(client, url, body, headers, settings)
        except httpx.HTTPError:
            if out_of_time.is_set():
                raise httpx.ReadTimeout(f"no whole answer within {TOTAL_SECONDS:g} s") from None
            raise
        finally:
            watchdog.cancel()


def _follow(
    client: httpx.Client,
    url: httpx.URL,
    body: bytes,
    headers: dict[str, str],
    settings: WebhookSettings,
) -> int:
    for _ in range(MAX_REDIRECTS + 1):
        address = resolve(url, settings.allow_hosts)
        host_header = url.host if url.port is None else f"{url.host}:{url.port}"
        request = client.build_request(
            "POST",
            url.copy_with(host=address),
            content=body,
            headers={**headers, "Host": host_header},
            extensions={"sni_hostname": url.host},
        )
        response = client.send(request, stream=True)
        try:
            _read_at_most(response, RESPONSE_BYTES)
        finally:
            response.close()
        location = response.headers.get("location")
        if response.status_code not in (307, 308) or not location:
            return response.status_code
        url = url.join(location)
    raise UnsafeDestination(f"{url}: more than {MAX_REDIRECTS} redirects")


def _read_at_most(response: httpx.Response, limit: int) -> None:
    read = 0
    for chunk in response.iter_raw():
        read += len(chunk)
        if read >= limit:
            return
