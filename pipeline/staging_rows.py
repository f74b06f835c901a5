"""Semi-structured read stage: a CSV or NDJSON file → JSON rows with their source row numbers.

Rows are kept as the file has them (CSV values stay strings, NDJSON objects keep their nesting),
renamed by the entity's column map. Nothing is dropped: a row the reader cannot use (ragged
CSV row, NDJSON line that is not an object) is staged with its raw text and a validation error,
so that staging keeps every source row and says what is wrong with it.

Every payload is also checked for what PostgreSQL cannot store as JSONB or what is hostile
(`storable_problem`): NUL characters, lone surrogates, non-finite numbers and nesting deeper than
MAX_NESTING. Such a row is staged as an escaped `_raw` text with a validation error, never sent
as is (it would fail the whole finalize with a database error).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from errors import PermanentError

MAX_FIELD_BYTES = 64 << 20
MAX_NESTING = 100
"""Deepest nesting of objects / arrays accepted in a staged row (PostgreSQL's stack has limits too)."""
MAX_RAW_CHARS = 100_000
"""A refused row's `_raw` text is cut to this many characters."""


class StagingSourceError(PermanentError):
    """The file as a whole cannot be read as the entity's format."""


@dataclass(frozen=True)
class StagedRecord:
    row: int
    """1-based data row: CSV rows after the header, NDJSON non-blank lines."""
    payload: dict[str, Any]
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def checksum(self) -> str:
        canonical = json.dumps(self.payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()


def read_records(stream: BinaryIO, *, format: str, name: str, column_map: dict[str, str] | None = None,
                 required: Sequence[str] = (), options: dict[str, Any] | None = None) -> Iterator[StagedRecord]:
    """Stream the rows of `stream` (`csv` or `ndjson`), mapped and checked.

    Args:
        stream: the object's bytes.
        format: csv | ndjson.
        name: the object name, for error messages.
        column_map: source field → staged key; unmapped fields keep their names.
        required: staged keys that must be present and non-empty.
        options: csv dialect (`delimiter`, `quote`, `encoding`).
    """
    opts = dict(options or {})
    encoding = str(opts.get("encoding", "utf-8"))
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise StagingSourceError(f"{name}: unknown encoding {encoding!r}") from None
    text = io.TextIOWrapper(stream, encoding=encoding, newline="")
    if format == "csv":
        raw = _csv(text, name, delimiter=str(opts.get("delimiter", ",")), quote=str(opts.get("quote", '"')))
    elif format == "ndjson":
        raw = _ndjson(text, name)
    else:
        raise StagingSourceError(f"{name}: format {format!r} cannot be staged (csv or ndjson)")
    mapping = column_map or {}
    try:
        for record in raw:
            payload = {mapping.get(k, k): v for k, v in record.payload.items()}
            errors = list(record.errors)
            problem = storable_problem(payload)
            if problem is not None:
                payload, errors = {"_raw": _escaped(record.payload)}, [*errors, {"error": problem}]
            elif not record.errors:
                errors += [{"column": key, "error": "required value is missing"}
                           for key in required if payload.get(key) in (None, "")]
            yield StagedRecord(record.row, payload, errors)
    except UnicodeDecodeError as exc:
        raise StagingSourceError(f"{name}: not valid {encoding} near byte {exc.start}: {exc.reason}") from None


def _csv(text: io.TextIOWrapper, name: str, *, delimiter: str, quote: str) -> Iterator[StagedRecord]:
    csv.field_size_limit(MAX_FIELD_BYTES)
    reader = csv.reader(text, delimiter=delimiter, quotechar=quote or None, quoting=csv.QUOTE_MINIMAL if quote
                        else csv.QUOTE_NONE, strict=False)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise StagingSourceError(f"{name}: header cannot be read: {exc}") from None
    if any("\x00" in h for h in header):
        raise StagingSourceError(f"{name}: the header has a NUL character in a column name")
    if len(set(header)) != len(header) or any(not h for h in header):
        raise StagingSourceError(f"{name}: the header has empty or duplicate column names: {header}")
    row = 0
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            row += 1
            yield StagedRecord(row, {}, [{"error": f"row cannot be parsed: {exc}"}])
            continue
        if not values:
            continue  # a blank line is not a data row
        row += 1
        if len(values) != len(header):
            yield StagedRecord(row, {"_raw": values},
                               [{"error": f"expected {len(header)} fields, found {len(values)}"}])
            continue
        yield StagedRecord(row, dict(zip(header, values, strict=True)))


def _ndjson(text: io.TextIOWrapper, name: str) -> Iterator[StagedRecord]:
    row = 0
    for line in text:
        if not line.strip():
            continue
        row += 1
        try:
            value = json.loads(line, parse_constant=_refuse_constant, parse_float=_finite_float)
        except RecursionError:
            yield StagedRecord(row, {"_raw": line.rstrip("\r\n")},
                               [{"error": f"invalid JSON: nested more than {MAX_NESTING} levels deep"}])
            continue
        except ValueError as exc:
            yield StagedRecord(row, {"_raw": line.rstrip("\r\n")}, [{"error": f"invalid JSON: {exc}"}])
            continue
        if not isinstance(value, dict):
            yield StagedRecord(row, {"_raw": value}, [{"error": "line is not a JSON object"}])
            continue
        yield StagedRecord(row, value)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is not a finite number")
    return value


def storable_problem(payload: Any) -> str | None:
    """Why `payload` cannot be staged as JSONB (NUL, lone surrogate, non-finite number, too deep), or None.

    Iterative, so a hostile depth never reaches Python's recursion limit.
    """
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            if depth > MAX_NESTING:
                return f"nested more than {MAX_NESTING} levels deep"
            for key, item in value.items():
                problem = _text_problem(str(key))
                if problem:
                    return f"key: {problem}"
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            if depth > MAX_NESTING:
                return f"nested more than {MAX_NESTING} levels deep"
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            problem = _text_problem(value)
            if problem:
                return problem
        elif isinstance(value, float) and not math.isfinite(value):
            return "a number is not a finite number"
    return None


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character (U+0000), which cannot be stored"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (invalid Unicode), which cannot be stored"
    return None


def _escaped(value: Any) -> str:
    """`value` as JSON text with every non-ASCII character, NUL and surrogate escaped (always storable)."""
    try:
        text = json.dumps(value, ensure_ascii=True, default=str)
    except (ValueError, RecursionError):
        text = "<not representable>"
    return text[:MAX_RAW_CHARS]
