"""The `parcours` command: serve, demo, migrate, import, customers, keys, journeys, segments,
bench."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from parcours.runtime.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from litestar import Litestar

    from parcours.demo import Demo, DemoOptions
    from parcours.ingest.bulk import ImportReport
    from parcours.ingest.csv_import import Kind
    from parcours.runtime.db import Database


class CommandError(Exception):
    """A command cannot do what it was asked: the message says why and what to do; the
    process exits with `code`, without a traceback."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class _Commands(TyperGroup):
    """Every command's expected failures (a wrong setting, no database, a database that
    cannot be reached) end with a message on standard error and a non-zero exit code,
    never a traceback."""

    def invoke(self, ctx: Any) -> Any:
        from alembic.util import CommandError as MigrationError
        from sqlalchemy.exc import InterfaceError, OperationalError

        _used.clear()
        try:
            return super().invoke(ctx)
        except CommandError as exc:
            error(str(exc))
            raise typer.Exit(exc.code) from None
        except SettingsError as exc:
            error(f"Configuration error: {exc}")
            raise typer.Exit(2) from None
        except (OperationalError, InterfaceError) as exc:
            reason = str(exc.orig or exc).strip().splitlines()[0]
            error(f"Cannot use the database at {_shown_url()}: {reason}")
            raise typer.Exit(1) from None
        except MigrationError as exc:
            error(f"Cannot bring the database at {_shown_url()} up to date: {exc}")
            raise typer.Exit(1) from None


app = typer.Typer(
    help="Parcours: one customer profile, every channel.", no_args_is_help=True, cls=_Commands
)
customers_app = typer.Typer(help="Export or erase what is held on a customer.")
keys_app = typer.Typer(help="Create, list and revoke API keys.")
import_app = typer.Typer(help="Bulk import.")
bench_app = typer.Typer(
    help="Benchmarks (their results are kept by hand in the repository's bench/RESULTS.md)."
)
journeys_app = typer.Typer(help="Journeys: check a YAML definition, print the JSON Schema.")
segments_app = typer.Typer(help="Segments: check a definition.")
app.add_typer(journeys_app, name="journeys")
app.add_typer(segments_app, name="segments")
app.add_typer(customers_app, name="customers")
app.add_typer(keys_app, name="keys")
app.add_typer(import_app, name="import")
app.add_typer(bench_app, name="bench")

# No markup or emoji codes: what is printed is printed as it is (an error naming
# `[channels.email]` keeps it); colour is given with Text and styles.
err = Console(stderr=True, soft_wrap=True, markup=False, emoji=False)
out = Console(soft_wrap=True, markup=False, emoji=False)
log = logging.getLogger("parcours.cli")

HostOption = Annotated[str | None, typer.Option(help="Address to listen on.")]
PortOption = Annotated[int | None, typer.Option(help="Port to listen on.")]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where the embedded database lives (default: parcours-data)."),
]
DEFAULT_DATA_DIR = Settings().data_dir
# Where `parcours demo` kept its data before it shared the one default data directory.
OLD_DEMO_DIR = Path("parcours-demo")


def error(message: str) -> None:
    """An error for the person at the terminal, printed as it is, in red."""
    err.print(Text(message, style="red"))


def settings_or_exit(**overrides: Any) -> Settings:
    try:
        return load_settings().with_overrides(**overrides)
    except SettingsError as exc:
        error(f"Configuration error: {exc}")
        raise typer.Exit(2) from None


# The settings of the command running, for its error messages.
_used: list[Settings] = []


def _shown_url() -> str:
    """The database URL the failing command used, without its password."""
    from sqlalchemy.engine import make_url

    if not _used:
        return "the configured URL"
    return make_url(_used[-1].resolved_database_url).render_as_string(hide_password=True)


def _remember(settings: Settings) -> Settings:
    """Keep the command's settings where an error message can find them."""
    _used.append(settings)
    return settings


