"""Stage: validated record batches → one Parquet file with lineage, plus a quarantine NDJSON.

Streaming end to end: each batch is read, validated, extended with lineage columns and
appended to the Parquet writer; memory stays at a few batches whatever the file size.
Key duplicates within the file are found afterwards: when the key values are small enough to
keep (`KEY_CHECK_BYTES`), a hash aggregate over them says whether any repeats; DuckDB over the
staged Parquet finds which (and answers alone for larger files).
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from errors import PermanentError
from pipeline.read import read_ahead
from pipeline.source import SourceBatch
from pipeline.validate import BadRow, HeaderPlan, plan_header, validate_batch
from values.identifiers import column_name, quote_ident
from values.tables import TableTarget

QUARANTINE_SAMPLE = 5  # bad rows quoted in an error message
ROW_GROUP_ROWS = 64 * 1024  # rows buffered per Parquet row group
PRIVATE_SCRATCH_BYTES = 16 << 20  # a staged file this large is checked in a DuckDB of its own (scratch.cursor)
KEY_CHECK_BYTES = 16 << 20  # key values kept in memory for the duplicate pre-check (~2M int64 keys)


@dataclass(frozen=True)
class Lineage:
    file_id: int
    batch_id: int | None
    ingested_at: datetime
    file_id_column: str = "_file_id"


@dataclass
class StageResult:
    path: Path
    rows_read: int = 0
    rows_staged: int = 0
    bad_rows: list[BadRow] = field(default_factory=list)
    new_columns: list[str] = field(default_factory=list)
    keys_repeat: bool | None = None
    """Whether a key value repeats within the staged rows; None when not known here (no keys, or
    too many key values to keep in memory): `duplicate_keys` then asks DuckDB."""

    @property
    def rows_rejected(self) -> int:
        return len(self.bad_rows)


def stage_batches(batches: Iterator[SourceBatch], *, target: TableTarget, column_map: dict[str, str],
                  allow_new_columns: bool, header: bool, lineage: Lineage, path: Path,
                  max_bad_records: int, keys_per_row: bool = False, overlap: bool = False) -> StageResult:
    """Validate and write every batch to `path` (Parquet); collects bad rows.

    Stops early (returns) as soon as bad rows exceed `max_bad_records`: the file will fail and
    reading the rest is wasted work. `keys_per_row`: JSON records (see `plan_header`).
    `overlap` (files of more than one block): batches are validated in a thread, one ahead of
    the Parquet writer (the casts and the write then use both cores; results, errors and bad
    rows arrive in file order as without it).
    """
    result = StageResult(path=path)
    writer: pq.ParquetWriter | None = None
    key_values = _KeyValues(target.keys)
    schema: pa.Schema | None = None
    pending: list[pa.Table] = []
    pending_rows = 0
    items = _validated(batches, target=target, column_map=column_map, allow_new_columns=allow_new_columns,
                       header=header, keys_per_row=keys_per_row, lineage=lineage)
    if overlap:
        items = read_ahead(items, depth=1)
    try:
        for item in items:
            if item.new_columns is not None:
                result.new_columns = item.new_columns
            result.rows_read += item.rows_read
            result.bad_rows.extend(item.bad_rows)
            table = item.table
            if writer is None:
                schema = table.schema
                writer = _writer(path, schema)
            pending.append(table.cast(schema) if table.schema != schema else table)
            key_values.add(pending[-1])
            pending_rows += table.num_rows
            result.rows_staged += table.num_rows
            if pending_rows >= ROW_GROUP_ROWS:  # few, large row groups: cheaper to write and to load
                writer.write_table(pa.concat_tables(pending))
                pending, pending_rows = [], 0
            if len(result.bad_rows) > max_bad_records:
                break
        if writer is not None and pending:
            writer.write_table(pa.concat_tables(pending))
        if writer is None:  # no batch at all (header-only file): an empty, well-typed Parquet
            writer = _writer(path, _empty_schema(target, lineage))
    finally:
        items.close()  # stops the validation thread (and the reader's) when the loop ended early
        if writer is not None:
            writer.close()
    result.bad_rows.sort(key=lambda b: b.row)
    result.keys_repeat = key_values.repeat()
    return result


@dataclass
class _Validated:
    table: pa.Table
    """The batch's good rows, typed, with lineage."""
    bad_rows: list[BadRow]
    """The reader's bad rows of the batch, then the validator's."""
    rows_read: int
    new_columns: list[str] | None = None
    """On the first batch: the file's columns added to the table (allow_new_columns)."""


