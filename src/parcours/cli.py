"""The `parcours` command: serve, demo, migrate, import, customers, keys, journeys, segments,
bench."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from parcours.runtime.settings import Settings, SettingsError, load_settings

app = typer.Typer(help="Parcours: one customer profile, every channel.", no_args_is_help=True)
customers_app = typer.Typer(help="Export or erase what is held on a customer.")
keys_app = typer.Typer(help="Create, list and revoke API keys.")
import_app = typer.Typer(help="Bulk import.")
bench_app = typer.Typer(help="Benchmarks (results go to bench/RESULTS.md by hand).")
journeys_app = typer.Typer(help="Journeys: check a YAML definition, print the JSON Schema.")
segments_app = typer.Typer(help="Segments: check a definition.")
app.add_typer(journeys_app, name="journeys")
app.add_typer(segments_app, name="segments")
app.add_typer(customers_app, name="customers")
app.add_typer(keys_app, name="keys")
app.add_typer(import_app, name="import")
app.add_typer(bench_app, name="bench")

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)
log = logging.getLogger("parcours.cli")
# prometheus-client's own variable: set before it is first imported, every process of one
# `parcours serve` counts into this directory and any of them shows the sum.
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

HostOption = Annotated[str | None, typer.Option(help="Address to listen on.")]
PortOption = Annotated[int | None, typer.Option(help="Port to listen on.")]
DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="Where the embedded database lives.")
]


def settings_or_exit(**overrides: Any) -> Settings:
    try:
        return load_settings().with_overrides(**overrides)
    except SettingsError as exc:
        err.print(f"[red]Configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command()
def serve(host: HostOption = None, port: PortOption = None, data_dir: DataDirOption = None) -> None:
    """Run the HTTP API and the background work in one process."""
    settings = settings_or_exit(host=host, port=port, data_dir=data_dir)
    _serve(settings, demo=False)


@app.command()
def demo(host: HostOption = None, port: PortOption = None, data_dir: DataDirOption = None) -> None:
    """Serve with a small seeded data set (created on the first run)."""
    settings = settings_or_exit(host=host, port=port, data_dir=data_dir or Path("parcours-demo"))
    _serve(settings, demo=True)


def _serve(settings: Settings, *, demo: bool) -> None:
    made_metrics_dir = None
    several = settings.http_workers > 1 or _own_writer_process(settings)
    if several and METRICS_DIR_VARIABLE not in os.environ:
        import tempfile

        made_metrics_dir = tempfile.mkdtemp(prefix="parcours-metrics-")
        os.environ[METRICS_DIR_VARIABLE] = made_metrics_dir
    try:
        _serve_with(settings, demo=demo)
    finally:
        if made_metrics_dir is not None:
            import shutil

            shutil.rmtree(made_metrics_dir, ignore_errors=True)


def _own_writer_process(settings: Settings) -> bool:
    """One server process on SQLite: the writer runs in a child of its own (docs/core.md),
    whose counters reach /metrics through the multiprocess directory."""
    from parcours.ingest.writer_process import available

    return (
        settings.http_workers == 1
        and settings.writer_process
        and settings.resolved_database_url.startswith("sqlite")
        and available()
    )


def _serve_with(settings: Settings, *, demo: bool) -> None:
    import uvicorn

    from parcours.app import create_app
    from parcours.runtime.logs import configure_logging
    from parcours.services import Services

    configure_logging(settings.log_level, settings.log_format, settings.secrets())
    services = Services.open(settings, writer_process=_own_writer_process(settings))
    if settings.serve_worker:
        services.start_worker()
    _first_start_keys(services)
    tune_garbage_collector()
    if demo:
        from parcours.demo import seed

        created = seed(services)
        if created:
            _tell(f"Seeded the demo data set: {created} events.")
    _tell(
        f"Parcours on http://{settings.host}:{settings.port} "
        f"({services.db.dialect}, data in {settings.data_dir})"
    )
    common = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "log_config": None,  # our handler (runtime/logs.py) writes the server's lines too
        "access_log": False,  # ours carries the request id (web/operations.py)
        "timeout_graceful_shutdown": settings.shutdown_timeout_seconds,
    }
    # The inbound SMTP endpoint listens on one port: it runs once, in this process,
    # whatever the number of HTTP processes.
    inbound = services.start_inbound_email()
    if inbound:
        _tell(f"Receiving bounces, complaints and replies by SMTP on port {inbound}")
    _stop_quietly_on_signals()
    if settings.http_workers == 1:
        uvicorn.run(create_app(services), **common)  # type: ignore[arg-type]
        return
    # Several processes: each opens its own services (writer, worker) from the same
    # settings, handed over through the environment. This one supervises them and keeps
    # its own services (writer and worker, sharing the queue with theirs) only for the
    # inbound endpoint.
    if not inbound:
        services.close()
    for name in ("data_dir", "database_url", "host", "port", "default_region"):
        os.environ[f"PARCOURS_{name.upper()}"] = str(getattr(settings, name))
    try:
        uvicorn.run(
            "parcours.app:app_from_environment",
            factory=True,
            workers=settings.http_workers,
            **common,  # type: ignore[arg-type]
        )
    finally:
        if inbound:
            services.close()


def _stop_quietly_on_signals() -> None:
    """The server stops gracefully on SIGTERM or SIGINT, then raises the signal again
    with the handlers it found: these make that second time a no-op, so that a graceful
    stop exits with status 0 (not killed by the signal)."""
    import signal

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: None)


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
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(f"write key: {write}\nadmin key: {admin}\n")
    log.warning(
        "no API key existed: made a write key and an admin key, written to %s (readable by "
        "this user only; keep them elsewhere and delete the file)",
        path.resolve(),
    )


@app.command()
def worker(data_dir: DataDirOption = None) -> None:
    """Run due journey steps and timers only (add as many as needed on PostgreSQL)."""
    import signal
    import threading

    from parcours.runtime.logs import configure_logging
    from parcours.runtime.metrics import serve_metrics
    from parcours.services import Services

    settings = settings_or_exit(data_dir=data_dir)
    configure_logging(settings.log_level, settings.log_format, settings.secrets())
    services = Services.open(settings)
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

    settings = settings_or_exit(data_dir=data_dir)
    db = Database(settings.resolved_database_url)
    run_migrations(db)
    out.print(f"Database at migration {head_revision()} ({db.dialect}).")
    db.dispose()


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

    if not file.exists():
        err.print(f"[red]No such file:[/red] {file}")
        raise typer.Exit(2)
    settings = settings_or_exit(data_dir=data_dir)
    services = Services.open(settings)
    try:
        report = import_file(services, file, restart=restart, console=err)
    finally:
        services.close()
    for line_number, reason in report.rejected[:200]:
        err.print(f"line {line_number}: {reason}")
    if len(report.rejected) > 200:
        err.print(f"... and {len(report.rejected) - 200} more rejected lines")
    out.print(
        f"{report.stored} events stored, {report.duplicates} already present, "
        f"{len(report.rejected)} lines rejected"
        + (f", resumed after line {report.resumed_after}" if report.resumed_after else "")
        + "."
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
    from parcours.customers.api import CustomerNotFound, export
    from parcours.runtime.db import Database

    settings = settings_or_exit(data_dir=data_dir)
    db = Database(settings.resolved_database_url)
    try:
        document = export(db, customer, settings.default_region)
    except CustomerNotFound as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        db.dispose()
    text = json.dumps(document, indent=2, ensure_ascii=False)
    if output:
        output.write_text(text + "\n", encoding="utf-8")
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
    from parcours.customers.api import CustomerNotFound, erase
    from parcours.runtime.clock import SystemClock
    from parcours.runtime.db import Database

    settings = settings_or_exit(data_dir=data_dir)
    if not yes and not typer.confirm(f"Erase everything held on {customer}?"):
        raise typer.Exit(1)
    db = Database(settings.resolved_database_url)
    try:
        erasure = erase(db, customer, settings.default_region, SystemClock().now_ms(), "cli")
    except CustomerNotFound as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
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
    name: Annotated[str, typer.Option(help="What the key is for.")] = "",
    data_dir: DataDirOption = None,
) -> None:
    """Create a key and print its secret (shown once)."""
    from parcours.runtime.db import Database
    from parcours.runtime.db import migrate as run_migrations
    from parcours.runtime.keys import create_key

    if kind not in ("write", "admin"):
        err.print(f"[red]kind must be write or admin, got {kind!r}[/red]")
        raise typer.Exit(2)
    settings = settings_or_exit(data_dir=data_dir)
    db = Database(settings.resolved_database_url)
    run_migrations(db)
    secret = create_key(db, "write" if kind == "write" else "admin", name or f"{kind} key")
    db.dispose()
    sys.stdout.write(secret + "\n")


@keys_app.command("list")
def keys_list(data_dir: DataDirOption = None) -> None:
    """List keys (never their secrets)."""
    from parcours.runtime.clock import iso
    from parcours.runtime.db import Database
    from parcours.runtime.keys import list_keys

    settings = settings_or_exit(data_dir=data_dir)
    db = Database(settings.resolved_database_url)
    for key in list_keys(db):
        state = f"revoked {iso(key.revoked_at)}" if key.revoked_at else "live"
        sys.stdout.write(f"{key.id}\t{key.kind}\t{key.name}\t{iso(key.created_at)}\t{state}\n")
    db.dispose()


@keys_app.command("revoke")
def keys_revoke(key_id: int, data_dir: DataDirOption = None) -> None:
    """Revoke a key by its number (see `parcours keys list`)."""
    from parcours.runtime.db import Database
    from parcours.runtime.keys import revoke_key

    settings = settings_or_exit(data_dir=data_dir)
    db = Database(settings.resolved_database_url)
    done = revoke_key(db, key_id)
    db.dispose()
    if not done:
        err.print(f"[red]no live key number {key_id}[/red]")
        raise typer.Exit(1)
    out.print(f"Key {key_id} revoked.")


def _run_bench(name: str, arguments: list[str]) -> None:
    """Benchmarks live in the repository's bench/ folder, beside src/."""
    import importlib

    import parcours

    root = Path(parcours.__file__).resolve().parents[2]
    if not (root / "bench" / f"{name}.py").exists():
        err.print(
            f"[red]bench/{name}.py not found beside {root / 'src'}: benchmarks run from a "
            "source checkout (pip install -e .)[/red]"
        )
        raise typer.Exit(2)
    sys.path.insert(0, str(root))
    module = importlib.import_module(f"bench.{name}")
    raise typer.Exit(module.main(arguments))