def sqlite_file(url: str) -> Path | None:
    """The file of an SQLite URL (None for another database or an in-memory one)."""
    if not url.startswith("sqlite") or ":///" not in url:
        return None
    path = url.split(":///", 1)[1].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def _no_database(settings: Settings, problem: str) -> CommandError:
    """The message of a command pointed at no Parcours database: where it looked, how to
    make one, and where the demo's data may be."""
    where = f" --data-dir {settings.data_dir}" if settings.data_dir != DEFAULT_DATA_DIR else ""
    message = (
        f"{problem}. Create it with `parcours migrate{where}`, or start `parcours serve{where}`"
        f" or `parcours demo{where}`, which create it; or point this command at an existing "
        "one with --data-dir (or PARCOURS_DATA_DIR, or PARCOURS_DATABASE_URL)."
    )
    if (
        not settings.database_url
        and settings.data_dir == DEFAULT_DATA_DIR
        and (OLD_DEMO_DIR / "parcours.db").exists()
    ):
        message += (
            f" An earlier `parcours demo` kept its data in {OLD_DEMO_DIR}/: to use that "
            f"database, add --data-dir {OLD_DEMO_DIR}."
        )
    return CommandError(message)


def require_database(settings: Settings) -> None:
    """Commands other than migrate, serve, demo and worker never create a database: this
    one must exist and carry Parcours' tables, else CommandError says where it looked and
    how to create it."""
    from parcours.runtime.db import Database, current_revision

    _remember(settings)
    url = settings.resolved_database_url
    file = sqlite_file(url)
    if file is not None and not file.exists():
        directory = file.parent
        if settings.database_url:
            problem = f"No Parcours database at {file} (the file does not exist)"
        else:
            problem = (
                f"No Parcours database in {settings.data_dir}/ ({directory / file.name} does "
                "not exist)"
            )
        raise _no_database(settings, problem)
    if file is not None:
        revision = _sqlite_revision(file)
    else:
        db = Database(url)
        try:
            revision = current_revision(db)
        finally:
            db.dispose()
    if revision is None:
        from sqlalchemy.engine import make_url

        shown = str(file) if file else make_url(url).render_as_string(hide_password=True)
        raise _no_database(settings, f"{shown} is not a Parcours database (it has no tables)")


def _sqlite_revision(file: Path) -> str | None:
    """The migration an SQLite file is at, read without changing it (opening it through
    Database would turn any SQLite file into a WAL one); None: not a Parcours database."""
    import sqlite3

    from sqlalchemy import column, create_engine, select, table
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.pool import NullPool

    uri = f"{file.resolve().as_uri()}?mode=ro"
    engine = create_engine(
        "sqlite://", creator=lambda: sqlite3.connect(uri, uri=True), poolclass=NullPool
    )
    try:
        with engine.connect() as conn:
            version = conn.execute(
                select(column("version_num")).select_from(table("alembic_version"))
            ).scalar()
    except DBAPIError:  # no such table; not a database at all
        return None
    finally:
        engine.dispose()
    return None if version is None else str(version)


def existing_database(settings: Settings) -> Database:
    """The database of an existing Parcours (see require_database), its schema brought up
    to date as `serve` would."""
    from parcours.runtime.db import Database, migrate

    require_database(settings)
    db = Database(settings.resolved_database_url)
    try:
        migrate(db)
    except BaseException:
        db.dispose()
        raise
    return db


@app.command()
def serve(host: HostOption = None, port: PortOption = None, data_dir: DataDirOption = None) -> None:
    """Run the HTTP API and the background work in one process."""
    settings = settings_or_exit(host=host, port=port, data_dir=data_dir)
    _serve(settings, demo=None)


@app.command()
def demo(
    host: HostOption = None,
    port: PortOption = None,
    data_dir: DataDirOption = None,
    sector: Annotated[
        str,
        typer.Option(
            help="The fictional brand's sector: fashion, beauty, electronics, home, food, "
            "luxury, baby or subscription."
        ),
    ] = "fashion",
    customers: Annotated[int, typer.Option(help="How many customers the demo seeds.")] = 2000,
    speed: Annotated[
        float,
        typer.Option(help="Simulated seconds per real second (360: an hour every ten seconds)."),
    ] = 360.0,
    seed: Annotated[
        int, typer.Option(help="Draws the customers and the traffic: the same seed, the same demo.")
    ] = 1,
) -> None:
    """Serve a living demo: a fictional brand with its catalog and customers, every
    ready-made journey live, and shoppers simulated on an accelerated clock (docs/demo.md).
    A restart goes on where it stopped."""
    from parcours.demo import DemoOptions

    settings = settings_or_exit(host=host, port=port, data_dir=data_dir)
    _serve(settings, demo=DemoOptions(sector, customers, speed, seed))


