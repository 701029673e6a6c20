"""A network round trip added to PostgreSQL: a TCP proxy on loopback that holds every chunk
it forwards for half the latency in each direction, so that a request and its answer cost
the whole latency more, as between two machines. It counts the round trips that cross it.

It runs in a process of its own (`python -m parcours.bench.latency`), so that its timers
never wait for the benchmarked code's interpreter lock, and its event loop waits with
`select`, whose timeout is in microseconds (epoll's is in milliseconds, which would round
half a millisecond up to a whole one). The benchmark speaks to it on its standard input
and output: it prints its port once listening, answers `count` with a JSON line of its
counts, and stops at the end of its input."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import selectors
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

# Past this many bytes held for one direction, the proxy stops reading that direction's
# sender until they are delivered (a COPY of many rows does not fill the memory).
_HIGH_WATER = 4 * 2**20


@dataclass(frozen=True)
class WireCounts:
    """What crossed the proxy since it started.

    A round trip is counted each time a client speaks after the server's last answer
    reached it (and at a connection's first message): a request and its answer, however
    many chunks each takes. Exact for requests that wait for their answer, as psycopg
    sends them outside pipeline mode; a client that keeps sending while answers arrive
    (pipeline mode with no latency added) is counted again at each answer it sees."""

    connections: int = 0
    round_trips: int = 0
    bytes_to_server: int = 0
    bytes_to_client: int = 0
    chunks: int = 0  # forwarded, both ways
    held_seconds: float = 0.0  # how long they were held, in all

    def __sub__(self, other: WireCounts) -> WireCounts:
        return WireCounts(
            self.connections - other.connections,
            self.round_trips - other.round_trips,
            self.bytes_to_server - other.bytes_to_server,
            self.bytes_to_client - other.bytes_to_client,
            self.chunks - other.chunks,
            self.held_seconds - other.held_seconds,
        )

    @property
    def mean_hold_ms(self) -> float | None:
        """How long a chunk was held on average (half the latency asked for, and what the
        proxy's timers and the machine's load add)."""
        return self.held_seconds / self.chunks * 1000 if self.chunks else None


class LatencyProxy:
    """The proxy's process, started on a free port of 127.0.0.1 in front of `target`."""

    def __init__(self, target_host: str, target_port: int, latency_ms: float) -> None:
        if latency_ms < 0:
            raise ValueError("the latency is a number of milliseconds, 0 or more")
        self.latency_ms = latency_ms
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "parcours.bench.latency",
                "--target",
                f"{target_host}:{target_port}",
                "--latency-ms",
                str(latency_ms),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.strip().isdigit():
            self.close()
            raise RuntimeError(f"the latency proxy did not start: {line!r}")
        self.port = int(line)

    def counts(self) -> WireCounts:
        """The counts so far: every answer a client has received has crossed the proxy,
        so what the client has seen is counted."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("count\n")
        self.process.stdin.flush()
        return WireCounts(**json.loads(self.process.stdout.readline()))

    def close(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            with suppress(BrokenPipeError):
                self.process.stdin.close()  # the end of its input: it stops
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def through_proxy(database_url: str, port: int) -> str:
    """`database_url` pointed at the proxy on 127.0.0.1:`port` instead of its server."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url).set(host="127.0.0.1", port=port)
    return url.render_as_string(hide_password=False)


def server_address(database_url: str) -> tuple[str, int]:
    """The host and port a PostgreSQL URL connects to (TCP only: a socket directory has no
    port to put a proxy in front of)."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if not url.drivername.startswith("postgres"):
        raise ValueError("a latency is added to PostgreSQL only (--postgres URL)")
    if not url.host or url.host.startswith("/") or "host" in url.query:
        raise ValueError("the PostgreSQL URL must name a TCP host, not a socket directory")
    return url.host, url.port or 5432


@contextmanager
def latency_added(database_url: str, latency_ms: float) -> Iterator[tuple[str, LatencyProxy]]:
    """A proxy in front of the PostgreSQL server of `database_url`, adding `latency_ms` to
    each round trip: the URL through it, and the proxy (for its counts)."""
    host, port = server_address(database_url)
    proxy = LatencyProxy(host, port, latency_ms)
    try:
        yield through_proxy(database_url, proxy.port), proxy
    finally:
        proxy.close()


# ---- the proxy's process -------------------------------------------------------------


class _Counts:
    def __init__(self) -> None:
        self.connections = 0
        self.round_trips = 0
        self.bytes_to_server = 0
        self.bytes_to_client = 0
        self.chunks = 0
        self.held_seconds = 0.0

    def as_json(self) -> str:
        return json.dumps(vars(self))


class _Direction:
    """Chunks on their way from one side to the other, each held until its time."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        delay: float,
        delivered: Callable[[int, float], None],
        source: Callable[[], asyncio.Transport | None],
    ) -> None:
        self.loop = loop
        self.delay = delay
        self.delivered = delivered  # called with each chunk's size and how long it was held
        self.source = source  # the sending side's transport, paused when too much is held
        self.target: asyncio.Transport | None = None
        self.held: deque[tuple[float, bytes]] = deque()
        self.held_bytes = 0
        self.timer: asyncio.TimerHandle | None = None
        self.paused = False

    def push(self, data: bytes) -> None:
        self.held.append((self.loop.time() + self.delay, data))
        self.held_bytes += len(data)
        if self.held_bytes > _HIGH_WATER and not self.paused:
            sender = self.source()
            if sender is not None:
                sender.pause_reading()
                self.paused = True
        if self.timer is None:
            self.flush()

    def flush(self) -> None:
        self.timer = None
        if self.target is None:
            return  # the server's side is still connecting: it flushes once connected
        now = self.loop.time()
        while self.held and self.held[0][0] <= now:
            due, data = self.held.popleft()
            self.held_bytes -= len(data)
            self.target.write(data)
            self.delivered(len(data), now - due + self.delay)
        if self.held:
            self.timer = self.loop.call_at(self.held[0][0], self.flush)
        if self.paused and self.held_bytes < _HIGH_WATER // 2:
            sender = self.source()
            if sender is not None:
                sender.resume_reading()
            self.paused = False


