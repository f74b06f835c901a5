"""NDJSON and JSON reader: one row per object, nested values kept as Arrow lists and structs.

NDJSON is read in blocks of whole lines. A block goes through pyarrow's JSON parser when that is
exact (`pipeline.readers.ndjson_blocks`: every line one object, ISO strings kept as text, numbers
with a fraction as the decimal of their text); otherwise it is parsed line by line with `json`
(numbers with a fraction as `Decimal`), which also isolates a malformed line as a bad row instead
of failing the file. Several blocks are parsed at once, each exactly as it would be alone and in
file order (`parsed_ahead`).

Rows are numbered by their order among the non-blank lines (for NDJSON without blank lines,
the line number). Format `json` takes a top-level array of objects, streamed element by
element, or a sequence of objects (NDJSON or pretty-printed objects one after another).
"""

from __future__ import annotations

import codecs
import decimal
import json
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

import pyarrow as pa

from pipeline.readers.columns import column, json_text
from pipeline.readers.ndjson_blocks import Hints, parsed_ahead
from pipeline.readers.streams import Utf8Stream, open_bytes
from pipeline.source import BadRow, SourceBatch, SourceError, SourceOptions

_DECODER = json.JSONDecoder(parse_float=decimal.Decimal)
_SPACE = re.compile(r"[ \t\n\r]*")
_BATCH_ROWS = 100_000
_PIECE = 120 << 10  # NDJSON bytes read at a time (see `_blocks`): under glibc's mmap threshold (128 KiB)


def read_json(stream: BinaryIO, options: SourceOptions, name: str) -> Iterator[SourceBatch]:
    text = Utf8Stream(open_bytes(stream, options, name), encoding=options.encoding, name=name, what=options.format)
    if options.format == "ndjson":
        yield from _ndjson(iter(lambda: text.read(min(options.block_size, _PIECE)), b""), options, name)
    else:
        yield from _values(iter(lambda: text.read(options.block_size), b""), options, name)


# -- NDJSON ---------------------------------------------------------------------------------

def _ndjson(pieces: Iterator[bytes], options: SourceOptions, name: str) -> Iterator[SourceBatch]:
    line, row = 1, 1
    hints = Hints()  # what the blocks read so far found (see ndjson_blocks)
    try:
        for block, fast in parsed_ahead(_blocks(pieces, options.block_size, options.max_field_bytes), hints):
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


def _blocks(pieces: Iterator[bytes], size: int, max_line: int) -> Iterator[bytes]:
    """The content in blocks of whole lines of about `size` bytes (the last one may lack its newline).

    The content comes in pieces of at most `_PIECE` bytes, joined once into each block: reading a
    whole block at a time would be one more block-sized allocation, an mmap of its own under the
    handler's pinned mmap threshold, page-faulted before the join copies it again.
    """
    held: list[bytes] = []  # pieces of the next block
    have = 0  # bytes held
    tail = 0  # bytes held after the last line end
    end: tuple[int, int] | None = None  # where the last line end is: piece held, offset
    for piece in pieces:
        cut = piece.rfind(b"\n")
        held.append(piece)
        have += len(piece)
        if cut >= 0:
            end, tail = (len(held) - 1, cut), len(piece) - cut - 1
        else:
            tail += len(piece)
        if tail > max_line:
            if end is not None:  # the lines before the long one first: `_ndjson` counts them
                yield _joined(held, end)
            raise _LineTooLong
        if have >= size and end is not None:
            yield _joined(held, end)
            rest = held[end[0]][end[1] + 1:]
            held, have, end = ([rest] if rest else []) + held[end[0] + 1:], tail, None
    if held:
        yield b"".join(held)


def _joined(held: list[bytes], end: tuple[int, int]) -> bytes:
    """The held pieces up to and including the line end at `end`, as one block."""
    last, cut = end
    if last == 0 and cut == len(held[0]) - 1:
        return held[0]
    return b"".join([*held[:last], memoryview(held[last])[: cut + 1]])


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
            bad.append(BadRow(row, f"{what} (line {start_line}) is not a JSON object", json_text(value)))
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
    arrays = [column([r.get(k) for r in rows], json_text) for k in names]
    data = pa.RecordBatch.from_arrays(arrays, names=names) if names else _no_columns(len(rows))
    skipped = {b.row for b in bad_rows}
    start = next(r for r in range(first_row, first_row + len(rows) + len(bad_rows) + 1) if r not in skipped)
    return SourceBatch(columns=names, data=data, first_row=start, bad_rows=bad_rows)


def _why(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} (column {exc.colno})"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)


def _no_columns(n: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_struct_array(pa.array([{}] * n, pa.struct([])))
