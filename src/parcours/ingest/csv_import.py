"""Bulk import of CSV files: shipment scans (`ingest/carriers.py`'s mapping) and a
catalog (`commerce.import_event`), read a line at a time and appended in chunks through
the same door as the JSON-lines import (docs/commerce.md).

UTF-8 with or without a byte order mark; the separator is the header's: a semicolon when
it has more of them than commas (a French spreadsheet's export), else a comma. A file
separated by semicolons writes its numbers as that spreadsheet does: a decimal comma, and
spaces between thousands (`1 234,50`); in a file separated by commas a number is written
with a point (`1,234` could be either there, so a comma in a number is refused). Like the
JSON-lines import, a bad line is reported (its number, the header being line 1, and its
column) and skipped, and the others are stored: each chunk is one transaction of lines
that all mapped. Each line's message id is made of its content, so the same file imported
again stores nothing twice.
"""

from __future__ import annotations

import csv
import itertools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO

import msgspec

from parcours import commerce
from parcours.ingest.bulk import CHUNK_EVENTS, ImportReport, commit_chunk
from parcours.ingest.carriers import CarrierError, check_csv_header, shipment_from_row
from parcours.tracking import EventError, parse_event

if TYPE_CHECKING:
    from parcours.log import Appender, Event
    from parcours.runtime.clock import Clock

Kind = Literal["shipments", "catalog"]
NUMBER_COLUMNS = ("price", "stock", "usage_days")  # the catalog's numbers


class CsvFileError(ValueError):
    """A file the import cannot read on: a header it cannot take (nothing is read after
    it), bytes that are not UTF-8, a quote never closed. `report`: what was stored before
    (whole chunks; the chunk being read is not)."""

    def __init__(self, message: str, report: ImportReport) -> None:
        super().__init__(message)
        self.report = report


def import_csv(appender: Appender, clock: Clock, file: Path, kind: Kind) -> ImportReport:
    """Import `file` (a CSV of `kind`) through `appender`, a chunk of lines at a time; a
    line skipped is reported with its column: `column status: ...`."""
    report = ImportReport()
    with file.open(encoding="utf-8-sig", newline="") as handle:
        try:
            _read(appender, clock, handle, kind, report)
        except UnicodeDecodeError as exc:
            raise CsvFileError(f"not UTF-8 ({exc.reason})", report) from None
        except _Unreadable as exc:
            raise CsvFileError(str(exc), report) from None
    return report


class _Unreadable(ValueError):
    pass


def _read(
    appender: Appender, clock: Clock, handle: TextIO, kind: Kind, report: ImportReport
) -> None:
    header_line = handle.readline()
    delimiter = ";" if header_line.count(";") > header_line.count(",") else ","
    reader = csv.reader(itertools.chain([header_line], handle), delimiter=delimiter)
    header = [name.strip() for name in next(reader, [])]
    to_event = _mapping(kind, header, clock.now_ms(), decimal_comma=delimiter == ";")
    chunk: list[Event] = []
    for number, cells in _lines(reader):
        report.read += 1
        try:
            if len(cells) > len(header):
                raise _Refused(f"{len(cells)} cells, the header has {len(header)}", "")
            row = {name: cells[i] if i < len(cells) else None for i, name in enumerate(header)}
            chunk.append(to_event(row))
        except _Refused as exc:
            where = f"column {exc.column}: " if exc.column else ""
            report.rejected.append((number, f"{where}{exc}"))
        if len(chunk) >= CHUNK_EVENTS:
            commit_chunk(appender, chunk, report)
            chunk = []
    commit_chunk(appender, chunk, report)


class _Refused(ValueError):
    def __init__(self, message: str, column: str) -> None:
        super().__init__(message)
        self.column = column


def _lines(reader: Iterator[list[str]]) -> Iterator[tuple[int, list[str]]]:
    """Each record with the number of the line it starts on; blank lines aside."""
    line_num = getattr(reader, "line_num", 0)
    while True:
        start = line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # an unclosed quote: the rest of the file is one cell
            raise _Unreadable(f"line {start}: {exc}") from None
        line_num = getattr(reader, "line_num", start)
        if any(cell.strip() for cell in cells):
            yield start, cells


# A number as a French spreadsheet writes it: spaces (or the no-break ones) between
# thousands, a decimal comma.
_COMMA_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:[ \u00a0\u202f]\d{3})+|\d+)(?:,\d+)?")
_THOUSANDS = re.compile(r"[ \u00a0\u202f]")


def _mapping(
    kind: Kind, header: list[str], now: int, *, decimal_comma: bool
) -> Callable[[dict[str, str | None]], Event]:
    """The function from a line (as a dict) to its event, once the header is checked;
    `decimal_comma`: the catalog's numbers are written with one (module's docstring)."""
    if kind == "shipments":
        try:
            check_csv_header(header)
        except CarrierError as exc:
            raise _Unreadable(str(exc)) from None

        def shipment(row: dict[str, str | None]) -> Event:
            try:
                document = shipment_from_row(row)
                return parse_event(
                    msgspec.json.encode(document),
                    source="import",
                    received_at=now,
                    identity_required=False,
                )
            except CarrierError as exc:
                raise _Refused(str(exc), exc.field) from None
            except EventError as exc:
                raise _Refused(str(exc), "") from None

        return shipment
    try:
        commerce.check_import_header(header)
    except commerce.CatalogImportError as exc:
        raise _Unreadable(f"line 1: {exc.reason}") from None

    def product(row: dict[str, str | None]) -> Event:
        for name in NUMBER_COLUMNS:
            cell = (row.get(name) or "").strip()
            if decimal_comma and _COMMA_NUMBER.fullmatch(cell):
                row[name] = _THOUSANDS.sub("", cell).replace(",", ".")
            elif not decimal_comma and "," in cell:
                raise _Refused(
                    f"{name} {cell[:40]!r} has a comma: in a file separated by commas a "
                    "number is written with a point (12.50); a file separated by "
                    "semicolons may use a decimal comma (12,50)",
                    name,
                )
        try:
            return commerce.import_event(row, now)
        except commerce.CatalogImportError as exc:
            raise _Refused(exc.reason, exc.field) from None

    return product