_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


@bench_app.command("ingest", context_settings=_PASS_THROUGH, add_help_option=False)
def bench_ingest(context: typer.Context) -> None:
    """Ingestion: events/s end to end, latency at a fixed rate, memory; see --help."""
    _run_bench("ingest", list(context.args))


@bench_app.command("journeys", context_settings=_PASS_THROUGH, add_help_option=False)
def bench_journeys(context: typer.Context) -> None:
    """Journeys: steps/s on a simulated clock, event-to-intent time; see --help."""
    _run_bench("journeys", list(context.args))


@bench_app.command("channels", context_settings=_PASS_THROUGH, add_help_option=False)
def bench_channels(context: typer.Context) -> None:
    """Channels: emails/s through SMTP with DKIM against a bare smtplib floor; rendering."""
    _run_bench("channels", list(context.args))


@journeys_app.command("validate")
def journeys_validate(
    files: Annotated[list[Path], typer.Argument(help="Journey YAML files.")],
) -> None:
    """Check journeys against the format; every problem is named with its line."""
    from parcours.journeys.definition import load_journey

    def check(text: str) -> str:
        journey = load_journey(text)
        return f"journey {journey.id!r} is valid ({len(journey.steps)} steps)"

    _validate(files, check)


@segments_app.command("validate")
def segments_validate(
    files: Annotated[list[Path], typer.Argument(help="Segment definitions (YAML or JSON).")],
) -> None:
    """Check segment definitions; every problem is named with its line."""
    from parcours.segments.definition import load_segment

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
    script: Annotated[Path, typer.Option(help="YAML list of {at: +2h, event: ..., properties}.")],
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
    from parcours.journeys.api import LifecycleError
    from parcours.journeys.definition import JourneyError
    from parcours.journeys.simulator import ScriptError, format_timeline, load_script, simulate
    from parcours.runtime.clock import SystemClock, parse_iso

    settings = settings_or_exit(data_dir=data_dir)
    history = None
    brand_templates = None
    from parcours.runtime.db import Database, current_revision

    db = Database(settings.resolved_database_url)
    try:
        if current_revision(db) is not None:  # a database Parcours already uses
            from parcours.messaging.templates import brand_templates as read_templates

            with db.read() as conn:
                brand_templates = read_templates(conn)
        if customer:
            from parcours.customers.api import CustomerNotFound, export

            try:
                history = export(db, customer, settings.default_region)["events"]
            except CustomerNotFound as exc:
                err.print(f"[red]{exc}[/red]")
                raise typer.Exit(1) from None
    finally:
        db.dispose()
    begin = parse_iso(start) if start else SystemClock().now_ms()
    try:
        entries = simulate(
            file.read_text(encoding="utf-8"),
            load_script(script.read_text(encoding="utf-8")),
            start=begin,
            days=days,
            history=history,
            default_region=settings.default_region,
            brand_templates=brand_templates,
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
    from parcours.journeys.definition import journey_schema

    sys.stdout.write(json.dumps(journey_schema(), indent=2) + "\n")


def main() -> None:
    app()