def _serve(settings: Settings, *, demo: DemoOptions | None) -> None:
    """One process: HTTP, the writer and (unless `serve_worker` is off) the worker; with
    `demo`, on the demo's accelerated clock, its traffic running beside them."""
    from parcours.app import create_app
    from parcours.runtime.logs import configure_logging
    from parcours.services import Services

    running: Demo | None = None
    if demo is not None:
        from parcours.demo import Demo, DemoError

        _mention_old_demo_data(settings)
        try:
            running, settings = Demo.prepare(settings, demo)
        except DemoError as exc:
            raise CommandError(str(exc)) from None
    _remember(settings)
    configure_logging(settings.log_level, settings.log_format, settings.secrets())
    services = Services.open(settings, clock=running.clock if running else None)
    _warn_if_readable_by_others(settings)
    if settings.serve_worker:
        services.start_worker()
    _first_start_keys(services)
    _owner_setup_link(services)
    tune_garbage_collector()
    if running is not None:
        running.start(services)
        for line in running.said:
            _tell(line)
    _tell(
        f"Parcours on http://{settings.host}:{settings.port} "
        f"({services.db.dialect}, data in {settings.data_dir}); "
        f"the console at http://{settings.host}:{settings.port}/console/"
    )
    inbound = services.start_inbound_email()
    if inbound:
        _tell(f"Receiving bounces, complaints and replies by SMTP on port {inbound}")
    stops = _StopSignals()
    # The demo's traffic stops, and saves where it is, before the services close.
    application = create_app(services, close_on_shutdown=running is None)
    for route in running.routes() if running else []:
        application.register(route)
    try:
        _run_server(application, settings, stops)
    finally:
        if running is not None:
            running.stop()
            services.close()
            _tell(running.stopped())


def _mention_old_demo_data(settings: Settings) -> None:
    """The demo used to keep its data apart, in parcours-demo/: say where it went."""
    if (
        settings.database_url
        or settings.data_dir != DEFAULT_DATA_DIR
        or not (OLD_DEMO_DIR / "parcours.db").exists()
        or (DEFAULT_DATA_DIR / "parcours.db").exists()
    ):
        return
    _tell(
        f"The demo now keeps its data in {DEFAULT_DATA_DIR}/, as every command does; the "
        f"database of an earlier demo is in {OLD_DEMO_DIR}/ (add --data-dir {OLD_DEMO_DIR} "
        "to keep using it)."
    )


def _warn_if_readable_by_others(settings: Settings) -> None:
    """The data directory and the database hold secrets (link signing, the VAPID private
    key, API key hashes) and personal data: Parcours creates them readable by their owner
    only, and warns about ones made before, or by hand, that others can read."""
    file = sqlite_file(settings.resolved_database_url)
    if file is None:
        return
    for path in (file.parent, file):
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:
            continue
        if mode & 0o077:
            log.warning(
                "%s is readable by other users (mode %04o) and holds secrets and personal "
                "data: chmod %s %s",
                path,
                mode,
                "700" if path.is_dir() else "600",
                path,
            )


FORCED_STOP_SECONDS = 2.0  # how long requests cut by a second Ctrl-C have to end


class _StopSignals:
    """SIGTERM and SIGINT from the moment the services are open: one received before the
    server runs is kept for it (the server starts, then stops at once) rather than lost or
    raised as KeyboardInterrupt, which skipped the orderly stop."""

    def __init__(self) -> None:
        import signal

        self.received: list[int] = []
        self.numbers = (signal.SIGTERM, signal.SIGINT)
        for number in self.numbers:
            signal.signal(number, self.keep)

    def keep(self, number: int, _frame: object) -> None:
        self.received.append(number)


