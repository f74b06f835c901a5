"""NDJSON and JSON reader: one row per object, nested values kept as Arrow lists and structs.

NDJSON is read in blocks of whole lines. A block goes through pyarrow's JSON parser when that is
exact (see `_fast`: every line one object, ISO strings kept as text, numbers with a fraction only
when float64 holds them exactly); otherwise it is parsed line by line with `json` (numbers with a
fraction as `Decimal`), which also isolates a malformed line as a bad row instead of failing the
file. pyarrow parses without the GIL, so up to `_PARSERS` blocks are parsed at once, each exactly
as it would be alone and in file order (`_parsed_ahead`).

Rows are numbered by their order among the non-blank lines (for NDJSON without blank lines,
the line number). Format `json` takes a top-level array of objects, streamed element by
element, or a sequence of objects (NDJSON or pretty-printed objects one after another).
"""

from __future__ import annotations

import codecs
import decimal
import json
import re
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from pipeline.readers.columns import column
from pipeline.readers.streams import Utf8Stream, open_bytes
from pipeline.source import BadRow, SourceBatch, SourceError, SourceOptions

_DECODER = json.JSONDecoder(parse_float=decimal.Decimal)
_SPACE = re.compile(r"[ \t\n\r]*")
_BLANK_LINE = re.compile(rb"\n[ \t\r]*\n")  # searched in "\n" + block + "\n": starts at a newline only
_BATCH_ROWS = 100_000
# A run of more than 16 number characters may be a number float64 cannot hold exactly; found by
# mapping number characters to "#" (bytes.translate and `in` run at memory speed, a regex does not).
_NUMBER_CHARS = bytes.maketrans(bytes(range(256)), bytes(ord("#") if chr(b) in "0123456789.eE+-" else ord(" ")
                                                             for b in range(256)))
_LONG_NUMBER = b"#" * 17
# Bytes a blank (whitespace-only) line can start with: only lines starting with one are searched.
_SPACE_BYTES = np.zeros(256, dtype=bool)
_SPACE_BYTES[list(b" \t\r\n")] = True
_POWERS_OF_TEN = 10.0 ** np.arange(23)  # exact as float64 up to 1e22
_PARSERS = 2  # blocks parsed at once: pyarrow's parser is single-threaded per call and releases the GIL


def read_json(stream: BinaryIO, options: SourceOptions, name: str) -> Iterator[SourceBatch]:
    text = Utf8Stream(open_bytes(stream, options, name), encoding=options.encoding, name=name, what=options.format)
    chunks = iter(lambda: text.read(options.block_size), b"")
    if options.format == "ndjson":
        yield from _ndjson(chunks, options, name)
    else:
        yield from _values(chunks, options, name)


# -- NDJSON ---------------------------------------------------------------------------------

def _ndjson(chunks: Iterator[bytes], options: SourceOptions, name: str) -> Iterator[SourceBatch]:
    line, row = 1, 1
    text_columns: dict[str, int] = {}  # string columns pyarrow reads as timestamps (see _fast)
    try:
        for block, fast in _parsed_ahead(_blocks(chunks, options.max_field_bytes), text_columns):
            if fast is not None:
                batch = fast
                batch.first_row = row
                # one row per line: the newlines are known without counting them
                line += batch.data.num_rows - (0 if block.endswith(b"\n") else 1)
            else:
                batch = _slow(block, line, row, name)
                line += block.count(b"\n")
            if batch.data.num_rows or batch.bad_rows:
                yield batch
            row += batch.data.num_rows + len(batch.bad_rows)
    except _LineTooLong:  # raised after every block before the line: `line` is where it starts
        raise SourceError(f"{name}: line {line} is longer than max_field_bytes ({options.max_field_bytes} "
                          "bytes)") from None


class _LineTooLong(Exception):
    """No newline within max_field_bytes; `_ndjson` knows the line number."""


def _blocks(chunks: Iterator[bytes], max_line: int) -> Iterator[bytes]:
    """The content in blocks of whole lines (the last one may lack its newline), each copied once."""
    carry = b""
    for chunk in chunks:
        cut = chunk.rfind(b"\n")
        if cut < 0:
            carry += chunk
            if len(carry) > max_line:
                raise _LineTooLong
            continue
        whole = not carry and cut == len(chunk) - 1  # the chunk ends at a line end: no copy
        block = chunk if whole else b"".join((carry, memoryview(chunk)[: cut + 1]))
        carry = chunk[cut + 1:]
        yield block
    if carry:
        yield carry


