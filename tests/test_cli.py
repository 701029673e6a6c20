"""The command line: import, export, erase, keys, settings errors, one data directory,
no database made as a side effect, messages printed as they are."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from parcours import commerce
from parcours.cli import app
from parcours.commerce.tables import commerce_orders
from parcours.customers.tables import consents, customers, identities
from parcours.ingest.bulk import import_file, saved_position
from parcours.log import events
from parcours.runtime.db import Database, head_revision, migrate
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.conftest import free_port, wait_until, wait_until_serving

runner = CliRunner()


@pytest.fixture
def url(database_url: str) -> str:
    """The test's database, made as `parcours migrate` makes it: the commands tested here
    use a database and never create one."""
    db = Database(database_url)
    migrate(db)
    db.dispose()
    return database_url


def run(database_url: str, *args: str) -> Any:
    env = {"PARCOURS_DATABASE_URL": database_url}
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


def count(database_url: str, table: Any, *where: Any) -> int:
    db = Database(database_url)
    try:
        with db.read() as conn:
            return int(
                conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()
            )
    finally:
        db.dispose()


def write_lines(path: Path, documents: list[Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        for document in documents:
            handle.write(document if isinstance(document, str) else json.dumps(document))
            handle.write("\n")


def viewed(number: int, with_id: bool = True) -> dict[str, Any]:
    document: dict[str, Any] = {
        "type": "track",
        "userId": f"user-{number % 50}",
        "event": "Product Viewed",
        "timestamp": "2025-03-01T10:00:00Z",
        "properties": {"product_id": f"p-{number}"},
    }
    if with_id:
        document["messageId"] = f"imp-{number}"
    return document


def test_import_reports_rejected_lines_by_number_and_keeps_the_rest(
    url: str, tmp_path: Path
) -> None:
    file = tmp_path / "events.jsonl"
    write_lines(file, [viewed(1), "{not json", viewed(2), {"type": "track", "userId": "x"}, ""])
    result = run(url, "import", "events", str(file))
    assert result.exit_code == 1
    assert "line 2: not valid JSON" in result.output
    assert "line 4: event: a track call needs a non-empty event name" in result.output
    assert "2 events stored" in result.output
    assert count(url, events) == 2


def position(url: str, file: Path) -> int | None:
    db = Database(url)
    try:
        saved = saved_position(db, file)
    finally:
        db.dispose()
    return None if saved is None else saved.line


def test_import_goes_on_from_where_it_stopped(url: str, tmp_path: Path) -> None:
    file = tmp_path / "events.jsonl"
    write_lines(file, [viewed(n, with_id=False) for n in range(1500)])
    assert run(url, "import", "events", str(file)).exit_code == 0
    # The position is the database's: nothing is written beside the file.
    assert position(url, file) == 1500
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("events")) == [
        "events.jsonl"
    ]
    write_lines(file, [viewed(n, with_id=False) for n in range(1500, 1800)])
    second = run(url, "import", "events", str(file))
    assert "300 events stored, 0 already present" in second.output
    assert "resumed after line 1500" in second.output
    # Reading everything again stores nothing twice, even lines without a messageId.
    third = run(url, "import", "events", str(file), "--restart")
    assert "0 events stored, 1800 already present" in third.output
    assert count(url, events) == 1800


@pytest.mark.processes
def test_import_killed_midway_loses_and_duplicates_nothing(url: str, tmp_path: Path) -> None:
    file = tmp_path / "big.jsonl"
    write_lines(file, [viewed(n, with_id=False) for n in range(40_000)])
    env = {**os.environ, "PARCOURS_DATABASE_URL": url}
    command = [str(Path(sys.executable).parent / "parcours"), "import", "events", str(file)]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_until(lambda: position(url, file) is not None, 60, every=0.05, what="a first commit")
    process.send_signal(signal.SIGKILL)
    process.wait()
    stopped_at = position(url, file)
    assert stopped_at is not None and stopped_at < 40_000, "the import ended before the kill"
    result = run(url, "import", "events", str(file))
    assert result.exit_code == 0
    assert count(url, events) == 40_000


def _seed_person(url: str, tmp_path: Path) -> None:
    file = tmp_path / "person.jsonl"
    write_lines(
        file,
        [
            {
                "type": "identify",
                "userId": "erin",
                "anonymousId": "dev-1",
                "messageId": "p1",
                "traits": {
                    "email": "Erin@example.com",
                    "phone": "+33 6 01 02 03 04",
                    "consent": {"email": {"marketing": True}},
                },
            },
            {
                "type": "track",
                "userId": "erin",
                "event": "Order Completed",
                "messageId": "p2",
                "properties": {"order_id": "o-9", "total": 42, "currency": "EUR"},
            },
            {
                "type": "identify",
                "userId": "someone-else",
                "messageId": "p3",
                "traits": {"email": "other@example.com"},
            },
        ],
    )
    assert run(url, "import", "events", str(file)).exit_code == 0


def test_export_holds_everything_about_the_person(url: str, tmp_path: Path) -> None:
    _seed_person(url, tmp_path)
    output = tmp_path / "export.json"
    result = run(url, "customers", "export", "erin@example.com", "--output", str(output))
    assert result.exit_code == 0
    document = json.loads(output.read_text())
    assert document["traits"]["email"] == "Erin@example.com"
    assert {"kind": "phone", "value": "+33601020304"} in document["identities"]
    assert [e["messageId"] for e in document["events"]] == ["p1", "p2"]
    assert document["orders"][0]["order_id"] == "o-9"
    assert document["consent_ledger"][0]["status"] == "granted"


def test_erase_removes_the_person_and_leaves_an_audit_without_personal_data(
    url: str, tmp_path: Path
) -> None:
    _seed_person(url, tmp_path)
    result = run(url, "customers", "erase", "erin", "--yes")
    assert result.exit_code == 0, result.output
    assert "2 events" in result.output
    assert count(url, identities) == 2  # only the other person's id and email
    assert count(url, consents) == 0
    assert count(url, commerce_orders) == 0
    assert count(url, customers, customers.c.erased_at.is_not(None)) == 1
    db = Database(url)
    with db.read() as conn:
        audit = conn.execute(select(events.c.payload).where(events.c.name == "Customer Erased"))
        payload = audit.scalar_one()
        everything = " ".join(
            row.payload for row in conn.execute(select(events.c.payload))
        ) + " ".join(row.traits for row in conn.execute(select(customers.c.traits)))
    db.dispose()
    assert "events_deleted" in payload
    for personal in ("erin", "Erin@example.com", "+33601020304", "dev-1"):
        assert personal.lower() not in everything.lower()
    # The person is gone for every lookup.
    assert run(url, "customers", "export", "erin").exit_code == 1


def test_keys_create_list_and_revoke(url: str) -> None:
    created = run(url, "keys", "create", "write", "--name", "shop")
    assert created.exit_code == 0
    assert created.output.strip().startswith("pc_write_")
    listing = run(url, "keys", "list")
    assert "write\tshop" in listing.output
    assert run(url, "keys", "revoke", "1").exit_code == 0
    assert "revoked" in run(url, "keys", "list").output
    assert run(url, "keys", "revoke", "1").exit_code == 1


def test_an_admin_key_is_made_for_one_named_person(url: str) -> None:
    unnamed = run(url, "keys", "create", "admin")
    assert unnamed.exit_code == 2 and "belongs to one person" in unnamed.output
    assert run(url, "keys", "create", "admin", "--name", "Camille Martin").exit_code == 0
    again = run(url, "keys", "create", "admin", "--name", "camille martin")
    assert again.exit_code == 2 and "already belongs to 'camille martin'" in again.output
    assert "Traceback" not in again.output
    assert run(url, "keys", "list").output.count("admin\tCamille Martin") == 1


def test_a_key_made_on_the_command_line_belongs_to_a_user_and_is_audited(url: str) -> None:
    """`--user` gives the key to a user of the console, as the console does (an admin key
    then acts with that user's role, and is named by their address); `--scope` limits an
    admin key; the key's making is in the audit log; an address that is no user is
    refused by name, and nothing is made."""
    from parcours import accounts
    from parcours.runtime.keys import list_keys

    db = Database(url)
    token = accounts.setup_link_token(db, 0)
    assert token is not None
    accounts.accept_invitation(
        db, token, email="owner@maison.example", name="Owner", password="a long passphrase", now=0
    )
    try:
        refused = run(url, "keys", "create", "admin", "--user", "nobody@maison.example")
        assert refused.exit_code == 2
        assert "--user 'nobody@maison.example': no active user" in refused.output
        wrong = run(url, "keys", "create", "write", "--name", "shop", "--scope", "customers:read")
        assert wrong.exit_code == 2 and "only an admin key is limited to scopes" in wrong.output
        assert list_keys(db) == []
        made = run(
            url,
            "keys",
            "create",
            "admin",
            "--user",
            "Owner@Maison.example",
            "--scope",
            "customers:read",
        )
        assert made.exit_code == 0, made.output
        (key,) = list_keys(db)
        with db.read() as conn:
            owner = accounts.user_by_email(conn, "owner@maison.example")
            (entry,) = [e for e in accounts.entries(conn) if e.action == "key.created"]
        assert owner is not None
        assert (key.kind, key.name, key.user_id, key.scopes) == (
            "admin",
            "owner@maison.example",
            owner.id,
            ("customers:read",),
        )
        assert entry.target == f"key:{key.id}" and entry.user_id is None
        assert entry.after == {
            "by": "the command line",
            "kind": "admin",
            "name": "owner@maison.example",
            "scopes": ["customers:read"],
            "user": "owner@maison.example",
        }
    finally:
        db.dispose()


def test_a_wrong_setting_stops_with_a_message_naming_it(tmp_path: Path) -> None:
    result = runner.invoke(app, ["migrate"], env={"PARCOURS_PORT": "eighty"})
    assert result.exit_code == 2
    assert "PARCOURS_PORT" in result.output and "whole number" in result.output
    config = tmp_path / "parcours.toml"
    config.write_text('default_region = "ZZ"\n')
    result = runner.invoke(app, ["migrate"], env={"PARCOURS_CONFIG": str(config)})
    assert result.exit_code == 2
    assert "default_region" in result.output


def test_migrate_brings_a_new_database_to_the_latest_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = runner.invoke(app, ["migrate"], env={"PARCOURS_DATABASE_URL": url})
    assert result.exit_code == 0
    assert f"at migration {head_revision()}" in result.output
    db = Database(url)
    migrate(db)  # a second run is harmless
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar_one() == 0
    db.dispose()


# ---- one data directory; no database made as a side effect ----------------------------


def environment_without_settings(**extra: str) -> dict[str, str]:
    """This process's environment without any Parcours setting, plus `extra`."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
    return {**kept, **extra}


COMMANDS_NEEDING_A_DATABASE = [
    ["keys", "list"],
    ["keys", "create", "admin", "--name", "ana"],
    ["keys", "revoke", "1"],
    ["customers", "export", "ana@example.com"],
    ["customers", "erase", "ana@example.com", "--yes"],
    ["import", "events", "{events}"],
]


@pytest.mark.parametrize("command", COMMANDS_NEEDING_A_DATABASE, ids=" ".join)
def test_a_command_pointed_at_no_database_says_so_and_creates_none(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    file = tmp_path / "events.jsonl"
    write_lines(file, [viewed(1)])
    arguments = [part.replace("{events}", str(file)) for part in command]
    for key in [k for k in os.environ if k.startswith("PARCOURS_")]:
        monkeypatch.delenv(key)
    result = runner.invoke(app, arguments, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "No Parcours database in parcours-data/" in result.output
    assert f"{tmp_path / 'parcours-data' / 'parcours.db'} does not exist" in result.output
    assert "Create it with `parcours migrate`" in result.output
    assert not (tmp_path / "parcours-data").exists()
    # Pointed elsewhere, the message names that directory and the command that makes it.
    other = tmp_path / "elsewhere"
    result = runner.invoke(app, [*arguments, "--data-dir", str(other)], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert f"No Parcours database in {other}/" in result.output
    assert f"`parcours migrate --data-dir {other}`" in result.output
    assert not other.exists()


def test_a_database_without_parcours_tables_is_named_and_left_alone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    (tmp_path / "empty.db").touch()
    result = run(url, "keys", "list")
    assert result.exit_code == 2
    assert f"{tmp_path / 'empty.db'} is not a Parcours database (it has no tables)" in (
        result.output
    )
    assert "parcours migrate" in result.output
    assert (tmp_path / "empty.db").stat().st_size == 0


def test_an_earlier_demo_database_is_pointed_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("PARCOURS_")]:
        monkeypatch.delenv(key)
    old = Database(f"sqlite:///{tmp_path / 'parcours-demo' / 'parcours.db'}")
    migrate(old)
    old.dispose()
    result = runner.invoke(app, ["keys", "list"], catch_exceptions=False)
    assert result.exit_code == 2
    assert "add --data-dir parcours-demo" in result.output
    listed = runner.invoke(app, ["keys", "list", "--data-dir", "parcours-demo"])
    assert listed.exit_code == 0, listed.output


def test_keys_list_on_an_unreachable_database_says_so_without_a_traceback() -> None:
    closed_port = "postgresql://parcours:hunter22@127.0.0.1:9/parcours"
    result = run(closed_port, "keys", "list")
    assert result.exit_code == 1
    assert result.output.startswith(
        "Cannot use the database at postgresql://parcours:***@127.0.0.1:9/parcours: "
    )
    assert "Traceback" not in result.output and "hunter22" not in result.output


def test_a_wrong_channel_setting_is_a_message_not_a_traceback(url: str, tmp_path: Path) -> None:
    config = tmp_path / "parcours.toml"
    config.write_text('[channels.email]\nprovider = "smtp"\n')
    file = tmp_path / "events.jsonl"
    write_lines(file, [viewed(1)])
    env = {"PARCOURS_CONFIG": str(config), "PARCOURS_DATABASE_URL": url}
    result = runner.invoke(app, ["import", "events", str(file)], env=env, catch_exceptions=False)
    assert result.exit_code == 2
    assert result.output == "Configuration error: channels.email.host is required\n"


@pytest.mark.processes
def test_keys_made_for_the_demo_open_the_demo(tmp_path: Path) -> None:
    """`parcours demo`, then `parcours keys create admin` with no option, as a newcomer
    types them: the key is the demo's."""
    port = free_port()
    env = environment_without_settings(PARCOURS_LOG_LEVEL="warning")
    parcours = str(Path(sys.executable).parent / "parcours")
    demo = subprocess.Popen(
        [parcours, "demo", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until_serving(demo, f"http://127.0.0.1:{port}")
        created = subprocess.run(
            [parcours, "keys", "create", "admin", "--name", "newcomer"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        key = created.stdout.strip()
        answer = httpx.get(
            f"http://127.0.0.1:{port}/api/customers/camille@example.com",
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["traits"]["first_name"] == "Camille"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["parcours-data"]
    finally:
        demo.send_signal(signal.SIGTERM)
        status = demo.wait(60)
        errors = demo.stderr.read().decode(errors="replace") if demo.stderr else ""
    assert status == 0, errors[-3000:]


# ---- import: its position is the database's, its progress is shown ---------------------


def test_an_import_into_another_database_starts_from_the_first_line(
    url: str, tmp_path: Path
) -> None:
    file = tmp_path / "events.jsonl"
    write_lines(file, [viewed(n) for n in range(30)])
    assert run(url, "import", "events", str(file)).exit_code == 0
    other = f"sqlite:///{tmp_path / 'other' / 'parcours.db'}"
    assert run(other, "migrate").exit_code == 0
    result = run(other, "import", "events", str(file))
    assert "30 events stored, 0 already present, 0 lines rejected." in result.output
    assert count(other, events) == 30
    # ... and the first database's position is still its own.
    again = run(url, "import", "events", str(file))
    assert "0 events stored, 0 already present, 0 lines rejected, resumed after line 30" in (
        again.output
    )


def test_a_file_changed_since_its_import_stopped_is_read_again(url: str, tmp_path: Path) -> None:
    file = tmp_path / "events.jsonl"
    write_lines(file, [viewed(n) for n in range(20)])
    assert run(url, "import", "events", str(file)).exit_code == 0
    file.write_text("")  # another file of the same name, longer than the first
    write_lines(file, [viewed(n) for n in range(100, 125)])
    result = run(url, "import", "events", str(file))
    assert f"{file} changed since its import stopped at line 20" in result.output
    assert "25 events stored, 0 already present, 0 lines rejected." in result.output
    assert position(url, file) == 25


def test_import_shows_a_progress_bar_with_rate_and_time_left(url: str, tmp_path: Path) -> None:
    from io import StringIO

    from rich.console import Console

    file = tmp_path / "events.jsonl"
    write_lines(file, [viewed(n) for n in range(2500)])
    screen = StringIO()
    console = Console(file=screen, force_terminal=True, width=160, color_system=None)
    services = Services.open(Settings(data_dir=tmp_path / "data", database_url=url))
    try:
        report = import_file(services.db, services.writer, services.clock, file, console=console)
    finally:
        services.close()
    assert report.stored == 2500
    shown = screen.getvalue()
    assert "importing events.jsonl" in shown
    assert "100%" in shown
    assert re.search(r"[\d,]+ lines/s eta \d+:\d\d:\d\d", shown), shown[-500:]
    assert "━" in shown  # the bar


# ---- messages are printed as they are ----------------------------------------------------


def test_messages_keep_text_in_square_brackets(url: str, tmp_path: Path) -> None:
    result = run(url, "customers", "export", "[channels.email]")
    assert result.exit_code == 1
    assert "'[channels.email]'" in result.output
    journey = tmp_path / "[channels.email].yaml"
    journey.write_text("id: x\nname: y\nentry: {event: A}\nsteps:\n  - send: {channel: email}\n")
    result = run(url, "journeys", "validate", str(journey))
    assert result.exit_code == 1
    assert f"{journey}:line 5: steps[0].send.template: is required" in result.output


# ---- files only their owner reads -------------------------------------------------------


@pytest.mark.processes
def test_serve_creates_its_files_readable_by_their_owner_only(tmp_path: Path) -> None:
    """A real start: the data directory, the database, its WAL and shared-memory files and
    the first keys are the owner's alone."""
    port = free_port()
    data = tmp_path / "nested" / "data"
    env = environment_without_settings(PARCOURS_LOG_LEVEL="warning")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "parcours"),
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until_serving(server, f"http://127.0.0.1:{port}")
        modes = {
            path.name: oct(path.stat().st_mode & 0o777) for path in [data, *sorted(data.iterdir())]
        }
        # No owner yet: the one-time setup link, in a file (the output is not a terminal).
        link = (data / "setup-link.txt").read_text().strip()
        assert link.startswith(f"http://127.0.0.1:{port}/console/join?token=")
        setup_page = httpx.get(link)
        assert setup_page.status_code == 200
        assert "Create the owner" in setup_page.text
    finally:
        server.send_signal(signal.SIGTERM)
        status = server.wait(60)
        errors = server.stderr.read().decode(errors="replace") if server.stderr else ""
    assert status == 0, errors[-3000:]
    assert modes == {
        "data": "0o700",
        "first-keys.txt": "0o600",
        "parcours.db": "0o600",
        "parcours.db-shm": "0o600",
        "parcours.db-wal": "0o600",
        "parcours.db-writer.lock": "0o600",
        "setup-link.txt": "0o600",
    }


def test_an_export_file_and_the_first_keys_file_are_the_owners_alone(
    url: str, tmp_path: Path
) -> None:
    _seed_person(url, tmp_path)
    output = tmp_path / "export.json"
    output.write_text("")
    output.chmod(0o644)  # there before, readable by all: rewritten for its owner only
    assert run(url, "customers", "export", "erin", "--output", str(output)).exit_code == 0
    assert oct(output.stat().st_mode & 0o777) == "0o600"
    from parcours.cli import write_private

    keys = tmp_path / "first-keys.txt"
    keys.write_text("old")
    keys.chmod(0o644)
    write_private(keys, "write key: k\n")
    assert (oct(keys.stat().st_mode & 0o777), keys.read_text()) == ("0o600", "write key: k\n")


def test_a_database_others_can_read_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Files made before (or by hand) keep their mode; serve, demo and worker say so."""
    from parcours.cli import _warn_if_readable_by_others

    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o755)
    file = data / "parcours.db"
    migrate_and_close(f"sqlite:///{file}")
    file.chmod(0o644)
    with caplog.at_level("WARNING", logger="parcours.cli"):
        _warn_if_readable_by_others(Settings(data_dir=data))
    said = "is readable by other users (mode {}) and holds secrets and personal data: chmod"
    assert [record.getMessage() for record in caplog.records] == [
        f"{data} {said.format('0755')} 700 {data}",
        f"{file} {said.format('0644')} 600 {file}",
    ]
    caplog.clear()
    data.chmod(0o700)
    file.chmod(0o600)
    _warn_if_readable_by_others(Settings(data_dir=data))
    assert caplog.records == []


def migrate_and_close(url: str) -> None:
    db = Database(url)
    migrate(db)
    db.dispose()


# ---- CSV imports: shipments and the catalog (docs/commerce.md) ---------------------------

SCANS = (
    "shipment_id,order_id,status,occurred_at,carrier,tracking_number\n"
    "s-1,o-1,in_transit,2026-03-02T08:00:00Z,DHL,JD01\n"
    "s-1,o-1,delivered,2026-03-04T15:00:00Z,DHL,JD01\n"
    "s-2,o-1,out_for_delivery,2026-03-03T09:00:00Z,Colissimo,6A01\n"
)


def read(url: str, query: Any) -> Any:
    db = Database(url)
    try:
        with db.read() as conn:
            return query(conn)
    finally:
        db.dispose()


def order_placed(url: str, tmp_path: Path) -> None:
    file = tmp_path / "orders.ndjson"
    write_lines(
        file,
        [
            {
                "type": "track",
                "messageId": "order-1",
                "userId": "ana",
                "event": "Order Completed",
                "timestamp": "2026-03-01T10:00:00Z",
                "properties": {"order_id": "o-1", "currency": "EUR", "total": 40},
            }
        ],
    )
    assert run(url, "import", "events", str(file)).exit_code == 0


def test_a_shipments_csv_puts_the_parcels_on_their_order_once(url: str, tmp_path: Path) -> None:
    order_placed(url, tmp_path)
    file = tmp_path / "scans.csv"
    file.write_text(SCANS, encoding="utf-8")

    first = run(url, "import", "shipments", str(file))
    assert first.exit_code == 0, first.output
    assert "3 lines read, 3 events stored, 0 already present, 0 lines rejected." in first.output
    parcels = read(url, lambda c: commerce.shipments_of_order(c, "o-1"))
    assert [(p.shipment_id, p.status, p.carrier, len(p.scans)) for p in parcels] == [
        ("s-1", "delivered", "DHL", 2),
        ("s-2", "out_for_delivery", "Colissimo", 1),
    ]
    assert all(p.order_known and p.customer_id is not None for p in parcels)

    stored = count(url, events)
    again = run(url, "import", "shipments", str(file))
    assert again.exit_code == 0, again.output
    assert "3 lines read, 0 events stored, 3 already present, 0 lines rejected." in again.output
    assert count(url, events) == stored


def test_a_catalog_csv_makes_products_and_variants_with_their_stock(
    url: str, tmp_path: Path
) -> None:
    file = tmp_path / "catalog.csv"
    file.write_text(
        "product_id,name,category,variant_id,sku,variant,price,currency,stock\n"
        "p-1,Linen shirt,shirts,v-1,SH-S,S,49.90,EUR,3\n"
        "p-1,Linen shirt,shirts,v-2,SH-M,M,49.90,EUR,0\n"
        '"p-2","Mug, large",kitchen,,,,12,EUR,8\n',
        encoding="utf-8",
    )
    first = run(url, "import", "catalog", str(file))
    assert first.exit_code == 0, first.output
    assert "3 lines read, 3 events stored" in first.output

    shirt = read(url, lambda c: commerce.product(c, "p-1"))
    mug = read(url, lambda c: commerce.product(c, "p-2"))
    assert shirt is not None and mug is not None
    assert (shirt.name, shirt.category, shirt.stock) == ("Linen shirt", "shirts", 3)
    assert sorted((v.variant_id, v.sku, v.stock) for v in shirt.variants) == [
        ("v-1", "SH-S", 3),
        ("v-2", "SH-M", 0),
    ]
    assert (mug.name, mug.stock) == ("Mug, large", 8)

    again = run(url, "import", "catalog", str(file))
    assert "0 events stored, 3 already present" in again.output


def test_a_bad_csv_line_is_named_by_line_and_column_and_the_others_are_stored(
    url: str, tmp_path: Path
) -> None:
    file = tmp_path / "scans.csv"
    file.write_text(
        SCANS
        + "s-3,o-1,lost,2026-03-05T10:00:00Z,,\n"
        + "\n"
        + "s-4,o-1,delivered,yesterday,,\n"
        + "s-5,,delivered,2026-03-05T10:00:00Z,,\n",
        encoding="utf-8",
    )
    result = run(url, "import", "shipments", str(file))
    assert result.exit_code == 1
    assert "line 5: column status: status 'lost' is not one of" in result.output
    assert "line 7: column occurred_at: occurred_at must be an ISO 8601 time" in result.output
    assert "line 8: column order_id: order_id is required" in result.output
    assert "6 lines read, 3 events stored, 0 already present, 3 lines rejected." in result.output

    catalog = tmp_path / "catalog.csv"
    catalog.write_text(
        "product_id,name,price,currency,stock\np-1,Mug,12,EUR,lots\np-2,Cup,3,,1\n",
        encoding="utf-8",
    )
    result = run(url, "import", "catalog", str(catalog))
    assert result.exit_code == 1
    assert "line 2: column stock: stock must be a number, got 'lots'" in result.output
    assert "line 3: column currency: a price needs its currency" in result.output
    assert read(url, lambda c: commerce.product(c, "p-1")) is None


def test_a_csv_header_the_import_cannot_take_imports_nothing(url: str, tmp_path: Path) -> None:
    file = tmp_path / "catalog.csv"
    file.write_text("product_id,name,colour\np-1,Mug,red\n", encoding="utf-8")
    result = run(url, "import", "catalog", str(file))
    assert result.exit_code == 2
    assert "line 1: unknown column 'colour'" in result.output
    assert "stopped there, after 0 lines read and 0 events stored" in result.output
    scans = tmp_path / "scans.csv"
    scans.write_text("shipment_id,order_id,occurred_at\ns-1,o-1,2026-03-02T08:00:00Z\n")
    result = run(url, "import", "shipments", str(scans))
    assert result.exit_code == 2
    assert "line 1: the header lacks status" in result.output
    latin = tmp_path / "latin-1.csv"
    latin.write_bytes("product_id;name\np-1;Bol à café\n".encode("latin-1"))
    result = run(url, "import", "catalog", str(latin))
    assert result.exit_code == 2
    assert "not UTF-8" in result.output
    assert count(url, events) == 0


def test_a_french_catalog_export_reads_decimal_commas_and_spaced_thousands(
    url: str, tmp_path: Path
) -> None:
    file = tmp_path / "catalogue.csv"
    file.write_bytes(
        "\ufeffproduct_id;name;price;currency;stock;usage_days\r\n"
        "p-1;Crème, pot de 50 ml;12,50;EUR;1\u202f234;30\r\n"
        "p-2;Coffret;1 049,9;EUR;2;\r\n"
        "p-3;Savon;3;EUR;12,5;\r\n".encode()
    )
    result = run(url, "import", "catalog", str(file))
    assert result.exit_code == 1
    assert "line 4: column stock: stock must be a whole number, got 12.5" in result.output
    assert "3 lines read, 2 events stored" in result.output
    cream = read(url, lambda c: commerce.product(c, "p-1"))
    box = read(url, lambda c: commerce.product(c, "p-2"))
    assert cream is not None and box is not None
    assert (cream.name, cream.stock, cream.usage_days) == ("Crème, pot de 50 ml", 1234, 30)
    assert [v.prices for v in cream.variants] == [{"EUR": Decimal("12.50")}]
    assert [v.prices for v in box.variants] == [{"EUR": Decimal("1049.9")}]

    # Separated by commas, a comma in a number is ambiguous (1,234): refused, saying why.
    english = tmp_path / "catalog.csv"
    english.write_text('product_id,name,price,currency\np-9,Mug,"12,50",EUR\n')
    result = run(url, "import", "catalog", str(english))
    assert result.exit_code == 1
    assert "line 2: column price: price '12,50' has a comma" in result.output
    assert read(url, lambda c: commerce.product(c, "p-9")) is None


def test_a_french_spreadsheet_export_with_semicolons_and_a_bom(url: str, tmp_path: Path) -> None:
    order_placed(url, tmp_path)
    file = tmp_path / "expéditions.csv"
    file.write_bytes(
        "\ufeffshipment_id;order_id;status;occurred_at;location\r\n"
        "s-1;o-1;in_transit;2026-03-02T08:00:00+01:00;Lyon, plateforme\r\n".encode()
    )
    result = run(url, "import", "shipments", str(file))
    assert result.exit_code == 0, result.output
    assert "1 lines read, 1 events stored" in result.output
    parcels = read(url, lambda c: commerce.shipments_of_order(c, "o-1"))
    assert [(p.shipment_id, p.status) for p in parcels] == [("s-1", "in_transit")]
    assert parcels[0].scans[0].location == "Lyon, plateforme"

    catalog = tmp_path / "catalogue.csv"
    catalog.write_bytes(
        "\ufeffproduct_id;name;price;currency;stock\r\np-1;Bol à café;12.5;EUR;4\r\n"
        "p-2;Théière;12,5;EUR;4\r\n".encode()
    )
    result = run(url, "import", "catalog", str(catalog))
    bowl = read(url, lambda c: commerce.product(c, "p-1"))
    assert bowl is not None and (bowl.name, bowl.stock) == ("Bol à café", 4)
    # the spreadsheet's decimal comma beside a point: both read
    assert "2 lines read, 2 events stored" in result.output
    teapot = read(url, lambda c: commerce.product(c, "p-2"))
    assert teapot is not None and [v.prices for v in teapot.variants] == [{"EUR": Decimal("12.5")}]
