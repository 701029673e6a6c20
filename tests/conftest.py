"""One fixture runs each test on SQLite and on PostgreSQL.

PostgreSQL tests need PARCOURS_TEST_POSTGRES_URL (for example
postgresql://postgres@127.0.0.1:5432/postgres); CI sets it and makes them mandatory. Without
it they are skipped and say why. Each test session (each pytest-xdist worker) gets its own
fresh database there.

The suite runs on every core (pytest-xdist, `addopts` in pyproject.toml). Tests that start or
kill OS processes are marked `processes` and run one after another on one worker, so that
they never compete with each other for the machine's cores. A test waits for a condition
with `wait_until`, never with a sleep.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec
import psutil
import psycopg
import pytest
import uvicorn
from argon2 import PasswordHasher
from litestar.testing import TestClient
from sqlalchemy import text

from parcours.accounts import passwords
from parcours.app import create_app
from parcours.log import Event
from parcours.runtime.clock import SimulatedClock, iso
from parcours.runtime.db import Database, forget_kept, migrate
from parcours.runtime.settings import Settings
from parcours.schema import load_all_tables
from parcours.services import Services
from parcours.tracking import parse_event

WRITE_KEY = "test-write-key"
ADMIN_KEY = "test-admin-key"
POSTGRES_ENV = "PARCOURS_TEST_POSTGRES_URL"
START = 1_790_000_000_000  # 2026-09-21T14:13:20Z
PROCESSES_GROUP = "processes"
T = TypeVar("T")

# Passwords are hashed at argon2id's lowest cost in this process's tests: at argon2-cffi's
# defaults (what Parcours uses: 64 MiB, three passes) a hash or a check takes 0.12 s, and
# the console's tests make a team of five and sign them in, test after test (several
# minutes of the suite). What is stored is still an argon2id hash, checked the same way;
# `test_accounts.py` checks the production cost, and `parcours serve` started by a test
# runs with it.
passwords._hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
passwords._DECOY = passwords._hasher.hash("parcours-decoy-password")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that start or kill OS processes go to one xdist group: one worker runs them one
    at a time (two of them at once on two cores starve each other's servers and workers),
    and, the largest unit of work, it gets it first. Runs before xdist names each test
    after its group. `slow` is the older name of the mark."""
    if not config.pluginmanager.hasplugin("xdist"):  # run with -p no:xdist
        return
    for item in items:
        if _starts_processes(item):
            item.add_marker(pytest.mark.xdist_group(PROCESSES_GROUP))