def _validated(batches: Iterator[SourceBatch], *, target: TableTarget, column_map: dict[str, str],
               allow_new_columns: bool, header: bool, keys_per_row: bool,
               lineage: Lineage) -> Generator[_Validated, None, None]:
    plan: HeaderPlan | None = None
    seen: set[str] = set()  # JSON keys given by the records so far (see HeaderPlan.unseen)
    try:
        for batch in batches:
            new_columns = None
            if plan is None:
                try:
                    plan = plan_header(batch.columns, target, column_map=column_map,
                                       allow_new_columns=allow_new_columns, header=header,
                                       keys_per_row=keys_per_row)
                except PermanentError as exc:
                    if batch.note:  # e.g. which sheet of several was read
                        raise PermanentError(f"{exc}; {batch.note}") from exc
                    raise
                new_columns = list(plan.new_columns)
            if plan.unseen:
                seen.update(batch.columns)
            validated = validate_batch(batch, plan, target)
            yield _Validated(table=_with_lineage(validated.data, lineage),
                             bad_rows=[*batch.bad_rows, *validated.bad_rows],
                             rows_read=batch.data.num_rows + len(batch.bad_rows), new_columns=new_columns)
        if plan is not None and plan.unseen:
            plan.missing_columns(seen, target)
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


class _KeyValues:
    """Does a key repeat within the staged rows? Answered here when it can be, without DuckDB.

    A single key whose values rise strictly through the file (ids exported in order, the usual
    case) cannot repeat: that is checked per batch as it arrives, for almost nothing and whatever
    the file's size. Otherwise the key values, while they are small (`KEY_CHECK_BYTES`), are
    hashed once at the end (`pc.unique`, or a group-by for compound keys).
    """

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = list(keys)
        self._parts: list[pa.Table] | None = [] if keys else None  # None: not kept (too many, or unusable)
        self._nbytes = 0
        self._rows = 0
        self._rising = len(keys) == 1  # every value so far greater than the one before it
        self._last: pa.Scalar | None = None

    def add(self, table: pa.Table) -> None:
        if self._parts is None and not self._rising:
            return  # nothing more can be known here: DuckDB answers over the staged Parquet
        try:
            part: pa.Table | None = table.select(self._keys)
        except KeyError:  # a key spelt differently from its column: DuckDB matches it case-blind
            part = None
        if part is None or not all(map(_groups_like_duckdb, part.schema.types)):
            self._parts, self._rising = None, False
            return
        self._rows += part.num_rows
        if self._rising and part.num_rows:
            self._rising = self._still_rising(part.column(0))
        if self._parts is not None:
            self._nbytes += part.nbytes
            if self._nbytes > KEY_CHECK_BYTES:
                self._parts = None  # too many to keep: only their rising can still tell
            else:
                self._parts.append(part)

    def _still_rising(self, values: pa.ChunkedArray) -> bool:
        n = len(values)
        if values.null_count:  # NULL keys group together (as in DuckDB): left to the hash
            return False
        if self._last is not None and not pc.less(self._last, values[0]).as_py():
            return False
        self._last = values[n - 1]
        return n < 2 or bool(pc.all(pc.less(values.slice(0, n - 1), values.slice(1))).as_py())

    def repeat(self) -> bool | None:
        if self._rising:
            return False
        if self._parts is None:
            return None
        if not self._parts:
            return False
        keys = pa.concat_tables(self._parts)
        if len(self._keys) == 1:
            return len(pc.unique(keys.column(0))) < self._rows  # NULLs count as one value, as in DuckDB
        return keys.group_by(self._keys, use_threads=False).aggregate([]).num_rows < self._rows


def _groups_like_duckdb(t: pa.DataType) -> bool:
    # Types whose equality is the same in pyarrow's hash grouping and in DuckDB's GROUP BY (NULLs
    # form one group in both). Floats are left to DuckDB (0.0 = -0.0 there, not bit for bit).
    return (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_boolean(t)
            or pa.types.is_date(t) or pa.types.is_decimal(t) or pa.types.is_timestamp(t))


def _writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    # The staged file is read whole, once per load (the warehouse load, the key check, a
    # reprocess): no reader skips a row group by its statistics, whose min/max over text
    # columns cost ~40 % of the write. Dictionary encoding costs ~3x the write time on wide
    # string data, so plain encoding + snappy is the better trade too.
    return pq.ParquetWriter(path, schema, compression="snappy", use_dictionary=False, write_statistics=False)


