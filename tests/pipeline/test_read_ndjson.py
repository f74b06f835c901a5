"""NDJSON blocks through pyarrow: exactly as the line-by-line path, and parsed several at a time exactly as one
block after another."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from pipeline.read import read_batches
from pipeline.readers import ndjson_blocks as ndjson
from pipeline.source import SourceError, SourceOptions


def _line(i: int, *, u_iso: bool) -> bytes:
    u = "2026-02-03T04:05:06Z" if u_iso else f"u{i}"
    return f'{{"a": {i}, "u": "{u}", "t": "2026-01-01T00:00:{i % 60:02d}Z"}}\n'.encode()


def test_blocks_parsed_ahead_match_the_sequential_parse() -> None:
    """Blocks are handed out before the blocks ahead of them are taken. Block 3 finds `u` to be a
    timestamp column, which block 4 (handed out before that was known) does not: block 4 is
    parsed again with `u` as text, as a sequential read does, so columns, order and types match."""
    blocks = [b"".join(_line(i, u_iso=n in (3, 5)) for i in range(n * 10, n * 10 + 10)) for n in range(8)]
    known = ndjson.Hints()
    expected = [ndjson.parse_block(block, known) for block in blocks]
    hints = ndjson.Hints()
    got = [batch for _, batch in ndjson.parsed_ahead(iter(blocks), hints)]
    assert hints == known
    assert all(b is not None for b in expected)
    assert [b.columns for b in got if b] == [b.columns for b in expected if b]
    assert [b.data for b in got if b] == [b.data for b in expected if b]


def test_a_read_failure_comes_after_the_blocks_read_before_it(tmp_path: Path) -> None:
    lines = b"".join(b'{"i": %d}\n' % i for i in range(1, 401))
    data = lines + b'{"i": "\xff"}\n'
    path = tmp_path / "f.ndjson"
    path.write_bytes(data)
    block = 256
    failing_chunk = data.index(b"\xff") // block
    before = data[: failing_chunk * block].count(b"\n")  # lines of the blocks read before that chunk
    seen: list[int] = []
    with path.open("rb") as stream, pytest.raises(SourceError, match="not valid UTF-8"):
        for batch in read_batches(stream, SourceOptions(format="ndjson", block_size=block), name=path.name):
            seen += batch.row_numbers().tolist()
    assert seen == list(range(1, before + 1))


def test_stopping_early_stops_the_parser_threads(tmp_path: Path) -> None:
    path = tmp_path / "f.ndjson"
    path.write_bytes(b"".join(b'{"i": %d, "s": "x"}\n' % i for i in range(20_000)))
    with path.open("rb") as stream:
        batches = read_batches(stream, SourceOptions(format="ndjson", block_size=4096), name=path.name)
        next(batches)
        batches.close()  # type: ignore[attr-defined]
    assert not [t for t in threading.enumerate() if t.name.startswith(("caf-ndjson", "caf-read-ahead"))]


def test_a_file_of_one_block_starts_no_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []
    pool = ndjson.ThreadPoolExecutor

    def spy(*args: Any, **kwargs: Any) -> Any:
        started.append("pool")
        return pool(*args, **kwargs)

    monkeypatch.setattr(ndjson, "ThreadPoolExecutor", spy)
    path = tmp_path / "f.ndjson"
    path.write_bytes(b'{"i": 1}\n{"i": 2}\n')
    with path.open("rb") as stream:
        batches = list(read_batches(stream, SourceOptions(format="ndjson", read_ahead=False), name=path.name))
    assert [b.data.to_pylist() for b in batches] == [[{"i": 1}, {"i": 2}]]
    assert started == []
    path.write_bytes(b'{"i": 1}\n' * 100)
    with path.open("rb") as stream:
        list(read_batches(stream, SourceOptions(format="ndjson", block_size=256), name=path.name))
    assert started == ["pool"]  # the spy sees pools when there are some


@pytest.mark.parametrize("blank", [b"\n", b"  \t\n", b"\r\n"])
def test_two_objects_on_a_line_and_a_blank_line_are_not_taken_as_one_row_per_line(tmp_path: Path,
                                                                                    blank: bytes) -> None:
    """pyarrow reads two objects on one line as two rows and skips blank lines: together the row
    count matches the line count, so blank lines are looked for before trusting it."""
    path = tmp_path / "f.ndjson"
    path.write_bytes(b'{"a": 1}{"a": 2}\n' + blank + b'{"a": 3}\n')
    with path.open("rb") as stream:
        batches = list(read_batches(stream, SourceOptions(format="ndjson"), name=path.name))
    assert [(r.row, r.reason.split(":")[0]) for b in batches for r in b.bad_rows] == [(1, "line 1 is not valid JSON")]
    assert [(n, v) for b in batches for n, v in zip(b.row_numbers().tolist(), b.data.to_pylist(), strict=True)] == [
        (2, {"a": 3})]


def test_a_fraction_float64_cannot_hold_keeps_all_its_digits(tmp_path: Path) -> None:
    """0.10000000000000001 is the float64 0.1: the block is read line by line instead, exactly."""
    path = tmp_path / "f.ndjson"
    path.write_bytes(b'{"n": 0.5}\n{"n": 0.10000000000000001}\n{"n": 2}\n')
    with path.open("rb") as stream:
        batches = list(read_batches(stream, SourceOptions(format="ndjson"), name=path.name))
    values = [v["n"] for b in batches for v in b.data.to_pylist()]
    assert [str(v) for v in values] == ["0.5", "0.10000000000000001", "2"]


def test_line_numbers_after_blocks_read_by_pyarrow(tmp_path: Path) -> None:
    """Lines of blocks pyarrow read are counted from their rows: a malformed line and a line over
    max_field_bytes after many such blocks still name their own line."""
    good = b"".join(b'{"i": %d, "s": "x"}\n' % i for i in range(1, 301))
    path = tmp_path / "f.ndjson"
    path.write_bytes(good + b'{"i": oops}\n' + good)
    with path.open("rb") as stream:
        batches = list(read_batches(stream, SourceOptions(format="ndjson", block_size=256), name=path.name))
    reasons = [(r.row, r.reason.split(":")[0]) for b in batches for r in b.bad_rows]
    assert reasons == [(301, "line 301 is not valid JSON")]
    path.write_bytes(good + b'{"s": "' + b"y" * 5000 + b'"}\n')
    with path.open("rb") as stream, pytest.raises(SourceError, match=r"line 301 is longer than max_field_bytes"):
        list(read_batches(stream, SourceOptions(format="ndjson", block_size=256, max_field_bytes=1000),
                          name=path.name))


def test_fractions_become_the_decimal_of_their_shortest_text() -> None:
    """The decimal is computed on the float64 values; it equals the one parsed from Arrow's shortest
    text of each value (type, scale and every value), and is None where that text has an exponent."""
    import random

    import pyarrow as pa

    rnd = random.Random(7)

    def number() -> float | None:
        digits = "".join(rnd.choice("0123456789") for _ in range(rnd.randint(1, 15)))
        point = rnd.randint(0, len(digits))
        text = rnd.choice([f"{digits[:point] or 0}.{digits[point:] or 0}", f"0.{'0' * rnd.randint(0, 6)}{digits}",
                           digits, f"{rnd.random() * 1000:.6f}"])
        return None if rnd.random() < 0.05 else float(rnd.choice(["", "-"]) + text)

    columns = [[number() for _ in range(rnd.randint(1, 40))] for _ in range(3000)]
    columns += [[0.0, -0.0, 1e-6, 9999999999.5], [12.5, None], [1e10], [9e-7, 1.0], [0.1, 7163981623.47719]]
    taken = 0
    for values in columns:
        column = pa.chunked_array([pa.array(values, pa.float64())])
        got, expected = ndjson._as_decimal(column), ndjson._as_decimal_text(column.combine_chunks())
        assert (got is None) == (expected is None), values
        if got is not None:
            assert got.type == expected.type and got.equals(expected), values
            taken += 1
    assert taken > 400  # a third of the columns have no exponent: the comparison is not vacuous


def _read_values(tmp_path: Path, lines: list[str], key: str) -> list[Any]:
    path = tmp_path / "f.ndjson"
    path.write_text("".join(line + "\n" for line in lines))
    with path.open("rb") as stream:
        batches = list(read_batches(stream, SourceOptions(format="ndjson", block_size=1024), name=path.name))
    assert len(batches) > 3
    assert not [r for b in batches for r in b.bad_rows]
    return [row[key] for b in batches for row in b.data.to_pylist()]


def test_numeric_strings_in_a_column_of_fractions_stay_text(tmp_path: Path) -> None:
    """Blocks after the first parse a column of fractions as decimals; Arrow would take the string
    "007.10" as the number 7.1 there. Strings stay text, as written (a block with numbers and
    strings in one column is text, numbers as written too)."""
    from decimal import Decimal

    lines = [f'{{"i": {i}, "n": {i}.25, "s": "x: {i}"}}' for i in range(100)]
    lines += [f'{{"i": {i}, "n": "007.10", "s": "y"}}' for i in range(100, 200)]
    lines += ['{"i": 200, "n": 1.5, "s": "y"}', '{"i": 201, "n": "2.50", "s": "y"}']
    values = _read_values(tmp_path, lines, "n")
    assert [str(v) for v in values[:100]] == [f"{i}.25" for i in range(100)]  # text in the block of both
    assert Decimal("0.25") in values[:100]
    assert values[100:200] == ["007.10"] * 100
    assert [str(v) for v in values[200:]] == ["1.5", "2.50"]


def test_a_number_a_known_decimal_column_cannot_hold_keeps_its_digits(tmp_path: Path) -> None:
    """A fraction longer than the scale a column is parsed with (or than float64 holds) after
    many blocks of short ones: read exactly, and the blocks after it still read as decimals."""
    from decimal import Decimal

    lines = [f'{{"n": {i}.5}}' for i in range(200)] + ['{"n": 0.10000000000000001}', '{"n": 1.123456789}']
    lines += [f'{{"n": {i}.75}}' for i in range(200)]
    values = _read_values(tmp_path, lines, "n")
    assert values[200:202] == [Decimal("0.10000000000000001"), Decimal("1.123456789")]  # not 0.1
    assert values[:200] == [Decimal(f"{i}.5") for i in range(200)]
    assert values[202:] == [Decimal(f"{i}.75") for i in range(200)]


def test_blocks_are_whole_lines_joined_once_from_the_pieces_read() -> None:
    """Pieces of any size become blocks of whole lines of about the block size, nothing lost or
    doubled; a line longer than max_field_bytes is raised after the whole lines before it."""
    import random

    from pipeline.readers import json as reader

    rnd = random.Random(3)
    lines = [b"x" * rnd.randint(0, 300) + b"\n" for _ in range(500)]
    content = b"".join(lines) + b"tail"
    for piece in (1, 7, 64, 1000, 5000):
        pieces = [content[i:i + piece] for i in range(0, len(content), piece)]
        blocks = list(reader._blocks(iter(pieces), 2048, 10_000))
        assert b"".join(blocks) == content
        assert all(b.endswith(b"\n") for b in blocks[:-1]) and blocks[-1].endswith(b"tail")
        assert all(len(b) > 2048 - 302 for b in blocks[:-2])  # cut at the last line end held at the size
    long = b"".join(lines[:20]) + b"y" * 3000 + b"\n"
    got: list[bytes] = []
    with pytest.raises(reader._LineTooLong):
        for block in reader._blocks(iter([long[i:i + 100] for i in range(0, len(long), 100)]), 1 << 20, 1000):
            got.append(block)
    assert b"".join(got) == b"".join(lines[:20])


def test_columns_keep_the_file_order_when_a_later_block_has_one_more() -> None:
    """Columns pyarrow is told about (timestamps read as text, decimals) come back where the block
    has them, also when a block has a column before them that earlier blocks did not."""
    first = b"".join(b'{"a": %d, "b": 1.5, "c": "x", "t": "2026-01-01T00:00:00Z"}\n' % i for i in range(5))
    later = b"".join(b'{"a": %d, "u": "2026-01-02", "b": 2.5, "c": "y", "t": "2026-01-01T00:00:00Z"}\n' % i
                     for i in range(5))
    hints = ndjson.Hints()
    batches = [ndjson.parse_block(block, hints) for block in (first, later, later)]
    assert [b.columns for b in batches if b] == [["a", "b", "c", "t"], ["a", "u", "b", "c", "t"],
                                                 ["a", "u", "b", "c", "t"]]


def test_decimals_parsed_at_a_hinted_scale_come_back_at_their_longest_fraction() -> None:
    """A column parsed as decimal128(38, 6) has the scale of its longest fraction, as the float
    route gives it: through int64 units, and through Arrow's casts past them."""
    from decimal import Decimal

    import pyarrow as pa

    def least(values: list[str | None]) -> tuple[int, list[Decimal | None]]:
        column = pa.array([None if v is None else Decimal(v) for v in values], pa.decimal128(38, 6))
        got = ndjson._least_scale(column)
        return got.type.scale, got.to_pylist()

    assert least(["1.5", None, "-2.25", "3"]) == (2, [Decimal("1.5"), None, Decimal("-2.25"), Decimal(3)])
    assert least(["7", "-8"]) == (0, [Decimal(7), Decimal(-8)])
    assert least(["0.000001"]) == (6, [Decimal("0.000001")])
    assert least(["12345678901234.5", None, "-99999999999999999.25"]) == (  # units past int64
        2, [Decimal("12345678901234.5"), None, Decimal("-99999999999999999.25")])