def _run_server(application: Litestar, settings: Settings, stops: _StopSignals) -> None:
    """uvicorn's server, stopped gracefully by SIGTERM or SIGINT (requests in flight
    finish, then the application's shutdown). A second Ctrl-C stops the wait for open
    connections (a console's live outbox), but not the application's shutdown: uvicorn
    would skip it and cancel its lifespan, which logged a CancelledError traceback. The
    server raises the signals it caught again once stopped, with the handlers it found:
    its own, so that a graceful stop exits with status 0 (not killed by the signal)."""
    import asyncio
    import signal
    import socket

    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            await super().shutdown(sockets)
            if not self.force_exit:
                return
            # The requests still in flight see their client gone, and end, rather than
            # being cancelled as the loop closes (a traceback each).
            for connection in list(self.server_state.connections):
                connection.transport.close()
            if self.server_state.tasks:
                await asyncio.wait(self.server_state.tasks, timeout=FORCED_STOP_SECONDS)
            await self.lifespan.shutdown()

    server = Server(
        uvicorn.Config(
            application,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            log_config=None,  # our handler (runtime/logs.py) writes the server's lines too
            access_log=False,  # ours carries the request id (web/operations.py)
            timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
        )
    )
    for number in stops.numbers:
        signal.signal(number, server.handle_exit)
    for received in stops.received:  # before the server ran
        server.handle_exit(received, None)
    server.run()
    if not server.started:
        raise SystemExit(3)  # as uvicorn.run: the application did not start


def _tell(message: str) -> None:
    """A word to the person who started Parcours: on their terminal, else as a log line."""
    if sys.stdout.isatty():
        out.print(message)
    else:
        log.info(message)