@pytest.fixture(autouse=True)
def _no_process_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that starts processes, none it started is left running: one that fails
    may not get to stopping its servers and workers, which would go on taking the cores
    from the tests after it. Those left get SIGTERM, then SIGKILL 10 s later."""
    if not _starts_processes(request.node):
        yield
        return
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    yield
    left = [c for c in psutil.Process().children(recursive=True) if c.pid not in before]
    for child in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    _, alive = psutil.wait_procs(left, timeout=10)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def _starts_processes(item: pytest.Item) -> bool:
    return any(item.iter_markers("processes")) or any(item.iter_markers("slow"))


def wait_until(
    condition: Callable[[], T | None],
    timeout: float = 30,
    *,
    every: float = 0.1,
    what: str | Callable[[], str] = "",
) -> T:
    """Ask `condition` until it gives something true, and return that; fail the test once
    `timeout` seconds pass, saying `what` was awaited (a function for a description made
    at that moment). What a test does instead of sleeping for a guessed time: it goes on
    as soon as the condition holds, however busy the machine is. The pause between two
    looks grows from 5 ms to `every` seconds."""
    deadline = time.monotonic() + timeout
    pause = min(0.005, every)
    while not (result := condition()):
        if time.monotonic() > deadline:
            awaited = what() if callable(what) else what or condition.__name__
            pytest.fail(f"waited {timeout} s for {awaited}")
        time.sleep(pause)
        pause = min(pause * 2, every)
    return result


def _postgres_admin_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    admin_url = _postgres_admin_url()
    if admin_url is None:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV} (CI sets it; see README)")
    name = f"parcours_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")
    url = f"{base}/{name}"
    db = Database(url)
    migrate(db)
    db.dispose()
    yield url
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database at the latest migration, made once a session: each test gets a
    copy (migrating a new file takes 0.2-0.4 s, copying it a few milliseconds)."""
    path = tmp_path_factory.mktemp("sqlite-migrated") / "parcours.db"
    db = Database(f"sqlite:///{path}")
    migrate(db)
    db.dispose()  # the last connection closed: the write-ahead log is in the file
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Migrated, and empty but for what the migrations put there, on either database."""
    if request.param == "sqlite":
        path = tmp_path / "parcours.db"
        shutil.copy(request.getfixturevalue("sqlite_migrated"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_url")
    truncate_all(url)
    return url


def truncate_all(url: str) -> None:
    """Empty every table and start every sequence again, as in a fresh database. Only the
    tables written since they were made (a file that is not empty) are emptied, by DELETE:
    a test's few rows go in a millisecond, where TRUNCATE gave each table and its indexes
    new files (about 15 ms a table: 0.1 s of every PostgreSQL test's setup)."""
    forget_kept()  # what the process kept of the database (ids from its sequence...)
    names = [t.name for t in load_all_tables().sorted_tables]
    db = Database(url)
    try:
        with db.write() as conn:
            written = conn.execute(
                text(
                    "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname = ANY(:names)"
                    " AND relnamespace = current_schema()::regnamespace"
                    " AND pg_relation_size(oid) > 0"
                ),
                {"names": names},
            ).scalars()
            order = {name: number for number, name in enumerate(names)}
            for table in sorted(written, key=order.__getitem__, reverse=True):
                conn.execute(text(f"DELETE FROM {table}"))  # dependents first
            used = conn.execute(
                text(
                    "SELECT sequencename FROM pg_sequences"
                    " WHERE schemaname = current_schema() AND last_value IS NOT NULL"
                )
            ).scalars()
            for sequence in used.all():
                conn.execute(text(f'ALTER SEQUENCE "{sequence}" RESTART'))
    finally:
        db.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        write_key=WRITE_KEY,
        admin_key=ADMIN_KEY,
        default_region="FR",
    )


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(START)


@pytest.fixture
def services(settings: Settings, clock: SimulatedClock) -> Iterator[Services]:
    opened = Services.open(settings, clock=clock)
    yield opened
    opened.close()


@pytest.fixture
def client(services: Services) -> Iterator[TestClient[Any]]:
    with TestClient(app=create_app(services, close_on_shutdown=False)) as test_client:
        yield test_client


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


class LiveServer:
    def __init__(self, services: Services, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(services, close_on_shutdown=False),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            # A page still open on a stream (the outbox's server-sent events) would hold the
            # stop for the whole join below; a second is enough for any other request.
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_until(lambda: self.server.started, 10, what="the test server to start")
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def live_server(services: Services) -> Iterator[LiveServer]:
    with LiveServer(services) as server:
        yield server


def wait_until_serving(process: subprocess.Popen[bytes], url: str, timeout: float = 60) -> None:
    """Wait until the server `process` started answers `url`/healthz; fail at once, with
    the end of what it wrote to stderr (when piped), if it exits first."""

    def answers() -> bool:
        if process.poll() is not None:
            errors = process.stderr.read().decode(errors="replace") if process.stderr else ""
            pytest.fail(f"the server exited at start ({process.returncode}):\n{errors[-3000:]}")
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answers, timeout, what=f"{url}/healthz to answer")