def _with_lineage(data: pa.RecordBatch, lineage: Lineage) -> pa.Table:
    """Target columns, then `_file_id`, `_batch_id`, `_source_row`, `_ingested_at`."""
    n = data.num_rows
    table = pa.Table.from_batches([data])
    source_row = table.column("_source_row").cast(pa.int64())
    table = table.drop_columns(["_source_row"])
    table = table.append_column(lineage.file_id_column, pa.repeat(pa.scalar(lineage.file_id, pa.int64()), n))
    table = table.append_column("_batch_id", pa.repeat(pa.scalar(lineage.batch_id, pa.int64()), n))
    table = table.append_column("_source_row", source_row)
    stamp = pa.scalar(lineage.ingested_at, pa.timestamp("us", tz="UTC"))
    return table.append_column("_ingested_at", pa.repeat(stamp, n))


def _empty_schema(target: TableTarget, lineage: Lineage) -> pa.Schema:
    from adapters.warehouse.types import arrow_type

    fields = [pa.field(c.name, arrow_type(c.type, c.mode)) for c in target.columns]
    fields += [pa.field(lineage.file_id_column, pa.int64()), pa.field("_batch_id", pa.int64()),
               pa.field("_source_row", pa.int64()), pa.field("_ingested_at", pa.timestamp("us", tz="UTC"))]
    return pa.schema(fields)


def duplicate_keys(path: Path, keys: tuple[str, ...], *, repeat: bool | None = None) -> list[BadRow]:
    """Rows whose key repeats an earlier row of the same file (the first occurrence is kept).

    `repeat`: whether a key value repeats, when the caller knows (`StageResult.keys_repeat`).
    """
    if not keys or repeat is False:
        return []
    from pipeline import scratch

    cols = ", ".join(quote_ident(column_name(k)) for k in keys)
    sql = (
        f"SELECT _source_row, first_row, {cols} FROM ("
        f"  SELECT _source_row, {cols}, min(_source_row) OVER (PARTITION BY {cols}) AS first_row"
        f"  FROM read_parquet(?)) WHERE _source_row <> first_row ORDER BY _source_row"
    )
    large = path.stat().st_size > PRIVATE_SCRATCH_BYTES
    with scratch.cursor(private=large) as conn:
        # Cheap aggregate first: the window query below only runs when a key repeats.
        repeated = repeat or conn.execute(
            f"SELECT 1 FROM read_parquet(?) GROUP BY {cols} HAVING count(*) > 1 LIMIT 1", [str(path)]).fetchone()
        rows = conn.execute(sql, [str(path)]).fetchall() if repeated else []
    bad = []
    for source_row, first_row, *values in rows:
        key = ", ".join(f"{k}={v!r}" for k, v in zip(keys, values, strict=True))
        bad.append(BadRow(row=int(source_row), reason=f"duplicate key ({key}) first seen at row {first_row}",
                          raw={k: _jsonable(v) for k, v in zip(keys, values, strict=True)}))
    return bad


def drop_rows(path: Path, rows: list[int]) -> int:
    """Rewrite the staged Parquet without the given source rows; returns rows kept."""
    from pipeline import scratch

    tmp = path.with_suffix(".tmp.parquet")
    with scratch.cursor() as conn:
        conn.execute(f"COPY (SELECT * FROM read_parquet('{_sql_path(path)}') WHERE _source_row NOT IN "
                     f"(SELECT unnest(?::BIGINT[])) ORDER BY _source_row) TO '{_sql_path(tmp)}' (FORMAT parquet)",
                     [rows])
        kept = conn.execute(f"SELECT count(*) FROM read_parquet('{_sql_path(tmp)}')").fetchone()
    tmp.replace(path)
    return int(kept[0]) if kept else 0


def _sql_path(path: Path) -> str:
    # COPY ... TO takes no parameters; our own temp paths only, quotes doubled defensively.
    return str(path).replace("'", "''")


def quarantine_lines(bad_rows: list[BadRow]) -> bytes:
    """NDJSON: one object per rejected row with its source row number, reason and raw values."""
    lines = [json.dumps({"row": b.row, "reason": b.reason, "raw": _jsonable(b.raw)}, ensure_ascii=False,
                        default=str) for b in bad_rows]
    return ("\n".join(lines) + "\n").encode() if lines else b""


def describe_bad_rows(bad_rows: list[BadRow], limit: int = QUARANTINE_SAMPLE) -> str:
    shown = "; ".join(f"row {b.row}: {b.reason}" for b in bad_rows[:limit])
    more = f" (and {len(bad_rows) - limit} more)" if len(bad_rows) > limit else ""
    return shown + more


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