def tune_garbage_collector() -> None:
    """Ingest allocates many short-lived dicts; the default thresholds make the cyclic
    collector run every few hundred events. Freeze what start-up built and collect less
    often (measured in bench/RESULTS.md)."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _owner_setup_link(services: Any) -> None:
    """While the console has no owner, a one-time link to create the owner's account
    (docs/console.md): on the terminal, or, when the output is not one, in a file only
    this user can read (the link is a secret until it is used)."""
    from parcours import accounts
    from parcours.runtime.clock import wall_clock

    token = accounts.setup_link_token(services.db, wall_clock(services.clock).now_ms())
    if token is None:
        return
    link = f"{services.settings.resolved_public_url.rstrip('/')}/console/join?token={token}"
    if sys.stdout.isatty():
        out.print("No one owns this Parcours yet. Create the owner's account (valid 24 hours):")
        out.print(f"  {link}")
        return
    path = Path(services.settings.data_dir) / "setup-link.txt"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(path, f"{link}\n")
    log.warning(
        "no one owns this Parcours yet: the one-time link to create the owner's account "
        "(valid 24 hours) is in %s (readable by this user only)",
        path.resolve(),
    )


def _first_start_keys(services: Any) -> None:
    """On a database with no key at all, make one of each and show them once: on the
    terminal, or, when the output is not one (it is then a log), in a file only this user
    can read, so that no secret ever reaches the logs."""
    from parcours.runtime.keys import create_key, list_keys

    if list_keys(services.db):
        return
    write = create_key(services.db, "write", "first write key")
    admin = create_key(services.db, "admin", "first admin key")
    if sys.stdout.isatty():
        out.print("Created the first keys (shown once, keep them):")
        out.print(f"  write key: {write}")
        out.print(f"  admin key: {admin}")
        return
    path = Path(services.settings.data_dir) / "first-keys.txt"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(path, f"write key: {write}\nadmin key: {admin}\n")
    log.warning(
        "no API key existed: made a write key and an admin key, written to %s (readable by "
        "this user only; keep them elsewhere and delete the file)",
        path.resolve(),
    )


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (0600), whatever mode it had before."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)


@app.command()
def worker(data_dir: DataDirOption = None) -> None:
    """Run due journey steps and timers only (add as many as needed on PostgreSQL)."""
    import signal
    import threading

    from parcours.runtime.logs import configure_logging
    from parcours.runtime.metrics import serve_metrics
    from parcours.services import Services

    settings = _remember(settings_or_exit(data_dir=data_dir))
    configure_logging(settings.log_level, settings.log_format, settings.secrets())
    services = Services.open(settings)
    _warn_if_readable_by_others(settings)
    stopping = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stopping.set())
    metrics_server = None
    if settings.metrics_port:
        exposition = services.metrics(with_database=False)  # the database's: from serve
        metrics_server = serve_metrics(
            settings.host, settings.metrics_port, settings.metrics_token, exposition
        )
    services.start_worker()
    _tell(
        f"Parcours worker on {services.db.dialect}"
        + (f", metrics on port {settings.metrics_port}" if metrics_server else "")
        + "; stop with Ctrl-C or SIGTERM."
    )
    try:
        while not stopping.wait(1):
            pass
    finally:
        # The running batch ends (or rolls back with the process once the time is up).
        if metrics_server is not None:
            metrics_server.shutdown()
        services.close()


@app.command()
def migrate(data_dir: DataDirOption = None) -> None:
    """Apply the database migrations."""
    from parcours.runtime.db import Database, head_revision
    from parcours.runtime.db import migrate as run_migrations

    settings = _remember(settings_or_exit(data_dir=data_dir))
    db = Database(settings.resolved_database_url)
    try:
        run_migrations(db)
    finally:
        db.dispose()
    file = sqlite_file(db.url)
    where = f"{file}, " if file else ""
    out.print(f"Database at migration {head_revision()} ({where}{db.dialect}).")


@import_app.command("events")
def import_events(
    file: Annotated[Path, typer.Argument(help="A file of Segment events, one JSON per line.")],
    data_dir: DataDirOption = None,
    restart: Annotated[
        bool, typer.Option(help="Ignore the saved position and read from the first line.")
    ] = False,
) -> None:
    """Import events; resumable: a second run goes on from the last committed line."""
    from parcours.ingest.bulk import import_file
    from parcours.services import Services

    if not file.is_file():
        raise CommandError(f"No such file: {file}")
    settings = settings_or_exit(data_dir=data_dir)
    require_database(settings)
    services = Services.open(settings)
    try:
        report = import_file(
            services.db, services.writer, services.clock, file, restart=restart, console=err
        )
    finally:
        services.close()
    if report.started_over:
        err.print(report.started_over)
    _print_rejected(report)
    out.print(
        f"{report.stored} events stored, {report.duplicates} already present, "
        f"{len(report.rejected)} lines rejected"
        + (f", resumed after line {report.resumed_after}" if report.resumed_after else "")
        + "."
    )
    if report.rejected:
        raise typer.Exit(1)


def _print_rejected(report: ImportReport) -> None:
    for line_number, reason in report.rejected[:200]:
        err.print(f"line {line_number}: {reason}")
    if len(report.rejected) > 200:
        err.print(f"... and {len(report.rejected) - 200} more rejected lines")


@import_app.command("shipments")
def import_shipments(
    file: Annotated[
        Path,
        typer.Argument(
            help="A CSV file of parcel scans: shipment_id, order_id, status, occurred_at, ..."
        ),
    ],
    data_dir: DataDirOption = None,
) -> None:
    """Import shipment scans from a CSV file (docs/commerce.md); a second run stores
    nothing twice."""
    _import_csv(file, "shipments", data_dir)


@import_app.command("catalog")
def import_catalog(
    file: Annotated[
        Path,
        typer.Argument(help="A CSV file of the catalog, one variant a line: product_id, ..."),
    ],
    data_dir: DataDirOption = None,
) -> None:
    """Import products, variants and stock from a CSV file (docs/commerce.md); a second run
    stores nothing twice."""
    _import_csv(file, "catalog", data_dir)


def _import_csv(file: Path, kind: Kind, data_dir: Path | None) -> None:
    from parcours.ingest.csv_import import CsvFileError, import_csv
    from parcours.services import Services

    if not file.is_file():
        raise CommandError(f"No such file: {file}")
    settings = settings_or_exit(data_dir=data_dir)
    require_database(settings)
    services = Services.open(settings)
    try:
        report = import_csv(services.writer, services.clock, file, kind)
    except CsvFileError as exc:
        _print_rejected(exc.report)
        raise CommandError(
            f"{file}: {exc}; stopped there, after {exc.report.read} lines read and "
            f"{exc.report.stored} events stored"
        ) from None
    finally:
        services.close()
    _print_rejected(report)
    out.print(
        f"{report.read} lines read, {report.stored} events stored, "
        f"{report.duplicates} already present, {len(report.rejected)} lines rejected."
    )
    if report.rejected:
        raise typer.Exit(1)


@customers_app.command("export")
def customers_export(
    customer: Annotated[str, typer.Argument(help="Any id: cus_N, userId, email, phone.")],
    output: Annotated[Path | None, typer.Option(help="Write to this file.")] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Print as JSON everything held on a person."""
    from parcours.customers import CustomerNotFound, export
    from parcours.journeys import JourneyEngine
    from parcours.runtime.clock import SystemClock
    from parcours.services import commerce_of, people_hooks

    settings = settings_or_exit(data_dir=data_dir)
    db = existing_database(settings)
    try:
        clock = SystemClock()
        people = people_hooks(
            JourneyEngine(clock, settings.default_region), commerce_of(settings, clock)
        )
        document = export(db, people, customer, settings.default_region)
    except CustomerNotFound as exc:
        raise CommandError(str(exc), 1) from None
    finally:
        db.dispose()
    text = json.dumps(document, indent=2, ensure_ascii=False)
    if output:
        write_private(output, text + "\n")  # everything held on a person: theirs alone
        out.print(f"Wrote {output}.")
    else:
        sys.stdout.write(text + "\n")


