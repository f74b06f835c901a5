"""Validate stage: match the file's header to the registered table, type every value, reject bad rows.

`plan_header` runs once per file on the first batch's columns; `validate_batch` runs per batch
and returns only good rows, typed as the warehouse stages them, with their `_source_row`. Key
duplicates are not checked here: they span batches (the stage module checks them).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from adapters.warehouse.types import arrow_type
from errors import PermanentError
from pipeline.cast import convert
from pipeline.source import BadRow, SourceBatch
from values.identifiers import column_name
from values.tables import Column, TableTarget

__all__ = ["BadRow", "HeaderPlan", "ValidatedBatch", "plan_header", "validate_batch"]

SOURCE_ROW = "_source_row"


@dataclass(frozen=True)
class HeaderPlan:
    source_to_target: dict[str, str]
    """File column → table column (registered, or new when allowed)."""
    new_columns: list[str]
    """Table names of the file's columns that are not registered (allow_new_columns), in file order."""
    unknown_keys_reject_rows: bool = False
    """JSON records: a key that is not a column rejects the rows giving it a value (see plan_header)."""
    unseen: tuple[str, ...] = ()
    """JSON records: registered columns whose key the first rows never gave; the file must give
    each somewhere (`missing_columns` at its end), until then they are NULL."""

    def late_key(self, key: str) -> str | None:
        """The unseen column a key first given after the first records stands for, matched as
        the first records' keys are: by its `columns:` name or its own (`source_to_target`), or
        by its own name ignoring case and surrounding spaces."""
        if key in self.source_to_target:
            return self.source_to_target[key] if self.source_to_target[key] in self.unseen else None
        folded = key.strip().lower()
        return next((name for name in self.unseen if name.lower() == folded), None)

    def missing_columns(self, seen: set[str], target: TableTarget) -> None:
        """At the end of a JSON file: fail it if a registered column's key never appeared."""
        given = {self.late_key(key) for key in seen}
        never = [name for name in self.unseen if name not in given]
        if never:
            raise PermanentError(f"file columns do not match {target.dataset}.{target.table}: missing column(s): "
                                 f"{', '.join(never)} (no record of the file gives them a value or null)")


@dataclass
class ValidatedBatch:
    data: pa.RecordBatch
    """Registered columns in registered order, new columns (STRING), then int64 `_source_row`; good rows only."""
    bad_rows: list[BadRow]
    """Rows rejected here (the reader's own bad rows stay on the SourceBatch)."""


def plan_header(columns: list[str], target: TableTarget, *, column_map: dict[str, str],
                allow_new_columns: bool, header: bool, keys_per_row: bool = False) -> HeaderPlan:
    """Map the file's columns onto the table.

    A file column is matched through `column_map` (the definition's `columns:`) first, then by
    exact name, then by name ignoring case and surrounding spaces. Without a header
    (`header=False`, columns col_1..col_n) columns not named in `column_map` are matched by
    position. Every registered column must be present (strict: a missing NULLABLE column is an
    error too, so a renamed column is never loaded as all NULL).

    `keys_per_row` (JSON records, whose keys vary by record): an unknown key does not fail the
    file; each row giving it a value is rejected instead, counted against max_bad_records, as
    BigQuery loads JSON with ignoreUnknownValues=false (dlt's `discard_row` contract). A header
    is the file's shape, so for CSV, TSV, XLSX and Parquet unknown columns fail the file.

    Raises:
        PermanentError: missing, unexpected or duplicate columns, all named in one message; an
            invalid new column name.
    """
    exact = {c.name: c.name for c in target.columns}
    folded = {c.name.lower(): c.name for c in target.columns}
    mapping: dict[str, str] = {}
    claimed: dict[str, str] = {}  # lower-cased table column → file column
    new: list[str] = []
    unexpected: list[str] = []
    duplicates: list[str] = []
    for position, source in enumerate(columns):
        if source in column_map:
            wanted = column_map[source]
        elif header:
            wanted = source
        else:
            wanted = target.columns[position].name if position < len(target.columns) else source
        name = exact.get(wanted) or folded.get(wanted.strip().lower())
        is_new = name is None
        if name is None:
            if not allow_new_columns:
                unexpected.append(source)
                continue
            name = column_name(wanted)
        if name.lower() in claimed or source in mapping:
            duplicates.append(source)
            continue
        claimed[name.lower()] = source
        mapping[source] = name
        if is_new:
            new.append(name)
    missing = [c.name for c in target.columns if c.name.lower() not in claimed]
    per_row = keys_per_row and not allow_new_columns
    unseen: tuple[str, ...] = ()
    if keys_per_row and missing and not unexpected and not duplicates:
        # JSON records leave out keys they have no value for: a sparse key may first appear after
        # the first rows. Missing next to unknown keys reads as a rename and fails at once.
        unseen, missing = tuple(missing), []
        for name in unseen:
            for source in [s for s, t in column_map.items() if t == name] or [name]:
                mapping.setdefault(source, name)
    if missing or duplicates or (unexpected and not per_row):
        problems = []
        if missing:
            problems.append(f"missing column(s): {', '.join(missing)}")
        if unexpected:
            problems.append(f"unexpected column(s): {', '.join(unexpected)} ({_unexpected_hint(unexpected, missing)})")
        if duplicates:
            problems.append(f"duplicate column(s): {', '.join(duplicates)}")
        hint = _delimiter_hint(unexpected, target, column_map) if header and not keys_per_row else None
        raise PermanentError(f"file columns do not match {target.dataset}.{target.table}: " + "; ".join(problems)
                             + (f"; {hint}" if hint else ""))
    return HeaderPlan(source_to_target=mapping, new_columns=new, unknown_keys_reject_rows=per_row, unseen=unseen)


