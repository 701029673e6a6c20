"""Bulk import of Segment events from a JSON-lines file, resumable.

Where a file's import stopped is kept in the database it imports into (table
`import_positions`, keyed by the file's absolute path), written after each committed chunk,
so a second run into the same database goes on from there, and a run into another database
starts from the first line. A file whose bytes before that point changed (replaced,
rewritten) is read again from its first line. Lines without a messageId get one derived
from their line number and content, so that re-reading a line can never store it twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import msgspec
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from sqlalchemy import select

from parcours.ingest.tables import import_positions
from parcours.log import Appender, Event
from parcours.tracking import EventError, parse_event

if TYPE_CHECKING:
    from parcours.runtime.clock import Clock
    from parcours.runtime.db import Database

CHUNK_EVENTS = 1000
# The digest that recognises a file again: its first and last bytes before the position.
_SAMPLE_BYTES = 65_536


@dataclass
class ImportReport:
    read: int = 0  # lines read by this run, blank ones aside
    stored: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    resumed_after: int = 0
    # Why a saved position was not used (the file changed), or "".
    started_over: str = ""


@dataclass(frozen=True)
class Position:
    byte_offset: int
    line: int
    digest: str


def file_key(file: Path) -> str:
    """What a file's position is kept under: its absolute path."""
    return str(file.resolve())


def saved_position(db: Database, file: Path) -> Position | None:
    """Where the last import of `file` into this database stopped, if it ran."""
    with db.read() as conn:
        row = conn.execute(
            select(
                import_positions.c.byte_offset,
                import_positions.c.line,
                import_positions.c.prefix_sha256,
            ).where(import_positions.c.file == file_key(file))
        ).first()
    return None if row is None else Position(int(row[0]), int(row[1]), str(row[2]))


@dataclass(frozen=True)
class _Into:
    """Where an import goes: the database its position is kept in, the door its events
    take into the log, and the clock that stamps them."""

    db: Database
    appender: Appender
    clock: Clock


def import_file(
    db: Database,
    appender: Appender,
    clock: Clock,
    file: Path,
    *,
    restart: bool = False,
    console: Console | None = None,
) -> ImportReport:
    """Import `file` through `appender`, from where its last import into `db` stopped
    (unless `restart`); `console`: where the progress bar goes (none without)."""
    into = _Into(db, appender, clock)
    report = ImportReport()
    offset, line_number = 0, 0
    size = file.stat().st_size
    with file.open("rb") as handle:
        saved = None if restart else saved_position(into.db, file)
        if saved is not None:
            if saved.byte_offset > size or _digest(handle, saved.byte_offset) != saved.digest:
                report.started_over = (
                    f"{file} changed since its import stopped at line {saved.line}: "
                    "read again from the first line (lines already stored are not stored twice)"
                )
            else:
                offset, line_number = saved.byte_offset, saved.line
                report.resumed_after = line_number
        progress = Progress(
            TextColumn("importing {task.fields[name]}", markup=False),
            BarColumn(),
            TaskProgressColumn(),
            _LinesPerSecond(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=console is None,
        )
        with progress:
            task = progress.add_task(
                "import", total=size, completed=offset, name=file.name, lines=0
            )
            handle.seek(offset)
            chunk: list[Event] = []
            read = 0
            for raw in handle:
                line_number += 1
                read += 1
                offset += len(raw)
                line = raw.strip()
                if line:
                    report.read += 1
                    try:
                        chunk.append(_parse_line(line, line_number, into.clock.now_ms()))
                    except EventError as exc:
                        report.rejected.append((line_number, str(exc)))
                if len(chunk) >= CHUNK_EVENTS:
                    commit_chunk(into.appender, chunk, report)
                    _save(into, file, handle, offset, line_number)
                    progress.update(task, completed=offset, lines=read)
                    chunk = []
            commit_chunk(into.appender, chunk, report)
            _save(into, file, handle, offset, line_number)
            progress.update(task, completed=offset, lines=read)
    return report


class _LinesPerSecond(ProgressColumn):
    """Lines read per second by this run (the bar and the time left go by bytes)."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed
        lines = int(task.fields.get("lines", 0))
        if not elapsed or not lines:
            return Text("- lines/s", style="progress.data.speed")
        return Text(f"{lines / elapsed:,.0f} lines/s", style="progress.data.speed")


def _parse_line(line: bytes, line_number: int, now_ms: int) -> Event:
    event = parse_event(line, source="import", received_at=now_ms)
    if not _has_message_id(line):
        digest = hashlib.sha256(line).hexdigest()[:32]
        event.message_id = f"import:{line_number}:{digest}"
    return event


class _MessageIdOnly(msgspec.Struct):
    messageId: str | None = None


def _has_message_id(line: bytes) -> bool:
    return msgspec.json.decode(line, type=_MessageIdOnly).messageId is not None


def commit_chunk(appender: Appender, chunk: list[Event], report: ImportReport) -> None:
    """Append a chunk of an import's events, in one transaction, and count them."""
    if not chunk:
        return
    result = appender.append_sync(chunk)
    report.stored += result.stored
    report.duplicates += result.duplicates


def _digest(handle: BinaryIO, end: int) -> str:
    """A digest of the file's bytes before `end`: the first and the last 64 KiB of them
    and their length (reading them all again could take minutes on a large file). The
    handle's position is kept."""
    kept = handle.tell()
    digest = hashlib.sha256(str(end).encode())
    handle.seek(0)
    digest.update(handle.read(min(end, _SAMPLE_BYTES)))
    tail = max(0, end - _SAMPLE_BYTES)
    handle.seek(tail)
    digest.update(handle.read(end - tail))
    handle.seek(kept)
    return digest.hexdigest()


def _save(into: _Into, file: Path, handle: BinaryIO, offset: int, line: int) -> None:
    """Keep where the import stands, after the events before it are committed."""
    values = {
        "byte_offset": offset,
        "line": line,
        "prefix_sha256": _digest(handle, offset),
        "updated_at": into.clock.now_ms(),
    }
    key = file_key(file)
    with into.db.write() as conn:
        updated = conn.execute(
            import_positions.update().where(import_positions.c.file == key).values(**values)
        )
        if updated.rowcount == 0:
            conn.execute(import_positions.insert().values(file=key, **values))