@customers_app.command("erase")
def customers_erase(
    customer: Annotated[str, typer.Argument(help="Any id: cus_N, userId, email, phone.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Erase a person: events, identities, consents, orders; an audit event remains."""
    from parcours.customers import CustomerNotFound, erase
    from parcours.journeys import JourneyEngine
    from parcours.runtime.clock import SystemClock
    from parcours.services import commerce_of, people_hooks

    settings = settings_or_exit(data_dir=data_dir)
    require_database(settings)
    if not yes and not typer.confirm(f"Erase everything held on {customer}?"):
        raise typer.Exit(1)
    db = existing_database(settings)
    try:
        clock = SystemClock()
        people = people_hooks(
            JourneyEngine(clock, settings.default_region), commerce_of(settings, clock)
        )
        erasure = erase(db, people, customer, settings.default_region, clock.now_ms(), "cli")
    except CustomerNotFound as exc:
        raise CommandError(str(exc), 1) from None
    finally:
        db.dispose()
    out.print(
        f"Erased cus_{erasure.customer_id}: {erasure.events} events, "
        f"{erasure.identities} identities, {erasure.consents} consent records, "
        f"{erasure.orders} orders"
        + "".join(f", {n} {table.replace('_', ' ')}" for table, n in erasure.other.items())
        + "."
    )


@keys_app.command("create")
def keys_create(
    kind: Annotated[str, typer.Argument(help="write or admin")],
    name: Annotated[
        str,
        typer.Option(
            help="An admin key: the person who holds it (unique among live admin keys; "
            "with --user, their address). A write key: what sends with it."
        ),
    ] = "",
    user: Annotated[
        str,
        typer.Option(
            help="The address of the console's user the key belongs to, as a key made in "
            "the console does (its admin key then acts with that user's role)."
        ),
    ] = "",
    scope: Annotated[
        list[str] | None,
        typer.Option(help="An admin key limited to this scope of the admin API (repeat it)."),
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Create a key and print its secret (shown once); audited, as the console's keys are."""
    from sqlalchemy import Connection

    from parcours import accounts
    from parcours.runtime.clock import SystemClock
    from parcours.runtime.keys import create_key

    if kind not in ("write", "admin"):
        raise CommandError(f"kind must be write or admin, got {kind!r}")
    settings = settings_or_exit(data_dir=data_dir)
    db = existing_database(settings)
    try:
        owner = None
        if user.strip():
            with db.read() as conn:
                owner = accounts.user_by_email(conn, user.strip())
            if owner is None or owner.disabled_at is not None:
                raise CommandError(
                    f"--user {user.strip()!r}: no active user of the console has this address "
                    "(parcours keys create needs one invited and joined first)"
                )
            if kind == "admin":
                name = owner.email  # an admin key is one person's: its name is their address
        if kind == "admin" and not name.strip():
            raise CommandError(
                "an admin key belongs to one person: give their address with --user "
                '(a user of the console) or their name with --name (for example --name "Camille '
                'Martin")'
            )
        chosen = sorted(set(scope or []))
        key_name = " ".join(name.split()) or "write key"

        def audited(conn: Connection, key_id: int) -> None:
            accounts.record(
                conn,
                None,
                "key.created",
                f"key:{key_id}",
                SystemClock().now_ms(),
                after={
                    "kind": kind,
                    "name": key_name,
                    "user": owner.email if owner else None,
                    "scopes": chosen or None,
                    "by": "the command line",
                },
            )

        secret = create_key(
            db,
            "write" if kind == "write" else "admin",
            key_name,
            user_id=owner.id if owner else None,
            scopes=chosen or None,
            also=audited,
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    finally:
        db.dispose()
    sys.stdout.write(secret + "\n")


@keys_app.command("list")
def keys_list(data_dir: DataDirOption = None) -> None:
    """List keys (never their secrets)."""
    from parcours.runtime.clock import iso
    from parcours.runtime.keys import list_keys

    settings = settings_or_exit(data_dir=data_dir)
    db = existing_database(settings)
    try:
        keys = list_keys(db)
    finally:
        db.dispose()
    for key in keys:
        state = f"revoked {iso(key.revoked_at)}" if key.revoked_at else "live"
        sys.stdout.write(f"{key.id}\t{key.kind}\t{key.name}\t{iso(key.created_at)}\t{state}\n")


@keys_app.command("revoke")
def keys_revoke(key_id: int, data_dir: DataDirOption = None) -> None:
    """Revoke a key by its number (see `parcours keys list`)."""
    from parcours.runtime.keys import revoke_key

    settings = settings_or_exit(data_dir=data_dir)
    db = existing_database(settings)
    try:
        done = revoke_key(db, key_id)
    finally:
        db.dispose()
    if not done:
        raise CommandError(f"no live key number {key_id}", 1)
    out.print(f"Key {key_id} revoked.")


def _run_bench(name: str, arguments: list[str]) -> None:
    """The benchmarks ship in the package (parcours.bench); they measure CPU and memory
    with psutil, the `bench` extra."""
    import importlib

    from parcours.bench.common import MissingTool

    module = importlib.import_module(f"parcours.bench.{name}")
    try:
        code = module.main(arguments)
    except MissingTool as exc:
        raise CommandError(str(exc)) from None
    raise typer.Exit(code)


_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


@bench_app.command("ingest", context_settings=_PASS_THROUGH, add_help_option=False)
def bench_ingest(context: typer.Context) -> None:
    """Ingestion: events/s end to end, latency at a fixed rate, memory; see --help."""
    _run_bench("ingest", list(context.args))


@bench_app.command("journeys", context_settings=_PASS_THROUGH, add_help_option=False)
def bench_journeys(context: typer.Context) -> None:
    """Journeys: steps/s on a simulated clock, event-to-intent time; see --help."""
    _run_bench("journeys", list(context.args))


@bench_app.command("console", context_settings=_PASS_THROUGH, add_help_option=False)
def bench_console(context: typer.Context) -> None:
    """Console: each main page's server time with a brand's worth of data; see --help."""
    _run_bench("console", list(context.args))


@bench_app.command("commerce", context_settings=_PASS_THROUGH, add_help_option=False)
def bench_commerce(context: typer.Context) -> None:
    """Commerce: orders/s end to end with their parcels' scans and the post-purchase
    journey on a simulated clock, the checks, and the tracking page's p95; see --help."""
    _run_bench("commerce", list(context.args))


@bench_app.command("channels", context_settings=_PASS_THROUGH, add_help_option=False)
def bench_channels(context: typer.Context) -> None:
    """Channels: emails/s through SMTP with DKIM against a bare smtplib floor; rendering."""
    _run_bench("channels", list(context.args))


@journeys_app.command("validate")
def journeys_validate(
    files: Annotated[list[Path], typer.Argument(help="Journey YAML files.")],
    data_dir: DataDirOption = None,
) -> None:
    """Check journeys: the format, and the templates their sends name (the shipped ones,
    and the brand's when the database exists); every problem is named with its line."""
    from parcours.journeys import validate
    from parcours.messaging import MessageTemplate, shipped

    brand = _brand_templates(_remember(settings_or_exit(data_dir=data_dir)))

    def lookup(template_id: str) -> MessageTemplate | None:
        if template_id in brand:
            return MessageTemplate(template_id, brand[template_id], "brand")
        return shipped().get(template_id)

    def check(text: str) -> str:
        journey = validate(text, lookup)
        return f"journey {journey.id!r} is valid ({len(journey.steps)} steps)"

    _validate(files, check)


def _brand_templates(settings: Settings) -> dict[str, Any]:
    """The brand's own templates when the database exists and is Parcours' (read without
    creating anything), else none."""
    from parcours.runtime.db import Database, current_revision

    file = sqlite_file(settings.resolved_database_url)
    if file is not None and not file.exists():
        return {}
    db = Database(settings.resolved_database_url)
    try:
        if current_revision(db) is None:
            return {}
        from parcours.messaging import brand_templates

        with db.read() as conn:
            return brand_templates(conn)
    finally:
        db.dispose()


@segments_app.command("validate")
def segments_validate(
    files: Annotated[list[Path], typer.Argument(help="Segment definitions (YAML or JSON).")],
) -> None:
    """Check segment definitions; every problem is named with its line."""
    from parcours.segments import load_segment

    def check(text: str) -> str:
        segment = load_segment(text)
        return f"segment {segment.id!r} is valid ({len(segment.conditions)} conditions)"

    _validate(files, check)


def _validate(files: list[Path], check: Callable[[str], str]) -> None:
    """Run `check` on each file: what it says of a valid one, or each problem with its line."""
    from parcours.runtime.definitions import DefinitionError

    failed = False
    for file in files:
        try:
            said = check(file.read_text(encoding="utf-8"))
        except OSError as exc:
            err.print(f"{file}: cannot read: {exc.strerror}")
            failed = True
        except DefinitionError as exc:
            for problem in exc.problems:
                err.print(f"{file}:{problem}")
            failed = True
        else:
            out.print(f"{file}: {said}")
    if failed:
        raise typer.Exit(1)


@journeys_app.command("simulate")
def journeys_simulate(
    file: Annotated[Path, typer.Argument(help="The journey YAML.")],
    script: Annotated[
        Path,
        typer.Option(
            help="YAML list of {at: +2h, customer: ana, event: ..., properties} (or "
            "enters/leaves: a segment); docs/journeys.md has the format."
        ),
    ],
    customer: Annotated[
        str | None, typer.Option(help="Start from this real customer's profile (any id).")
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="Simulated start, ISO 8601 (default now).")
    ] = None,
    days: Annotated[int, typer.Option(help="How far to run after the last event.")] = 30,
    data_dir: DataDirOption = None,
) -> None:
    """Run the real engine on a simulated clock; send nothing; print the timeline."""
    from parcours.journeys import (
        JourneyError,
        LifecycleError,
        ScriptError,
        format_timeline,
        load_script,
        simulate,
    )
    from parcours.runtime.clock import SystemClock, parse_iso
    from parcours.services import Services

    settings = _remember(settings_or_exit(data_dir=data_dir))
    history = None
    brand_templates = None
    segment_sources = None
    from parcours.runtime.db import Database, current_revision

    if customer:
        require_database(settings)  # a real customer needs the database they are in
    file_of_db = sqlite_file(settings.resolved_database_url)
    # Without one, the simulation uses the shipped templates (and creates no database).
    missing = file_of_db is not None and not file_of_db.exists()
    db = None if missing else Database(settings.resolved_database_url)
    try:
        if db is not None and current_revision(db) is not None:  # a Parcours database
            from parcours.journeys import brand_in_force, brand_segments
            from parcours.messaging import brand_templates as read_templates

            with db.read() as conn:
                brand_templates = read_templates(conn)
                segment_sources = brand_segments(conn)
                settings = brand_in_force(conn, settings)  # the Settings page's zone
        if customer and db is not None:
            from parcours.customers import CustomerNotFound
            from parcours.customers import history as history_of

            try:
                history = history_of(db, customer, settings.default_region)
            except CustomerNotFound as exc:
                raise CommandError(str(exc), 1) from None
    finally:
        if db is not None:
            db.dispose()
    begin = parse_iso(start) if start else SystemClock().now_ms()
    try:
        entries = simulate(
            file.read_text(encoding="utf-8"),
            load_script(script.read_text(encoding="utf-8")),
            open_scratch=Services.open_scratch,
            start=begin,
            days=days,
            history=history,
            default_region=settings.default_region,
            brand_templates=brand_templates,
            brand_segments=segment_sources,
            brand_settings=settings,
        )
    except JourneyError as exc:
        for problem in exc.problems:
            err.print(f"{file}:{problem}")
        raise typer.Exit(1) from None
    except ScriptError as exc:
        err.print(f"{script}: {exc}")
        raise typer.Exit(1) from None
    except LifecycleError as exc:
        err.print(f"{file}: {exc}")
        raise typer.Exit(1) from None
    sys.stdout.write(format_timeline(entries, begin) + "\n")


@journeys_app.command("schema")
def journeys_schema() -> None:
    """Print the JSON Schema of the journey format."""
    from parcours.journeys import journey_schema

    sys.stdout.write(json.dumps(journey_schema(), indent=2) + "\n")


def main() -> None:
    app()
