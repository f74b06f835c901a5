"""What a source file is read into: options, batches of rows, bad rows and the one read error.

Shared by `pipeline.read` (which picks a reader), the readers in `pipeline/readers/` and the
stages after them (validate, stage); a reader imports this module, never `pipeline.read`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from errors import PermanentError

FORMATS = ("csv", "tsv", "ndjson", "json", "parquet", "xlsx")


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
    read_ahead: bool = True
    """Parse the next batches in a thread while the caller works on this one; a file of one
    block gains nothing from it and pays a thread start-up."""


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
    note: str | None = None
    """What the reader chose that a person may need to know when the columns do not match
    (xlsx: which sheet of several it read)."""

    def row_numbers(self) -> np.ndarray:
        """The 1-based source row number of every row of `data` (int64)."""
        n = self.data.num_rows
        skipped = np.array(sorted(b.row for b in self.bad_rows if b.row >= self.first_row), dtype=np.int64)
        candidates = np.arange(self.first_row, self.first_row + n + len(skipped), dtype=np.int64)
        if len(skipped):
            candidates = candidates[~np.isin(candidates, skipped)]
        return candidates[:n]
