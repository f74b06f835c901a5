"""Parquet reader: record batches straight from the file, types as stored (validate casts them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.readers.streams import seekable
from pipeline.source import SourceBatch, SourceError, SourceOptions

BATCH_ROWS = 65_536
_ARROW = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, pa.ArrowKeyError, pa.ArrowIndexError)


def read_parquet(stream: BinaryIO, options: SourceOptions, name: str) -> Iterator[SourceBatch]:
    with seekable(stream, options, name) as source:
        try:
            parquet = pq.ParquetFile(source)
        except Exception as exc:
            if _corrupt(exc):
                raise SourceError(f"{name}: not a valid Parquet file: {exc}") from exc
            raise
        columns = list(parquet.schema_arrow.names)
        row = 1
        try:
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
                yield SourceBatch(columns=list(columns), data=batch, first_row=row, bad_rows=[])
                row += batch.num_rows
        except Exception as exc:
            if _corrupt(exc):
                raise SourceError(f"{name}: Parquet file is corrupt near row {row}: {exc}") from exc
            raise
        if row == 1:  # no rows: still report the columns
            empty = pa.RecordBatch.from_pylist([], schema=parquet.schema_arrow)
            yield SourceBatch(columns=columns, data=empty, first_row=1, bad_rows=[])


def _corrupt(exc: Exception) -> bool:
    # pyarrow reports undecodable pages as a bare OSError; the stream's own failures (network,
    # storage) are other classes, or OSError subclasses, and must keep their retry semantics.
    return isinstance(exc, _ARROW) or type(exc) is OSError
