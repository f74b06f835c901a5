"""Validate stage: match the file's header to the registered table, type every value, reject bad rows.

`plan_header` runs once per file on the first batch's columns; `validate_batch` runs per batch
and returns only good rows, typed as the warehouse stages them, with their `_source_row`. Key
duplicates are not checked here: they span batches (the stage module checks them).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
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


@dataclass
class ValidatedBatch:
    data: pa.RecordBatch
    """Registered columns in registered order, new columns (STRING), then int64 `_source_row`; good rows only."""
    bad_rows: list[BadRow]
    """Rows rejected here (the reader's own bad rows stay on the SourceBatch)."""


def plan_header(columns: list[str], target: TableTarget, *, column_map: dict[str, str],
                allow_new_columns: bool, header: bool) -> HeaderPlan:
    """Map the file's columns onto the table.

    A file column is matched through `column_map` first, then by exact name, then by name
    ignoring case and surrounding spaces. Without a header (`header=False`, columns col_1..col_n) columns not named in
    `column_map` are matched by position. Every registered column must be present (strict: a
    missing NULLABLE column is an error too, so a renamed column is never loaded as all NULL).

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
    problems = []
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected column(s): {', '.join(unexpected)} (set allow_new_columns: true to add them"
                        " or map them with column_map)")
    if duplicates:
        problems.append(f"duplicate column(s): {', '.join(duplicates)}")
    if problems:
        raise PermanentError(f"file columns do not match {target.dataset}.{target.table}: " + "; ".join(problems))
    return HeaderPlan(source_to_target=mapping, new_columns=new)


def validate_batch(batch: SourceBatch, plan: HeaderPlan, target: TableTarget) -> ValidatedBatch:
    """Type every value of the batch; rows with a value that cannot be typed become bad rows.

    Raises:
        PermanentError: the batch has a column the plan does not know (a key first appearing
            late in a JSON file), or a column's values can never be of its type.
    """
    n = batch.data.num_rows
    index = {name: i for i, name in enumerate(batch.columns)}
    unknown = [c for c in batch.columns if c not in plan.source_to_target]
    if unknown:
        raise PermanentError(f"column(s) {', '.join(unknown)} appear from row {batch.first_row} on but are not "
                             "in the file's first rows; add them to the table definition or to column_map")
    source_of = {t: s for s, t in plan.source_to_target.items()}
    columns = list(target.columns) + [Column(name, "STRING") for name in plan.new_columns]
    problems: dict[int, list[str]] = {}
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
