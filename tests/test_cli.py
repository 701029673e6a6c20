"""The command line: import, export, erase, keys, settings errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from parcours.cli import app
from parcours.customers.tables import consents, customer_orders, customers, identities
from parcours.ingest.bulk import checkpoint_path
from parcours.ingest.tables import events
from parcours.runtime.db import Database, head_revision, migrate

runner = CliRunner()


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
    database_url: str, tmp_path: Path
) -> None:
    file = tmp_path / "events.jsonl"
    write_lines(file, [viewed(1), "{not json", viewed(2), {"type": "track", "userId": "x"}, ""])
    result = run(database_url, "import", "events", str(file))
    assert result.exit_code == 1
    assert "line 2: not valid JSON" in result.output
    assert "line 4: event: a track call needs a non-empty event name" in result.output
    assert "2 events stored" in result.output
    assert count(database_url, events) == 2


def test_import_goes_on_from_where_it_stopped(database_url: str, tmp_path: Path) -> None:
    file = tmp_path / "events.jsonl"
    write_lines(file, [viewed(n, with_id=False) for n in range(1500)])
    assert run(database_url, "import", "events", str(file)).exit_code == 0
    assert json.loads(checkpoint_path(file).read_text())["line"] == 1500
    write_lines(file, [viewed(n, with_id=False) for n in range(1500, 1800)])
    second = run(database_url, "import", "events", str(file))
    assert "300 events stored, 0 already present" in second.output
    assert "resumed after line 1500" in second.output
    # Reading everything again stores nothing twice, even lines without a messageId.
    third = run(database_url, "import", "events", str(file), "--restart")
    assert "0 events stored, 1800 already present" in third.output
    assert count(database_url, events) == 1800


@pytest.mark.slow
def test_import_killed_midway_loses_and_duplicates_nothing(
    database_url: str, tmp_path: Path
) -> None:
    file = tmp_path / "big.jsonl"
    write_lines(file, [viewed(n, with_id=False) for n in range(40_000)])
    env = {**os.environ, "PARCOURS_DATABASE_URL": database_url}
    command = [str(Path(sys.executable).parent / "parcours"), "import", "events", str(file)]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while not checkpoint_path(file).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    stopped_at = json.loads(checkpoint_path(file).read_text())["line"]
    assert stopped_at < 40_000, "the import finished before it could be killed"
    result = run(database_url, "import", "events", str(file))
    assert result.exit_code == 0
    assert count(database_url, events) == 40_000


def _seed_person(database_url: str, tmp_path: Path) -> None:
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
    assert run(database_url, "import", "events", str(file)).exit_code == 0


def test_export_holds_everything_about_the_person(database_url: str, tmp_path: Path) -> None:
    _seed_person(database_url, tmp_path)
    output = tmp_path / "export.json"
    result = run(database_url, "customers", "export", "erin@example.com", "--output", str(output))
    assert result.exit_code == 0
    document = json.loads(output.read_text())
    assert document["traits"]["email"] == "Erin@example.com"
    assert {"kind": "phone", "value": "+33601020304"} in document["identities"]
    assert [e["messageId"] for e in document["events"]] == ["p1", "p2"]
    assert document["orders"][0]["order_id"] == "o-9"
    assert document["consent_ledger"][0]["status"] == "granted"


def test_erase_removes_the_person_and_leaves_an_audit_without_personal_data(
    database_url: str, tmp_path: Path
) -> None:
    _seed_person(database_url, tmp_path)
    result = run(database_url, "customers", "erase", "erin", "--yes")
    assert result.exit_code == 0, result.output
    assert "2 events" in result.output
    assert count(database_url, identities) == 2  # only the other person's id and email
    assert count(database_url, consents) == 0
    assert count(database_url, customer_orders) == 0
    assert count(database_url, customers, customers.c.erased_at.is_not(None)) == 1
    db = Database(database_url)
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
    assert run(database_url, "customers", "export", "erin").exit_code == 1


def test_keys_create_list_and_revoke(database_url: str) -> None:
    created = run(database_url, "keys", "create", "write", "--name", "shop")
    assert created.exit_code == 0
    assert created.output.strip().startswith("pc_write_")
    listing = run(database_url, "keys", "list")
    assert "write\tshop" in listing.output
    assert run(database_url, "keys", "revoke", "1").exit_code == 0
    assert "revoked" in run(database_url, "keys", "list").output
    assert run(database_url, "keys", "revoke", "1").exit_code == 1


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
