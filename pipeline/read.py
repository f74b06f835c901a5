"""Read stage: a source file (csv, tsv, ndjson, json, parquet, xlsx, optionally gzipped) → record batches.

Streaming throughout: a reader holds one block of the file at a time, never the whole file.
Every row keeps its 1-based data row number (the first row after the header is row 1), so that
rows the reader cannot split (ragged CSV rows, malformed NDJSON lines) are reported as bad rows
without shifting the numbers of the rows around them.

Errors: a file that cannot be read as a whole raises `SourceError` (a `PermanentError`) whose
message names the file and, when known, the row, line or byte offset. Errors raised by the
stream itself (network, storage) are not translated: they propagate unchanged so that the
caller's retry policy applies.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from errors import PermanentError

FORMATS = ("csv", "tsv", "ndjson", "json", "parquet", "xlsx")

# Failures of the parsing libraries on bad input. Stream (OSError) and programming errors
# (TypeError, AttributeError) are deliberately absent: they are not a property of the file.
_PARSE_ERRORS: tuple[type[Exception], ...] = (
    pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, pa.ArrowKeyError, pa.ArrowIndexError,
    UnicodeError, RecursionError,  # RecursionError: absurdly deep nesting in a JSON file
)


@dataclass(frozen=True)
class SourceOptions:
    """How to read one file; built by the caller from the table definition and the object."""

    format: str
    """csv | tsv | ndjson | json | parquet | xlsx"""
    delimiter: str = ","
    """Field separator (csv/tsv); tsv uses a tab when this is left at ','."""
    quote: str = '"'
    """Quote character; '' disables quoting."""
    header: bool = True
    """False: columns are named col_1..col_n and mapped by position."""
    encoding: str = "utf-8"
    null_markers: tuple[str, ...] = ("",)
    """Unquoted values read as NULL (csv/tsv). A quoted "" is always an empty string."""
    skip_rows: int = 0
    """Rows skipped before the header (csv/tsv/xlsx)."""
    sheet: str | None = None
    """xlsx: the sheet to read; default the first one."""
    gzip: bool = False
    block_size: int = 8 << 20
    """Bytes read per block (csv/tsv/ndjson/json); one batch per block."""
    max_decompressed_bytes: int = 20 << 30
    max_field_bytes: int = 64 << 20
    """Largest single row/field accepted (csv/tsv/ndjson/json)."""


class SourceError(PermanentError):
    """The file as a whole cannot be read; the message says what and where in actionable words."""


@dataclass
class BadRow:
    """A rejected row: its 1-based data row number, why, and its raw values (or raw text)."""

    row: int
    reason: str
    raw: dict[str, Any] | str


@dataclass
class SourceBatch:
    """Consecutive rows of the file as read, before any type conversion.

    Rows are numbered consecutively from `first_row`, skipping the numbers of `bad_rows` (rows
    the reader could not split; they belong to this batch's stretch of the file and may precede
    `first_row`). Use `row_numbers()` rather than redoing that arithmetic.
    """

    columns: list[str]
    data: pa.RecordBatch
    first_row: int
    bad_rows: list[BadRow] = field(default_factory=list)

    def row_numbers(self) -> np.ndarray:
        """The 1-based source row number of every row of `data` (int64)."""
        n = self.data.num_rows
        skipped = np.array(sorted(b.row for b in self.bad_rows if b.row >= self.first_row), dtype=np.int64)
        candidates = np.arange(self.first_row, self.first_row + n + len(skipped), dtype=np.int64)
        if len(skipped):
            candidates = candidates[~np.isin(candidates, skipped)]
        return candidates[:n]


def read_batches(stream: BinaryIO, options: SourceOptions, *, name: str) -> Iterator[SourceBatch]:
    """Stream the file's rows as `SourceBatch`es.

    Args:
        stream: the object's bytes, positioned at its start (seekable is best: parquet and xlsx
            need it and are spooled to a temporary file otherwise; a CSV row longer than
            `block_size` needs it to re-read with larger blocks).
        options: format and parsing options.
        name: the object name, used in error messages.

    Raises:
        SourceError: the file cannot be read (raised eagerly for a bad format, otherwise while
            iterating).
    """
    fmt = (options.format or "").lower()
    if fmt not in FORMATS:
        raise SourceError(f"{name}: unknown format {options.format!r}; use one of {', '.join(FORMATS)}")
    if options.skip_rows < 0:
        raise SourceError(f"{name}: skip_rows must be 0 or more, not {options.skip_rows}")
    options = replace(options, format=fmt)
    return _read_ahead(_translated(_reader(fmt)(stream, options, name), name))


def _reader(fmt: str) -> Any:
    # Imported here: each reader imports this module for the shared types.
    if fmt in ("csv", "tsv"):
        from pipeline.readers.csv import read_csv

        return read_csv
    if fmt in ("ndjson", "json"):
        from pipeline.readers.json import read_json

        return read_json
    if fmt == "parquet":
        from pipeline.readers.parquet import read_parquet

        return read_parquet
    from pipeline.readers.xlsx import read_xlsx

    return read_xlsx


def _translated(batches: Iterator[SourceBatch], name: str) -> Iterator[SourceBatch]:
    """Turn the parsing libraries' leftover errors on bad input into `SourceError`."""
    try:
        yield from batches
    except SourceError:
        raise
    except _PARSE_ERRORS as exc:
        raise SourceError(f"{name}: cannot read the file: {exc}") from exc


_DONE = object()


def _read_ahead(batches: Iterator[SourceBatch], depth: int = 2) -> Iterator[SourceBatch]:
    """Parse the next batches in a thread while the caller validates and writes this one.

    pyarrow parses without the GIL, so reading overlaps the caller's work on a second core.
    Batches and errors arrive in file order, exactly as without the thread. Closing this
    generator (the caller stops early) stops the thread after the batch it is parsing.
    """
    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, re-raised there
            put(exc)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=work, name="caf-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()
