"""NDJSON blocks through pyarrow's JSON parser, read exactly as the line-by-line path reads them.

`parse_block` takes a block of whole lines when pyarrow's result is exact and its lines map
one-to-one onto rows; otherwise it returns None and the caller parses the block line by line.
Exact means:
- ISO strings stay text. pyarrow reads them as timestamps: such columns are parsed again as
  strings, and remembered (`Hints.text`) so that the next blocks parse them as strings at once.
- A number with a fraction is the decimal of its own text. A column pyarrow reads as float64 is
  remembered with its scale (`Hints.decimal`) and parsed as decimal128 from then on: pyarrow then
  converts each number's text itself, exactly, and fails the block on a number the scale or 38
  digits cannot hold (that block is parsed again with floats, and its scale learnt). Arrow's
  decimal conversion also takes numeric strings ("1.5"), which are text and must stay text: a
  block whose JSON has more string members than its string columns hold values is parsed again
  with floats (`_strings_stay_text`).
- A column still read as float64 (a new one, or a block that could not take the decimals) is
  taken only when no number-like run in the block is longer than 16 characters, i.e. every such
  number has at most 15 significant digits and survives float64 unchanged; it becomes the
  decimal its shortest text spells.
Either way a decimal column has the scale of the block's longest fraction (trailing zeros
dropped), and pyarrow's result does not depend on how the hints were reached (`_typed` learns
until nothing new is found), which `parsed_ahead` relies on: pyarrow parses without the GIL, so
up to `_PARSERS` blocks are parsed at once, each exactly as it would be alone, in file order.
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from pipeline.source import SourceBatch

# A run of more than 16 number characters may be a number float64 cannot hold exactly; found by
# mapping number characters to "#" (bytes.translate and `in` run at memory speed, a regex does not).
_NUMBER_CHARS = bytes.maketrans(bytes(range(256)), bytes(ord("#") if chr(b) in "0123456789.eE+-" else ord(" ")
                                                             for b in range(256)))
_LONG_NUMBER = b"#" * 17
_BLANK_LINE = re.compile(rb"\n[ \t\r]*\n")  # searched in "\n" + block + "\n": starts at a newline only
_POWERS_OF_TEN = 10.0 ** np.arange(23)  # exact as float64 up to 1e22
_INT_POWERS_OF_TEN = 10 ** np.arange(19, dtype=np.int64)
_HINT_SCALE = (6, 18)  # a remembered decimal column parses with at least 6, at most 18 decimals
_ROUNDS = 4  # parses of one block at most: each learns a column's kind or a larger scale
_PARSERS = 2  # blocks parsed at once: pyarrow's parser is single-threaded per call and releases the GIL
_COLON, _QUOTE, _SPACE = ord(":"), ord('"'), ord(" ")


@dataclass
class Hints:
    """What the blocks read so far found, applied to the next ones as pyarrow's explicit schema."""

    text: dict[str, int] = field(default_factory=dict)
    """ISO-string columns (pyarrow would read timestamps) → their place among the columns."""
    decimal: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Columns of numbers with a fraction → (place among the columns, scale they are parsed with)."""

    def copy(self) -> Hints:
        return Hints(dict(self.text), dict(self.decimal))

    def become(self, other: Hints) -> None:
        self.text, self.decimal = dict(other.text), dict(other.decimal)

    def places(self) -> dict[str, int]:
        return {**{name: place for name, (place, _) in self.decimal.items()}, **self.text}

    def schema(self, *, decimals: bool) -> pa.Schema | None:
        fields = [(name, pa.string()) for name in self.text]
        if decimals:
            fields += [(name, pa.decimal128(38, scale)) for name, (_, scale) in self.decimal.items()]
        return pa.schema(fields) if fields else None


class Scratch(threading.local):
    """Bool arrays for numpy's per-byte results on a block, one pair per thread, kept from block to
    block. Fresh ones would each be a block-sized mmap, page-faulted and unmapped again: the
    handler pins glibc's mmap threshold at 128 KiB (`pipeline.steps`), and three such arrays per
    2 MiB block cost +0.6 s CPU on the 250 MB benchmark file."""

    def __init__(self) -> None:
        self.bools = np.empty(0, dtype=bool)

    def two(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.bools) < 2 * n:
            self.bools = np.empty(2 * n, dtype=bool)
        return self.bools[:n], self.bools[n: 2 * n]


def parse_block(block: bytes, hints: Hints | None = None, scratch: Scratch | None = None) -> SourceBatch | None:
    """The block as one batch through pyarrow, or None when that would not be exact (see the module).

    `hints` is updated with what the block finds. The batch's `first_row` is left for the caller.
    """
    scratch = scratch if scratch is not None else Scratch()
    lines = _lines_if_no_blank_line(block, scratch)
    if lines is None:
        return None
    hints = hints if hints is not None else Hints()
    table = _typed(block, hints, scratch)
    if table is None or table.num_rows != lines:
        return None
    if any(pa.types.is_floating(t) for t in table.schema.types) and _LONG_NUMBER in block.translate(_NUMBER_CHARS):
        return None
    columns = []
    for f, values in zip(table.schema, table.columns, strict=True):
        if pa.types.is_floating(f.type):
            typed = _as_decimal(values)
        elif pa.types.is_decimal(f.type):
            typed = _least_scale(values.combine_chunks())
        else:
            typed = values if _exact(f.type) else None
        if typed is None:
            return None
        columns.append(typed)
    table = pa.Table.from_arrays(columns, names=table.schema.names)
    return SourceBatch(columns=table.schema.names, data=_one_batch(table), first_row=0, bad_rows=[])


def _typed(block: bytes, hints: Hints, scratch: Scratch) -> pa.Table | None:
    """The block parsed with every hint it gives itself: parsed again until it teaches nothing new,
    so the result is the same whichever (earlier) hints it started from."""
    for _ in range(_ROUNDS):
        table = _parse_hinted(block, hints, scratch)
        if table is None:
            return None
        table = _in_file_order(table, hints, block)
        if not _learn(table, hints):
            return table
    return None


def _parse_hinted(block: bytes, hints: Hints, scratch: Scratch) -> pa.Table | None:
    """With the decimal hints when the block takes them (numbers only in those columns), else with floats."""
    if hints.decimal:
        table = _parse(block, hints.schema(decimals=True))
        if table is not None and _strings_stay_text(block, table, scratch):
            return table
    return _parse(block, hints.schema(decimals=False))


def _parse(block: bytes, schema: pa.Schema | None) -> pa.Table | None:
    try:
        return pajson.read_json(pa.BufferReader(block), read_options=pajson.ReadOptions(
            use_threads=False, block_size=len(block) + 1), parse_options=pajson.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="infer"))
    except pa.ArrowInvalid:
        return None


def _in_file_order(table: pa.Table, hints: Hints, block: bytes) -> pa.Table:
    """pyarrow puts explicit columns first: put them back where they are in the file.

    The block's first line gives the order of its keys (they come first, as pyarrow's inference
    orders columns by first appearance); a column it lacks goes where it was first found.
    """
    places = hints.places()
    if not places:
        return table
    present = set(table.schema.names)
    lead = [name for name in dict.fromkeys(_first_keys(block)) if name in present]
    names = lead + [n for n in table.schema.names if n not in places and n not in lead]
    for name, place in sorted(places.items(), key=lambda kv: kv[1]):
        if name in present and name not in lead:
            names.insert(min(max(place, len(lead)), len(names)), name)
    return table.select(names)


def _first_keys(block: bytes) -> list[str]:
    end = block.find(b"\n")
    try:
        first = json.loads(block[: end if end >= 0 else len(block)])
    except (ValueError, RecursionError):
        return []
    return list(first) if isinstance(first, dict) else []


def _learn(table: pa.Table, hints: Hints) -> bool:
    """Remember the block's timestamp columns as text and its float64 columns as decimals; True when
    the hints changed (the block is then parsed again with them)."""
    changed = False
    nested = any(_has_struct(t) for t in table.schema.types)  # its members would fail `_strings_stay_text`
    for place, (f, values) in enumerate(zip(table.schema, table.columns, strict=True)):
        if pa.types.is_temporal(f.type) and f.name not in hints.text:
            hints.text[f.name] = place
            changed = True
        elif pa.types.is_floating(f.type) and not nested:
            decimals = _as_decimal(values)
            if decimals is None:
                continue
            had = hints.decimal.get(f.name)
            scale = min(max(decimals.type.scale, _HINT_SCALE[0]), _HINT_SCALE[1])
            if had is None or had[1] < scale:
                hints.decimal[f.name] = (had[0] if had else place, scale)
                changed = True
    return changed


def _strings_stay_text(block: bytes, table: pa.Table, scratch: Scratch) -> bool:
    """True when every string member of the block's objects is a value of a string column.

    A member's string value follows its colon directly or after one space: `:"` or `: "`. Inside a
    string a quote is escaped, so there those bytes only appear when a string ends with ':' (or
    ': '), which counts one more. Equal counts therefore mean that no other column (a decimal
    one, or a struct's member) was given a string. A colon followed by other whitespace is not
    counted: such a block is not trusted.
    """
    data = np.frombuffer(block, dtype=np.uint8)
    if len(data) < 3 or (data[-2:] == _COLON).any():
        return False
    colon, found = (a[: len(data) - 2] for a in scratch.two(len(data)))
    first = data[1:-1]
    np.equal(data[:-2], _COLON, out=colon)
    members = int(np.count_nonzero(np.logical_and(colon, np.equal(first, _QUOTE, out=found), out=found)))
    # whitespace bytes are those up to b" "; compact JSON has none after a colon
    spaced = np.logical_and(colon, np.less_equal(first, _SPACE, out=found), out=found)
    if spaced.any():
        where = np.flatnonzero(spaced)
        then = data[where + 2]
        if (data[where + 1] != _SPACE).any() or (then <= _SPACE).any():
            return False
        members += int(np.count_nonzero(then == _QUOTE))
    values = sum(len(c) - c.null_count for c, t in zip(table.columns, table.schema.types, strict=True)
                 if pa.types.is_string(t))
    return members == values


def _least_scale(values: pa.Array) -> pa.Array:
    """Decimals at the scale of their longest fraction (trailing zeros dropped), as the float route gives."""
    scale = values.type.scale
    words = np.frombuffer(values.buffers()[1], dtype=np.int64)[2 * values.offset: 2 * (values.offset + len(values))]
    low, high = words[0::2], words[1::2]
    valid = values.is_valid().to_numpy(zero_copy_only=False) if values.null_count else None
    if valid is not None:
        low, high = low[valid], high[valid]
    if not (high == (low >> 63)).all():  # beyond int64: Arrow's safe casts find the scale
        return next((cast for k in range(scale) if (cast := _rescaled(values, k)) is not None), values)
    least = next(k for k in range(scale + 1) if not (low % _INT_POWERS_OF_TEN[scale - k]).any())
    if least == scale:
        return values
    units = words[0::2] // _INT_POWERS_OF_TEN[scale - least]
    exact = pa.array(units, pa.int64(), mask=None if valid is None else ~valid).cast(pa.decimal128(38, 0))
    return exact.view(pa.decimal128(38, least))


def _rescaled(values: pa.Array, scale: int) -> pa.Array | None:
    try:
        return values.cast(pa.decimal128(38, scale))
    except pa.ArrowInvalid:  # would lose digits
        return None


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


def _has_struct(t: pa.DataType) -> bool:
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _has_struct(t.value_type)
    return pa.types.is_struct(t)


def _lines_if_no_blank_line(block: bytes, scratch: Scratch) -> int | None:
    """The number of lines in the block; None when one of them is blank (pyarrow skips those)."""
    data = np.frombuffer(block, dtype=np.uint8)
    if not len(data):
        return 1
    newline, after = scratch.two(len(data))
    np.equal(data, ord("\n"), out=newline)
    lines = int(np.count_nonzero(newline)) + (0 if block.endswith(b"\n") else 1)
    # A blank line starts with whitespace (a byte up to b" "): typical NDJSON has no line that does,
    # and skips the search.
    starts_with_space = bool(np.logical_and(newline[:-1], np.less_equal(data[1:], _SPACE, out=after[:-1]),
                                            out=after[:-1]).any())
    if (starts_with_space or data[0] <= _SPACE) and _has_blank_line(block):
        return None
    return lines


def _has_blank_line(block: bytes) -> bool:
    return _BLANK_LINE.search(b"\n" + block.rstrip(b"\r\n") + b"\n") is not None


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    batches = table.combine_chunks().to_batches()
    return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)


def parsed_ahead(blocks: Iterator[bytes], hints: Hints) -> Iterator[tuple[bytes, SourceBatch | None]]:
    """Every block with `parse_block(block, hints)`, in order, as if called one after another.

    The first block is parsed alone; then up to `_PARSERS` blocks at once (one more waits its
    turn), each from the hints known when it was handed out. `parse_block` depends on nothing
    else, and its result is the same from any hints that lead to the same ones (`_typed`), so it
    is the sequential one when the hints handed out are still the known ones, or when the block
    ended with the known ones itself (the common case: every block sees the same columns);
    otherwise the block is parsed again. A failure to read the next block is raised after the
    blocks read before it, as without threads. A file of one block is parsed here, without threads.
    """
    scratch = Scratch()
    pool: ThreadPoolExecutor | None = None
    first: bytes | None = None  # held back until a second block shows that threads are worth it
    ahead: deque[tuple[bytes, Hints, Hints, Future[SourceBatch | None]]] = deque()

    def hand_out(block: bytes) -> None:
        assert pool is not None
        found = hints.copy()
        ahead.append((block, found.copy(), found, pool.submit(parse_block, block, found, scratch)))

    def take() -> tuple[bytes, SourceBatch | None]:
        block, handed, found, parsed = ahead.popleft()
        if handed == hints or found == hints:
            batch = parsed.result()
            hints.become(found)
        else:  # an earlier block found other columns: parse again with them
            batch = parse_block(block, hints, scratch)
        return block, batch

    def rest() -> Iterator[tuple[bytes, SourceBatch | None]]:
        if first is not None:
            yield first, parse_block(first, hints, scratch)
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
                # The first block alone: the columns it finds are known to the blocks handed out
                # next, which then parse once instead of twice.
                yield first, parse_block(first, hints, scratch)
                first = None
                pool = ThreadPoolExecutor(_PARSERS, thread_name_prefix="caf-ndjson")
            hand_out(block)
            if len(ahead) > _PARSERS:
                yield take()
        yield from rest()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