def _unexpected_hint(unexpected: list[str], missing: list[str]) -> str:
    """How to fix unexpected columns, in the table definition's own keys."""
    example = f"{json.dumps(unexpected[0], ensure_ascii=False)}: {missing[0] if missing else '<column>'}"
    return (f"map them under columns: in the table definition (e.g. columns: {{{example}}}), add them to schema:, "
            "or set allow_new_columns: true to add them as STRING")


_DELIMITERS = (",", ";", "\t", "|", ":")


def _delimiter_hint(unexpected: list[str], target: TableTarget, column_map: dict[str, str]) -> str | None:
    """A header read as fewer columns than it has, because the file uses another delimiter."""
    known = {c.name.lower() for c in target.columns} | {k.strip().lower() for k in column_map}
    for source in unexpected:
        for delimiter in _DELIMITERS:
            parts = [p.strip().strip('"').strip().lower() for p in source.split(delimiter)]
            if len(parts) > 1 and any(p in known for p in parts):
                return (f"the header splits on {delimiter!r} into the table's columns: set "
                        f"csv: {{delimiter: {json.dumps(delimiter)}}} in the table definition")
    return None


def validate_batch(batch: SourceBatch, plan: HeaderPlan, target: TableTarget) -> ValidatedBatch:
    """Type every value of the batch; rows with a value that cannot be typed become bad rows.

    With `plan.unknown_keys_reject_rows`, the rows giving a value to a key that is not a column
    are bad rows too.

    Raises:
        PermanentError: the batch has a column the plan does not know (a key first appearing
            late in a JSON file, with allow_new_columns), or a column's values can never be of
            its type.
    """
    n = batch.data.num_rows
    index = {name: i for i, name in enumerate(batch.columns)}
    mapping = plan.source_to_target
    if plan.unseen:  # JSON keys first given now, for columns the first records left out
        mapping = mapping | {c: name for c in batch.columns if c not in mapping and (name := plan.late_key(c))}
    unknown = [c for c in batch.columns if c not in mapping]
    if unknown and not plan.unknown_keys_reject_rows:
        raise PermanentError(f"column(s) {', '.join(unknown)} appear from row {batch.first_row} on but are not "
                             "in the file's first rows; add them to schema: in the table definition or map "
                             "them under columns:")
    source_of = {t: s for s, t in mapping.items() if s in index}  # the key this batch gives a column
    columns = list(target.columns) + [Column(name, "STRING") for name in plan.new_columns]
    problems: dict[int, list[str]] = {}
    for name in unknown:  # JSON keys that are not columns: only rows giving them a value are lost
        given = pc.is_valid(batch.data.column(index[name])).to_numpy(zero_copy_only=False)
        for pos in np.flatnonzero(given).tolist():
            problems.setdefault(pos, []).append(
                f"key {name} is not a column of {target.dataset}.{target.table} (add it to schema:, map it under "
                "columns: or set allow_new_columns: true)")
    arrays = []
    for col in columns:
        source = source_of.get(col.name)
        failed: list[tuple[int, str]] = []
        if source is None or source not in index:  # a JSON key absent from this batch
            typed = pa.nulls(n, arrow_type(col.type, col.mode))
        else:
            typed, failed = convert(batch.data.column(index[source]), col.type, col.mode, column=col.name)
        for pos, reason in failed:
            problems.setdefault(pos, []).append(reason)
        if col.mode == "REQUIRED" and typed.null_count > len(failed):
            seen = {pos for pos, _ in failed}
            for pos in np.flatnonzero(pc.is_null(typed).to_numpy(zero_copy_only=False)).tolist():
                if pos not in seen:
                    problems.setdefault(pos, []).append(f"column {col.name} is REQUIRED but empty")
        arrays.append(typed)
    rows = batch.row_numbers()
    bad_rows: list[BadRow] = []
    if problems:
        bad = sorted(problems)
        keep = np.ones(n, dtype=bool)
        keep[bad] = False
        mask = pa.array(keep)
        bad_rows = [BadRow(row=int(rows[p]), reason="; ".join(problems[p]), raw=_raw(batch, p)) for p in bad]
        arrays = [a.filter(mask) for a in arrays]
        rows = rows[keep]
    names = [c.name for c in columns] + [SOURCE_ROW]
    data = pa.RecordBatch.from_arrays([*arrays, pa.array(rows, pa.int64())], names=names)
    return ValidatedBatch(data=data, bad_rows=bad_rows)


def _raw(batch: SourceBatch, pos: int) -> dict[str, Any]:
    """The row's values as read, JSON-friendly, for the quarantine file."""
    return {name: _plain(batch.data.column(i)[pos].as_py()) for i, name in enumerate(batch.columns)}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dt.date | dt.time | dt.datetime | decimal.Decimal | dt.timedelta):
        return str(value)
    if isinstance(value, float) and value != value:
        return "NaN"
    return value
