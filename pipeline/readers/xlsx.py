"""XLSX reader: one sheet (named, or the first), cell values as Arrow arrays, sheet-based row numbers.

openpyxl in read-only mode streams the sheet's XML row by row. Cached formula results are read
(data_only), never the formulas. Row numbers follow the sheet: data row 1 is the sheet row just
below the header, so "row 7" is found by counting down from the header in Excel. Empty rows are
skipped (trailing ones simply end the data), and a batch never spans a gap, so its rows stay
consecutively numbered.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import zipfile
from collections.abc import Iterator
from typing import Any, BinaryIO
from xml.etree.ElementTree import ParseError

import pyarrow as pa

from pipeline.readers.columns import as_text, column
from pipeline.readers.streams import seekable
from pipeline.source import BadRow, SourceBatch, SourceError, SourceOptions

BATCH_ROWS = 50_000
log = logging.getLogger("caf.ingest")


def read_xlsx(stream: BinaryIO, options: SourceOptions, name: str) -> Iterator[SourceBatch]:
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    bad_file = (zipfile.BadZipFile, InvalidFileException, KeyError, ValueError, ParseError, EOFError)
    with seekable(stream, options, name) as source:
        try:
            book = load_workbook(source, read_only=True, data_only=True)
        except bad_file as exc:
            raise SourceError(f"{name}: not a valid xlsx workbook: {exc}") from exc
        try:
            names = book.sheetnames
            if options.sheet is None:
                if not book.worksheets:
                    raise SourceError(f"{name}: the workbook has no worksheet")
                sheet = book.worksheets[0]
            elif options.sheet in names:
                sheet = book[options.sheet]
            else:
                raise SourceError(f"{name}: no sheet named {options.sheet!r}; the workbook has: "
                                  + ", ".join(repr(n) for n in names))
            note = None
            if len(names) > 1:
                how = ("set by sheet:" if options.sheet
                       else "the first; set sheet: in the table definition to read another")
                note = f"read sheet {sheet.title!r} ({how}); the workbook has: " + ", ".join(repr(n) for n in names)
                log.info("%s: reading sheet %r of %s", name, sheet.title, len(names))
            for batch in _sheet_batches(sheet.iter_rows(values_only=True), options, name):
                batch.note = note
                yield batch
        except bad_file as exc:
            raise SourceError(f"{name}: the xlsx workbook is corrupt: {exc}") from exc
        finally:
            book.close()


def _sheet_batches(rows: Iterator[tuple[Any, ...]], options: SourceOptions, name: str) -> Iterator[SourceBatch]:
    sheet_row = 0
    for _ in range(options.skip_rows):
        if next(rows, None) is None:
            raise SourceError(f"{name}: the sheet has fewer than {options.skip_rows} rows to skip (skip_rows)")
        sheet_row += 1
    columns: list[str] | None = None
    origin = sheet_row  # data row = sheet row - origin
    if options.header:
        for values in rows:
            sheet_row += 1
            if not _empty(values):
                header = _trim(values)
                columns = [_name(v, i) for i, v in enumerate(header)]
                origin = sheet_row
                break
        if columns is None:
            raise SourceError(f"{name}: the sheet has no header row")
    pending: _Pending | None = None
    yielded = False
    for values in rows:
        sheet_row += 1
        if _empty(values):
            if pending is not None:
                yielded = True
                yield pending.batch()
                pending = None
            continue
        if columns is None:  # no header: the first data row sets the width
            columns = [f"col_{i + 1}" for i in range(len(_trim(values)))]
        if pending is None:
            pending = _Pending(columns, sheet_row - origin)
        pending.add(values, sheet_row - origin)
        if len(pending.rows) >= BATCH_ROWS:
            yielded = True
            yield pending.batch()
            pending = None
    if pending is not None:
        yield pending.batch()
    elif columns is not None and not yielded:  # header only: still report the columns
        yield _Pending(columns, 1).batch()


class _Pending:
    """Rows gathered for one batch: consecutive sheet rows, ragged ones set aside as bad rows."""

    def __init__(self, columns: list[str], first_row: int) -> None:
        self.columns = columns
        self.first_row = first_row
        self.rows: list[tuple[Any, ...]] = []
        self.bad: list[BadRow] = []

    def add(self, values: tuple[Any, ...], row: int) -> None:
        width = len(self.columns)
        used = len(_trim(values))
        if used > width:
            raw = json.dumps([as_text(v, _text) for v in values[:used]], ensure_ascii=False)
            self.bad.append(BadRow(row, f"expected {width} fields, got {used}", raw))
            if row == self.first_row:
                self.first_row += 1
            return
        self.rows.append(tuple(values[:width]) + (None,) * (width - len(values)))

    def batch(self) -> SourceBatch:
        cells = list(zip(*self.rows, strict=True)) if self.rows else [() for _ in self.columns]
        arrays = [column(list(c), _text) for c in cells]
        data = pa.RecordBatch.from_arrays(arrays, names=self.columns)
        return SourceBatch(columns=list(self.columns), data=data, first_row=self.first_row, bad_rows=self.bad)


def _text(value: Any) -> str:
    """A cell as text, when its column mixes kinds (the validate stage then types the text)."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value)


def _empty(values: tuple[Any, ...]) -> bool:
    return all(v is None or v == "" for v in values)


def _trim(values: tuple[Any, ...]) -> tuple[Any, ...]:
    end = len(values)
    while end and (values[end - 1] is None or values[end - 1] == ""):
        end -= 1
    return values[:end]


def _name(value: Any, index: int) -> str:
    text = as_text(value, _text)
    return text.strip() if text and text.strip() else f"col_{index + 1}"