def _parsed_ahead(blocks: Iterator[bytes], text_columns: dict[str, int]) -> Iterator[tuple[bytes, SourceBatch | None]]:
    """Every block with `_fast(block, text_columns)`, in order, as if called one after another.

    The first block is parsed alone; then up to `_PARSERS` blocks at once (one more waits its
    turn), each from the text columns known when it was handed out. `_fast` depends on nothing
    else, so its result is the sequential one when those text columns are still the known ones,
    or when the block found the same set itself (the common case: every block sees the same
    timestamp columns); otherwise the block is parsed again. A failure to read the next block is
    raised after the blocks read before it, as without threads. A file of one block is parsed
    here, without threads.
    """
    pool: ThreadPoolExecutor | None = None
    first: bytes | None = None  # held back until a second block shows that threads are worth it
    ahead: deque[tuple[bytes, dict[str, int], dict[str, int], Future[SourceBatch | None]]] = deque()

    def hand_out(block: bytes) -> None:
        assert pool is not None
        found = dict(text_columns)
        ahead.append((block, dict(found), found, pool.submit(_fast, block, found)))

    def take() -> tuple[bytes, SourceBatch | None]:
        block, handed, found, parsed = ahead.popleft()
        if handed == text_columns or found == text_columns:
            batch = parsed.result()
            text_columns.update(found)
        else:  # an earlier block found other timestamp columns: parse again with them
            batch = _fast(block, text_columns)
        return block, batch

    def rest() -> Iterator[tuple[bytes, SourceBatch | None]]:
        if first is not None:
            yield first, _fast(first, text_columns)
        while ahead:
            yield take()

    try:
        while True:
            try:
                block = next(blocks, None)
            except Exception:
                yield from rest()
                raise
            if block is None:
                break
            if pool is None:
                if first is None:
                    first = block
                    continue
                # The first block alone: the timestamp columns it finds are known to the blocks
                # handed out next, which then parse once instead of twice.
                yield first, _fast(first, text_columns)
                first = None
                pool = ThreadPoolExecutor(_PARSERS, thread_name_prefix="caf-ndjson")
            hand_out(block)
            if len(ahead) > _PARSERS:
                yield take()
        yield from rest()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _fast(block: bytes, text_columns: dict[str, int] | None = None) -> SourceBatch | None:
    """pyarrow's parser, when its result is exact and lines map one-to-one onto rows.

    Exact means: ISO strings stay text (pyarrow would read them as timestamps: those columns are
    parsed again as strings; `text_columns` remembers them, with their place among the columns,
    for the next blocks), and a column of numbers with a fraction (float64) is taken only when no
    number-like run in the block is longer than 16 characters, i.e. every such number has at most
    15 significant digits and survives float64 unchanged; it is then handed on as the decimal its
    shortest text spells, as `_slow` would. The batch's `first_row` is left for the caller.
    """
    lines = _lines_if_no_blank_line(block)
    if lines is None:
        return None
    known = text_columns if text_columns is not None else {}
    try:
        table = _parse(block, known)
        temporal = {f.name: i for i, f in enumerate(table.schema) if pa.types.is_temporal(f.type)}
        if temporal:
            known.update(temporal)
            table = _parse(block, known)
    except pa.ArrowInvalid:
        return None
    if table.num_rows != lines:
        return None
    if any(pa.types.is_floating(t) for t in table.schema.types) and _LONG_NUMBER in block.translate(_NUMBER_CHARS):
        return None
    if known:  # explicit columns come first: put them back where they are in the file
        names = [n for n in table.schema.names if n not in known]
        for name, place in sorted(known.items(), key=lambda kv: kv[1]):
            if name in table.schema.names:
                names.insert(min(place, len(names)), name)
        table = table.select(names)
    columns = []
    for field, values in zip(table.schema, table.columns, strict=True):
        typed = _as_decimal(values) if pa.types.is_floating(field.type) else values
        if typed is None or not (pa.types.is_floating(field.type) or _exact(field.type)):
            return None
        columns.append(typed)
    table = pa.Table.from_arrays(columns, names=table.schema.names)
    return SourceBatch(columns=table.schema.names, data=_one_batch(table), first_row=0, bad_rows=[])


