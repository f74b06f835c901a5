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
from collections.abc import Generator, Iterator
from dataclasses import replace
from typing import Any, BinaryIO, TypeVar

import pyarrow as pa

from pipeline.source import FORMATS, SourceBatch, SourceError, SourceOptions

# Failures of the parsing libraries on bad input. Stream (OSError) and programming errors
# (TypeError, AttributeError) are deliberately absent: they are not a property of the file.
_PARSE_ERRORS: tuple[type[Exception], ...] = (
    pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, pa.ArrowKeyError, pa.ArrowIndexError,
    UnicodeError, RecursionError,  # RecursionError: absurdly deep nesting in a JSON file
)


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
    batches = _translated(_reader(fmt)(stream, options, name), name)
    return read_ahead(batches) if options.read_ahead else batches


def _reader(fmt: str) -> Any:
    # Imported here: a cold start pays only for the reader of the file's format.
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
T = TypeVar("T")


def read_ahead(batches: Iterator[T], depth: int = 2) -> Generator[T, None, None]:
    """Parse the next batches in a thread while the caller validates and writes this one.

    pyarrow parses without the GIL, so reading overlaps the caller's work on a second core.
    Batches and errors arrive in file order, exactly as without the thread. Closing this
    generator (the caller stops early) stops the thread after the batch it is parsing.
    (Generic: the stage step runs its validation ahead of the Parquet writer the same way.)
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