# Ports handed out below the kernel's ephemeral range (32768 and up), where no outgoing
# connection takes one between the pick and the listen: a slice per xdist worker.
_PORTS_FROM, _PORTS_PER_WORKER, _WORKER_SLICES = 20_000, 1_000, 12
_ports_given: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, never handed out before in this process nor by another
    xdist worker of this run (each has its own slice)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker.removeprefix("gw")) if worker.removeprefix("gw").isdigit() else 0
    first = _PORTS_FROM + (index % _WORKER_SLICES) * _PORTS_PER_WORKER
    offset = random.randrange(_PORTS_PER_WORKER)
    for step in range(_PORTS_PER_WORKER):
        port = first + (offset + step) % _PORTS_PER_WORKER
        if port in _ports_given:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use, by something else on this machine
        _ports_given.add(port)
        return port
    raise RuntimeError(f"no free port left in {first}-{first + _PORTS_PER_WORKER - 1}")


_counter = iter(range(10**9))


def make_event(
    kind: str = "track",
    *,
    at: int | None = None,
    received_at: int | None = None,
    source: str = "api",
    identity_required: bool = True,
    **fields: Any,
) -> Event:
    """A parsed event, as the API would have accepted it (small factory for tests)."""
    document: dict[str, Any] = {"type": kind, **fields}
    document.setdefault("messageId", f"test-{next(_counter)}")
    if at is not None:
        document["timestamp"] = iso(at)
    return parse_event(
        msgspec.json.encode(document),
        source=source,
        identity_required=identity_required,
        received_at=received_at if received_at is not None else (at or START),
    )


PLAIN_FIELDS = {
    "email": {"subject": "About {{ brand.name }}", "text": "Hello"},
    "sms": {"text": "Hello from {{ brand.name }}"},
    "push": {"title": "Hello", "body": "From {{ brand.name }}"},
    "whatsapp": {
        "text": "Hello from {{ brand.name }}",
        "template": "hello",
        "language": "en",
        "category": "utility",
    },
    "wallet": {"header": "Hello", "body": "From {{ brand.name }}"},
    "chat": {"text": "Hello"},
}


def template_channels(journey_source: str) -> dict[str, set[str]]:
    """Template name -> the channels the journey's send steps may use it on."""
    from parcours.journeys import versions as journeys
    from parcours.journeys.program import compile_journey

    wanted: dict[str, set[str]] = {}
    for instruction in compile_journey(journeys.parse(journey_source), 0).instructions:
        send = getattr(instruction.spec, "send", None) if instruction.op == "action" else None
        if send is not None:
            channels = {send.channel, *send.fallback} - {"best", "sector"} or {"email", "sms"}
            wanted.setdefault(send.template, set()).update(channels)
    return wanted


def plain_templates(journey_source: str) -> dict[str, Any]:
    """Plain English content for every template the journey names, on its channels."""
    return {
        name: {"en": {channel: PLAIN_FIELDS[channel] for channel in channels}}
        for name, channels in template_channels(journey_source).items()
    }


def define_templates(services: Services, journey_source: str) -> None:
    """Give every template a journey names plain content for each channel its step may
    use, unless the template already has it (shipped, or defined by the test)."""
    from parcours.messaging import templates

    with services.db.write() as conn:
        for name, channels in template_channels(journey_source).items():
            try:
                existing = templates.get(conn, name).channels()
            except templates.TemplateProblem:
                existing = set()
            if channels <= existing:
                continue
            content = {"en": {channel: PLAIN_FIELDS[channel] for channel in channels | existing}}
            templates.save(conn, name, content, "test", services.clock.now_ms())


def event_properties(services: Services, user: str, name: str) -> list[dict[str, Any]]:
    """The properties of a customer's events of one name, in their order."""
    import json

    from parcours.customers import profiles
    from parcours.log import queries

    with services.db.read() as conn:
        customer = profiles.resolve(conn, user, "FR")
        return [
            json.loads(event.payload).get("properties", {})
            for event in queries.all_of(conn, customer)
            if event.name == name
        ]