def _lines_if_no_blank_line(block: bytes) -> int | None:
    """The number of lines in the block; None when one of them is blank (pyarrow skips those)."""
    data = np.frombuffer(block, dtype=np.uint8)
    newlines = np.flatnonzero(data == ord("\n"))
    starts = newlines[newlines < len(data) - 1] + 1
    # A blank line starts with whitespace: typical NDJSON has no line that does, and skips the search.
    starts_with_space = bool(len(data) and _SPACE_BYTES[data[0]]) or bool(_SPACE_BYTES[data[starts]].any())
    if starts_with_space and _has_blank_line(block):
        return None
    return len(newlines) + (0 if block.endswith(b"\n") else 1)


def _has_blank_line(block: bytes) -> bool:
    return _BLANK_LINE.search(b"\n" + block.rstrip(b"\r\n") + b"\n") is not None


def _parse(block: bytes, text_columns: dict[str, int]) -> pa.Table:
    schema = pa.schema([(name, pa.string()) for name in text_columns]) if text_columns else None
    return pajson.read_json(pa.BufferReader(block), read_options=pajson.ReadOptions(
        use_threads=False, block_size=len(block) + 1), parse_options=pajson.ParseOptions(
        explicit_schema=schema, unexpected_field_behavior="infer"))


def _as_decimal(column: pa.ChunkedArray) -> pa.Array | None:
    """float64 → the decimal its shortest round-trip text spells (12.5 → 12.5, not 12.4999...), with
    the scale of the longest fraction; None when that text needs an exponent (Arrow writes one below
    1e-6 and from 1e10 on).

    Computed on the numbers, not their text: the scale is the smallest s at which every value is
    its own rounding to s decimals (x == rint(x * 10^s) / 10^s), i.e. the longest fraction of the
    shortest texts, and the units rint(x * 10^s) are exact integers below 2^52. Numbers past that
    take the text route (`_as_decimal_text`), with the same result.
    """
    values = column.combine_chunks()
    x = pc.fill_null(values, 0.0).to_numpy()
    size = np.abs(x)
    if ((size < 1e-6) & (size != 0)).any() or (size >= 1e10).any():
        return None
    found = _scale_and_units(x)
    if found is None:
        return _as_decimal_text(values)
    scale, units = found
    mask = values.is_null().to_numpy(zero_copy_only=False) if values.null_count else None
    exact = pa.array(units.astype(np.int64), pa.int64(), mask=mask).cast(pa.decimal128(38, 0))
    return exact.view(pa.decimal128(38, scale))


def _scale_and_units(x: np.ndarray) -> tuple[int, np.ndarray] | None:
    for scale, power in enumerate(_POWERS_OF_TEN):
        units = np.rint(x * power)
        if (np.abs(units) >= 2.0 ** 52).any():
            return None
        if (units / power == x).all():
            return scale, units
    return None  # pragma: no cover - the 2^52 bound returns first


def _as_decimal_text(values: pa.Array) -> pa.Array | None:
    """`_as_decimal` through the shortest text of each value (slower: Arrow formats every number)."""
    text = values.cast(pa.string())
    if pc.any(pc.match_substring(text, "e")).as_py():
        return None
    dot = pc.find_substring(text, ".")
    decimals = pc.if_else(pc.greater_equal(dot, 0), pc.subtract(pc.subtract(pc.utf8_length(text), dot), 1), 0)
    scale = pc.max(decimals).as_py() or 0
    try:
        return text.cast(pa.decimal128(38, scale))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _exact(t: pa.DataType) -> bool:
    if pa.types.is_floating(t) or pa.types.is_temporal(t):
        return False
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _exact(t.value_type)
    if pa.types.is_struct(t):
        return all(_exact(t.field(i).type) for i in range(t.num_fields))
    return True


def _slow(block: bytes, line: int, row: int, name: str) -> SourceBatch:
    rows: list[dict[str, Any]] = []
    bad: list[BadRow] = []
    first = row
    for raw in block.split(b"\n"):
        text = raw.decode("utf-8").strip()
        if text:
            try:
                value = _DECODER.decode(text)
            except (ValueError, RecursionError) as exc:
                bad.append(BadRow(row, f"line {line} is not valid JSON: {_why(exc)}", text))
            else:
                if isinstance(value, dict):
                    rows.append(value)
                else:
                    bad.append(BadRow(row, f"line {line} is not a JSON object", text))
            row += 1
        line += 1
    return rows_batch(rows, first_row=first, bad_rows=bad)


