"""The writer in a process of its own, for `parcours serve` on SQLite.

Python runs one thread at a time per process: parsing requests and writing events shared
one core. Here the HTTP process parses and validates, and hands each submission over a
socket pair to a child process that owns the `Writer` (its group commit, its hooks). The
child answers once the submission is committed, and only then does the HTTP process
acknowledge the request: durability is unchanged (docs/core.md).

The child also runs the queue worker (`run_worker`): SQLite has one writer at a time, and
the worker writes in every batch. In the HTTP process, its transactions waited for that
process's interpreter lock while holding SQLite's write lock, so the writer waited too;
in the child, the writer's commits wake it directly and the two take the write lock in
turn, in the same process (docs/core.md, "The writer process").

Frames are a 4-byte length then the body: `m` or `j` (msgpack, or JSON for the rare event
holding an integer msgpack cannot carry) and `[number, events]`; the answer is
`[number, stored, duplicates, error]`. A frame `w` alone asks the child to wake its worker
(the HTTP process scheduled a job) and has no answer. The child stops when the socket
closes: it commits what it has received, answers what it can, stops its worker after its
batch, and exits; a child that dies is replaced, the submissions in flight failing with
`WriterClosed` (the client retries; message ids make a retry harmless). A child that exits
cleanly was told to stop (SIGTERM) and is not replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import msgspec

from parcours.customers.projection import event_keys
from parcours.ingest.writer import Writer, WriterClosed
from parcours.log import AppendResult, Event, Hook

if TYPE_CHECKING:
    from parcours.runtime.settings import Settings

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("!I")
_BUFFER = 4 * 1024 * 1024
_START_TIMEOUT = 120.0
_READY = b"ready"
_WAKE = b"w"

_encode_msgpack = msgspec.msgpack.Encoder().encode
_encode_json = msgspec.json.Encoder().encode
_decode_submission = {
    ord("m"): msgspec.msgpack.Decoder(tuple[int, list[Event]]).decode,
    ord("j"): msgspec.json.Decoder(tuple[int, list[Event]]).decode,
}
_decode_answer = msgspec.msgpack.Decoder(tuple[int, int, int, str | None]).decode


def available() -> bool:
    """A child process fed through an inherited socket needs POSIX."""
    return os.name == "posix"


class RemoteWriter:
    """The `Writer` interface, backed by a writer child process, which also runs the queue
    worker when `run_worker` is set.

    `hooks` are the hooks of this process: they run in the transactions this process makes
    itself; the child installs the same ones for what it commits.
    """

    def __init__(self, settings: Settings, *, run_worker: bool = False) -> None:
        self._settings = settings
        self.run_worker = run_worker
        self.hooks: list[Hook] = []
        self._lock = threading.Lock()  # guards _pending, _socket, _closed
        self._send_lock = threading.Lock()
        self._pending: dict[int, Future[AppendResult]] = {}
        self._numbers = itertools.count()
        self._closed = False
        self._socket: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id, while it runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def add_hook(self, hook: Hook) -> None:
        self.hooks.append(hook)

    def start(self) -> None:
        """Start the child and wait until it is ready to write."""
        with self._lock:
            if self._reader is not None or self._closed:
                return
            self._socket = self._spawn()
            self._reader = threading.Thread(
                target=self._supervise, name="parcours-writer-link", daemon=True
            )
        self._reader.start()

    def submit(self, events: list[Event]) -> Future[AppendResult]:
        future: Future[AppendResult] = Future()
        if not events:
            future.set_result(AppendResult(0, 0))
            return future
        region = self._settings.default_region
        for event in events:  # work this process can take off the writer's hands
            event_keys(event, region)
        number = next(self._numbers)
        frame = _frame(number, events)
        with self._lock:
            connection = self._socket
            if self._closed or connection is None:
                future.set_exception(WriterClosed("the writer is not running; retry"))
                return future
            self._pending[number] = future
        try:
            with self._send_lock:
                connection.sendall(frame)
        except OSError:
            self._fail(number, "the writer process stopped; retry")
        return future

    async def append(self, events: list[Event]) -> AppendResult:
        return await asyncio.wrap_future(self.submit(events))

    def append_sync(self, events: list[Event]) -> AppendResult:
        return self.submit(events).result()

    def wake_worker(self) -> None:
        """Tell the child's worker that this process scheduled a job (without the wake-up,
        the worker finds it at its next poll). Such jobs are few (admin calls, callbacks):
        the child is woken whenever they are due."""
        with self._lock:
            connection = None if self._closed else self._socket
        if connection is None:
            return
        with contextlib.suppress(OSError), self._send_lock:
            connection.sendall(_LENGTH.pack(len(_WAKE)) + _WAKE)

    def close(self, timeout: float = 30.0) -> None:
        """Wait for the answers to what was submitted, then stop the child (it commits what
        it holds first)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending:
                    break
            time.sleep(0.01)
        connection, process = self._socket, self._process
        if connection is not None:
            with contextlib.suppress(OSError):  # end of input: the child finishes
                connection.shutdown(socket.SHUT_WR)
        if process is not None:
            try:
                process.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("the writer process did not stop in time; killing it")
                process.kill()
                process.wait()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(5)
        with self._lock:
            failed = list(self._pending)
        for number in failed:
            self._fail(number, "the writer stopped before answering")

    # ---- the child and its answers ----------------------------------------------------

    def _spawn(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for side in (ours, theirs):
            side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
            side.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
        command = [
            sys.executable,
            "-c",
            "from parcours.ingest.writer_process import child_main; child_main()",
            str(theirs.fileno()),
            *(["--worker"] if self.run_worker else []),
        ]
        process = subprocess.Popen(command, stdin=subprocess.PIPE, pass_fds=[theirs.fileno()])
        theirs.close()
        assert process.stdin is not None
        process.stdin.write(pickle.dumps(self._settings))
        process.stdin.close()
        ours.settimeout(_START_TIMEOUT)
        try:
            greeting = ours.recv(len(_READY))  # the child's first words, before any answer
        except OSError:
            greeting = b""
        ours.settimeout(None)
        if greeting != _READY:
            ours.close()
            process.kill()
            process.wait()
            raise RuntimeError("the writer process did not start (see its error above)")
        self._process = process
        return ours

    def _connected(self, connection: socket.socket) -> None:
        with self._lock:
            self._socket = connection

    def _supervise(self) -> None:
        """Read answers; when the child dies (not asked to), fail what it held and start
        another one."""
        while True:
            connection = self._socket
            assert connection is not None
            self._read_answers(connection)
            connection.close()
            with self._lock:
                self._socket = None
                failed = list(self._pending)
                stopping = self._closed
            for number in failed:
                self._fail(number, "the writer process stopped; retry")
            if stopping:
                return
            process = self._process
            code = process.wait() if process is not None else None
            if code == 0:  # it was told to stop (SIGTERM from a service manager): so be it
                log.info("the writer process stopped")
                return
            log.error("the writer process stopped (exit code %s); starting another", code)
            while True:
                with self._lock:
                    if self._closed:
                        return
                try:
                    replacement = self._spawn()
                    break
                except Exception:
                    log.exception("the writer process failed to start; trying again")
                    time.sleep(1.0)
            self._connected(replacement)

    def _read_answers(self, connection: socket.socket) -> None:
        reader = connection.makefile("rb", buffering=_BUFFER)
        try:
            while True:
                try:
                    frame = _read_frame(reader)
                except (OSError, ConnectionError):
                    return
                number, stored, duplicates, error = _decode_answer(frame)
                with self._lock:
                    entry = self._pending.pop(number, None)
                if entry is None:
                    continue
                future = entry
                if error is not None:
                    future.set_exception(RuntimeError(error))
                    continue
                future.set_result(AppendResult(stored, duplicates))
        finally:
            reader.close()

    def _fail(self, number: int, message: str) -> None:
        with self._lock:
            entry = self._pending.pop(number, None)
        if entry is not None and not entry.done():
            entry.set_exception(WriterClosed(message))


def _frame(number: int, events: list[Event]) -> bytes:
    try:
        body = b"m" + _encode_msgpack((number, events))
    except OverflowError:  # an integer beyond 64 bits: JSON carries any integer
        body = b"j" + _encode_json((number, events))
    return _LENGTH.pack(len(body)) + body


def _read_frame(reader: Any) -> bytes:
    """One frame from a buffered reader over the socket; ConnectionError at its end."""
    head = reader.read(_LENGTH.size)
    if len(head) == _LENGTH.size:
        (length,) = _LENGTH.unpack(head)
        body: bytes = reader.read(length)
        if len(body) == length:
            return body
    raise ConnectionError("the other side closed the connection")


# ---- the child ------------------------------------------------------------------------


def child_main() -> None:
    """Entry point of the writer process: settings on stdin, the socket's fd in argv, then
    `--worker` when it runs the queue worker too."""
    from parcours.cli import tune_garbage_collector
    from parcours.runtime.logs import configure_logging
    from parcours.services import Services

    # Ctrl-C reaches the whole process group: the parent decides when the writer stops
    # (it closes the socket once its requests are answered).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    connection = socket.socket(fileno=int(sys.argv[1]))
    # SIGTERM (a service manager stopping the group): stop reading, commit, answer, exit.
    signal.signal(signal.SIGTERM, lambda *_: _stop_reading(connection))
    settings: Settings = pickle.loads(sys.stdin.buffer.read())
    # The server's format (JSON lines when not on a terminal) and its redaction: one record
    # per error, traceback inside, never plain text in the middle of the JSON stream.
    configure_logging(settings.log_level, settings.log_format, settings.secrets())
    services = Services.open(settings, run_migrations=False)
    assert isinstance(services.writer, Writer)
    tune_garbage_collector()
    if "--worker" in sys.argv[2:]:
        services.start_worker()  # woken by the writer's commits (Services.open)
    try:
        serve_submissions(connection, services.writer, services.worker.wake.set)
    finally:
        services.close()


def _stop_reading(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RD)


def serve_submissions(
    connection: socket.socket, writer: Writer, wake: Callable[[], None] = lambda: None
) -> None:
    """Feed the writer from the socket until it closes; answer each submission once
    committed; `wake` the worker when asked to. Returns when everything received has been
    committed and answered."""
    send_lock = threading.Lock()

    def send(data: bytes) -> None:
        with contextlib.suppress(OSError), send_lock:  # the parent gone: committed anyway
            connection.sendall(data)

    send(_READY)
    _serve_inline(_Frames(connection), send, writer, wake)
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    connection.close()


def _serve_inline(
    frames: _Frames, send: Callable[[bytes], None], writer: Writer, wake: Callable[[], None]
) -> None:
    """One thread reads, decodes, commits and answers (SQLite has one writer anyway, and
    `serve` uses the writer process on SQLite only): no second thread to take Python's
    lock from the writer at every database call. What arrives during a commit waits in
    the socket and goes into the next group."""
    limit = writer.batch_events
    while True:
        received = frames.next(block=True)
        if received is None:
            return
        numbers: list[int] = []
        batches: list[list[Event]] = []
        count = 0
        while received is not None:
            if received[0] == _WAKE[0]:
                wake()
                received = frames.next(block=False)
                continue
            number, events = _decode(received)
            numbers.append(number)
            batches.append(events)
            count += len(events)
            if count >= limit:
                break
            received = frames.next(block=False)
        if not batches:
            continue
        answers = [
            _answer_of(number, future)
            for number, future in zip(numbers, writer.commit_now(batches), strict=True)
        ]
        send(b"".join(answers))


def _decode(frame: bytes) -> tuple[int, list[Event]]:
    return _decode_submission[frame[0]](memoryview(frame)[1:])


def _answer(number: int, stored: int, duplicates: int, error: str | None = None) -> bytes:
    body = _encode_msgpack((number, stored, duplicates, error))
    return _LENGTH.pack(len(body)) + body


def _answer_of(number: int, future: Future[AppendResult]) -> bytes:
    error = future.exception()
    if error is not None:
        return _answer(number, 0, 0, f"{type(error).__name__}: {error}")
    result = future.result()
    return _answer(number, result.stored, result.duplicates)


class _Frames:
    """Frames off a socket; `next(block=False)` returns None when no whole frame is there
    yet, `next(block=True)` waits, and returns None at the end of input.

    The socket is read into one buffer that is kept and reused (`recv_into`); each frame
    is copied out of it once. `recv(4 MB)` allocated and freed 4 MB at every read, and the
    frame was copied twice more."""

    _SPARE = 256 * 1024  # room to read into; the buffer grows for a frame larger than it

    def __init__(self, connection: socket.socket) -> None:
        self._connection = connection
        self._buffer = bytearray(_BUFFER)
        self._start = 0  # the unread bytes are _buffer[_start:_end]
        self._end = 0
        self._ended = False

    def next(self, *, block: bool) -> bytes | None:
        while True:
            frame = self._take()
            if frame is not None or self._ended:
                return frame
            if not self._fill(block):
                return None

    def _take(self) -> bytes | None:
        available = self._end - self._start
        if available < _LENGTH.size:
            return None
        (length,) = _LENGTH.unpack_from(self._buffer, self._start)
        if available < _LENGTH.size + length:
            self._reserve(_LENGTH.size + length - available)  # the rest of this frame
            return None
        begin = self._start + _LENGTH.size
        with memoryview(self._buffer) as view:
            frame = bytes(view[begin : begin + length])
        self._start = begin + length
        if self._start == self._end:
            self._start = self._end = 0
        return frame

    def _reserve(self, size: int) -> None:
        """Room for at least `size` more bytes after the unread ones."""
        if len(self._buffer) - self._end >= size:
            return
        unread = self._end - self._start
        self._buffer[:unread] = self._buffer[self._start : self._end]
        self._start, self._end = 0, unread
        missing = size - (len(self._buffer) - unread)
        if missing > 0:
            self._buffer.extend(bytes(missing))

    def _fill(self, block: bool) -> bool:
        """Read what is there (waiting for something if `block`); False if nothing came."""
        self._reserve(self._SPARE)
        flags = 0 if block else socket.MSG_DONTWAIT
        try:
            with memoryview(self._buffer) as view, view[self._end :] as free:
                received = self._connection.recv_into(free, 0, flags)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            received = 0
        if not received:
            self._ended = True
            return False
        self._end += received
        return True
