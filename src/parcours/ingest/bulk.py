"""Bulk import of Segment events from a JSON-lines file, resumable.

The position of the last committed line is saved beside the file
(`FILE.parcours-import.json`) after each committed chunk, so a second run goes on from
there. Lines without a messageId get one derived from their line number and content, so
that re-reading a line can never store it twice.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from parcours.ingest.model import Event, EventError, parse_event

if TYPE_CHECKING:
    from parcours.services import Services

CHUNK_EVENTS = 1000


@dataclass
class ImportReport:
    stored: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    resumed_after: int = 0


def checkpoint_path(file: Path) -> Path:
    return file.with_name(file.name + ".parcours-import.json")


def import_file(
    services: Services, file: Path, *, restart: bool = False, console: Console | None = None
) -> ImportReport:
    report = ImportReport()
    checkpoint = checkpoint_path(file)
    offset, line_number = 0, 0
    if checkpoint.exists() and not restart:
        saved = json.loads(checkpoint.read_text(encoding="utf-8"))
        offset, line_number = int(saved["offset"]), int(saved["line"])
        report.resumed_after = line_number
    size = file.stat().st_size
    progress = Progress(
        TextColumn("importing {task.fields[name]}"),
        BarColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=console is None,
    )
    with progress, file.open("rb") as handle:
        task = progress.add_task("import", total=size, completed=offset, name=file.name)
        handle.seek(offset)
        chunk: list[Event] = []
        for raw in handle:
            line_number += 1
            offset += len(raw)
            line = raw.strip()
            if line:
                try:
                    chunk.append(_parse_line(line, line_number, services.clock.now_ms()))
                except EventError as exc:
                    report.rejected.append((line_number, str(exc)))
            if len(chunk) >= CHUNK_EVENTS:
                _commit(services, chunk, report)
                _save(checkpoint, offset, line_number)
                progress.update(task, completed=offset)
                chunk = []
        _commit(services, chunk, report)
        _save(checkpoint, offset, line_number)
        progress.update(task, completed=offset)
    return report


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


def _commit(services: Services, chunk: list[Event], report: ImportReport) -> None:
    if not chunk:
        return
    result = services.writer.append_sync(chunk)
    report.stored += result.stored
    report.duplicates += result.duplicates


def _save(checkpoint: Path, offset: int, line_number: int) -> None:
    temporary = checkpoint.with_suffix(".tmp")
    temporary.write_text(json.dumps({"offset": offset, "line": line_number}), encoding="utf-8")
    temporary.replace(checkpoint)