class _Side(asyncio.Protocol):
    """One of the two sockets of a proxied connection."""

    def __init__(
        self,
        on_data: Callable[[bytes], None],
        on_lost: Callable[[], None],
        on_made: Callable[[asyncio.Transport], None],
    ) -> None:
        self.on_data = on_data
        self.on_lost = on_lost
        self.on_made = on_made
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.on_made(transport)

    def data_received(self, data: bytes) -> None:
        self.on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost()


class _Connection:
    """A client's connection and the one the proxy opened to the server for it."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        target: tuple[str, int],
        delay: float,
        counts: _Counts,
    ) -> None:
        self.loop = loop
        self.counts = counts
        self.answered = True  # a connection's first message is a round trip of its own
        self.up = _Direction(loop, delay, self._to_server, lambda: self.client.transport)
        self.down = _Direction(loop, delay, self._to_client, lambda: self.server.transport)
        self.client = _Side(self._from_client, self.close, self._client_made)
        self.server = _Side(self._from_server, self.close, self._server_made)
        self.closed = False
        loop.create_task(self._connect(target))

    async def _connect(self, target: tuple[str, int]) -> None:
        try:
            await self.loop.create_connection(lambda: self.server, *target)
        except OSError:
            self.close()

    def _client_made(self, transport: asyncio.Transport) -> None:
        self.down.target = transport

    def _server_made(self, transport: asyncio.Transport) -> None:
        self.up.target = transport
        self.up.flush()  # what the client sent while the proxy connected

    def _from_client(self, data: bytes) -> None:
        if self.answered:
            self.counts.round_trips += 1
            self.answered = False
        self.up.push(data)

    def _from_server(self, data: bytes) -> None:
        self.down.push(data)

    def _to_server(self, size: int, held: float) -> None:
        self.counts.bytes_to_server += size
        self.counts.chunks += 1
        self.counts.held_seconds += held

    def _to_client(self, size: int, held: float) -> None:
        self.counts.bytes_to_client += size
        self.counts.chunks += 1
        self.counts.held_seconds += held
        self.answered = True

    def close(self) -> None:
        """Either side gone: what is held still goes after its delay, then both close."""
        if self.closed:
            return
        self.closed = True
        last = max((d.held[-1][0] for d in (self.up, self.down) if d.held), default=0.0)
        self.loop.call_at(max(last, self.loop.time()) + 0.001, self._close_both)

    def _close_both(self) -> None:
        for side in (self.client, self.server):
            if side.transport is not None:
                side.transport.close()


async def _serve(target: tuple[str, int], latency_ms: float) -> None:
    loop = asyncio.get_running_loop()
    counts = _Counts()
    delay = latency_ms / 2000  # half the round trip each way, in seconds

    def accept() -> _Side:
        counts.connections += 1
        return _Connection(loop, target, delay, counts).client

    server = await loop.create_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    stopped = loop.create_future()
    stdin = sys.stdin.fileno()
    pending = b""

    def read_command() -> None:
        nonlocal pending
        chunk = os.read(stdin, 4096)
        if not chunk:
            loop.remove_reader(stdin)
            stopped.set_result(None)
            return
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip() == b"count":
                sys.stdout.write(counts.as_json() + "\n")
                sys.stdout.flush()

    loop.add_reader(stdin, read_command)
    await stopped
    server.close()


def _tighten_timers() -> None:
    """Linux lets a sleeping process wake up to 50 µs late (its timer slack), to group
    wake-ups: the proxy asks for 1 ns, its holds being a fraction of a millisecond."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parcours.bench.latency", description=__doc__)
    parser.add_argument("--target", required=True, help="HOST:PORT of the PostgreSQL server")
    parser.add_argument("--latency-ms", type=float, required=True, help="added per round trip")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    _tighten_timers()
    # `select` waits to the microsecond; epoll's millisecond would double half a millisecond.
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    try:
        loop.run_until_complete(_serve((host, int(port)), args.latency_ms))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