# -- JSON: an array of objects, or objects one after another --------------------------------

def _values(chunks: Iterator[bytes], options: SourceOptions, name: str) -> Iterator[SourceBatch]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    text, pos, line, eof = "", 0, 1, False

    def more() -> None:
        nonlocal text, pos, eof
        chunk = next(chunks, None)
        eof = chunk is None
        text = text[pos:] + decoder.decode(chunk or b"", final=eof)
        pos = 0

    def skip_space() -> bool:
        """Move past whitespace; False at the end of the content."""
        nonlocal pos, line
        while True:
            end = _SPACE.match(text, pos).end()  # type: ignore[union-attr]
            line += text.count("\n", pos, end)
            pos = end
            if pos < len(text) or eof:
                return pos < len(text)
            more()

    more()
    skip_space()
    in_array = text.startswith("[", pos)
    if in_array:
        pos += 1
    rows: list[dict[str, Any]] = []
    bad: list[BadRow] = []
    row = first = 1
    size = 0  # characters of the elements gathered for the next batch
    expect_value = True
    while True:
        if not skip_space():
            if in_array:
                raise SourceError(f"{name}: malformed JSON: the top-level array is never closed (line {line})")
            break
        if in_array and text[pos] == "]" and (not expect_value or row == 1):
            pos += 1
            break
        if not expect_value:
            if text[pos] != ",":
                raise SourceError(f"{name}: malformed JSON near line {line}: expected ',' or ']' after "
                                  f"element {row - 1}")
            pos += 1
            expect_value = True
            continue
        try:
            value, end = _DECODER.raw_decode(text, pos)
            if end == len(text) and not eof:
                raise json.JSONDecodeError("value may continue", text, end)
        except json.JSONDecodeError as exc:
            if not eof:
                if len(text) - pos > options.max_field_bytes:
                    raise SourceError(f"{name}: the JSON value starting at line {line} is malformed or longer "
                                      f"than max_field_bytes ({options.max_field_bytes} bytes)") from exc
                more()
                continue
            raise SourceError(f"{name}: malformed JSON near line {line + text.count(chr(10), pos, exc.pos)}: "
                              f"{exc.msg}") from exc
        start_line = line
        line += text.count("\n", pos, end)
        size += end - pos
        pos = end
        if isinstance(value, dict):
            rows.append(value)
        else:
            what = f"element {row} of the top-level array" if in_array else f"value {row}"
            bad.append(BadRow(row, f"{what} (line {start_line}) is not a JSON object", _dump(value)))
        row += 1
        expect_value = not in_array
        if len(rows) + len(bad) >= _BATCH_ROWS or size >= options.block_size:
            yield rows_batch(rows, first_row=first, bad_rows=bad)
            rows, bad, first, size = [], [], row, 0
    if in_array and skip_space():
        raise SourceError(f"{name}: unexpected data after the top-level JSON array, line {line}")
    if rows or bad:
        yield rows_batch(rows, first_row=first, bad_rows=bad)


# -- Python objects → Arrow -------------------------------------------------------------------

def rows_batch(rows: list[dict[str, Any]], *, first_row: int, bad_rows: list[BadRow]) -> SourceBatch:
    """A batch from parsed objects: columns in order of first appearance, one Arrow type each.

    A column whose values do not share one Arrow type (a number here, text there) becomes
    text: the validate stage then types it from the text, exactly.
    """
    keys: dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(r))
    names = list(keys)
    arrays = [column([r.get(k) for r in rows], _text) for k in names]
    data = pa.RecordBatch.from_arrays(arrays, names=names) if names else _no_columns(len(rows))
    skipped = {b.row for b in bad_rows}
    start = next(r for r in range(first_row, first_row + len(rows) + len(bad_rows) + 1) if r not in skipped)
    return SourceBatch(columns=names, data=data, first_row=start, bad_rows=bad_rows)


def _text(value: Any) -> str:
    """Numbers as written (decimals keep their digits); lists and objects as JSON."""
    if isinstance(value, int | decimal.Decimal):
        return str(value)
    return _dump(value)


def _why(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} (column {exc.colno})"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _no_columns(n: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_struct_array(pa.array([{}] * n, pa.struct([])))


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    batches = table.combine_chunks().to_batches()
    return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)
