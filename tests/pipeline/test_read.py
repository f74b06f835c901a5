"""The read stage on real files written to tmp_path: every format, gzip, and the ways files go wrong."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.read import read_batches
from pipeline.source import SourceBatch, SourceError, SourceOptions


def read(path: Path, fmt: str = "csv", **options: Any) -> list[SourceBatch]:
    with path.open("rb") as stream:
        return list(read_batches(stream, SourceOptions(format=fmt, **options), name=path.name))


def write(tmp_path: Path, data: bytes, name: str = "f.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def rows(batches: list[SourceBatch]) -> list[tuple[int, dict[str, Any]]]:
    """(source row number, values) of every good row, across batches."""
    out = []
    for b in batches:
        out += list(zip(b.row_numbers().tolist(), b.data.to_pylist(), strict=True))
    return out


def bad(batches: list[SourceBatch]) -> list[tuple[int, str]]:
    return [(r.row, r.reason) for b in batches for r in b.bad_rows]


# -- CSV -----------------------------------------------------------------------------------

def test_csv_rfc4180_quoting_and_nulls(tmp_path: Path) -> None:
    data = b'id,text\r\n1,"a,b"\r\n2,"say ""hi"""\r\n3,"two\r\nlines"\r\n4,""\r\n5,\r\n'
    batches = read(write(tmp_path, data))
    assert batches[0].columns == ["id", "text"]
    assert rows(batches) == [
        (1, {"id": "1", "text": "a,b"}),
        (2, {"id": "2", "text": 'say "hi"'}),
        (3, {"id": "3", "text": "two\r\nlines"}),
        (4, {"id": "4", "text": ""}),  # quoted empty string stays a string
        (5, {"id": "5", "text": None}),  # unquoted empty is NULL
    ]
    assert all(pa.types.is_string(t) for t in batches[0].data.schema.types)


def test_csv_values_are_never_inferred(tmp_path: Path) -> None:
    batches = read(write(tmp_path, b"code,n\n007,1e3\n"))
    assert rows(batches) == [(1, {"code": "007", "n": "1e3"})]


class Pipe(io.RawIOBase):
    """A stream that can only be read forward (a socket, a pipe): no seek, no tell."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


@pytest.mark.parametrize("how", ["seekable", "gzip", "pipe"])
def test_wide_csv_values_are_never_inferred_in_any_column(tmp_path: Path, how: str) -> None:
    # Wider than the column-type map a file is first opened with: read again, all columns text
    # (without a header, pyarrow would otherwise infer numbers from the first rows).
    width = 300
    line = ",".join("007" if i % 2 else "1e3" for i in range(width)).encode()
    data = line + b"\n" + line + b"\n"
    if how == "pipe":
        batches = list(read_batches(Pipe(data), SourceOptions(format="csv", header=False), name="p"))  # type: ignore[arg-type]
    elif how == "gzip":
        batches = read(write(tmp_path, gzip.compress(data), "f.csv.gz"), gzip=True, header=False)
    else:
        batches = read(write(tmp_path, data), header=False)
    expected = {f"col_{i + 1}": "007" if i % 2 else "1e3" for i in range(width)}
    assert rows(batches) == [(1, expected), (2, expected)]
    assert all(pa.types.is_string(t) for b in batches for t in b.data.schema.types)


def test_csv_custom_null_markers_keep_quoted_values(tmp_path: Path) -> None:
    batches = read(write(tmp_path, b'a,b\nNULL,"NULL"\n,x\n'), null_markers=("NULL",))
    assert rows(batches) == [(1, {"a": None, "b": "NULL"}), (2, {"a": "", "b": "x"})]


def test_header_only_csv_gives_columns_and_no_rows(tmp_path: Path) -> None:
    batches = read(write(tmp_path, b"a,b\n"))
    assert [b.columns for b in batches] == [["a", "b"]]
    assert rows(batches) == []


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "json", "parquet", "xlsx"])
def test_empty_file_is_an_error(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(SourceError, match="file is empty"):
        read(write(tmp_path, b""), fmt)


def test_gzip_of_nothing_is_empty(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="file is empty"):
        read(write(tmp_path, gzip.compress(b"")), gzip=True)


def test_wrong_encoding_names_line_and_offset(tmp_path: Path) -> None:
    path = write(tmp_path, "name\nok\ncafé\n".encode("latin-1"))
    with pytest.raises(SourceError, match=r"not valid UTF-8 near line 3 \(byte offset 11\).*csv.encoding.*latin-1"):
        read(path)
    assert rows(read(path, encoding="latin-1")) == [(1, {"name": "ok"}), (2, {"name": "café"})]


def test_utf8_multibyte_across_blocks_and_bom(tmp_path: Path) -> None:
    data = "\ufeffname\n".encode() + ("é" * 50 + "\n").encode() * 20
    batches = read(write(tmp_path, data), block_size=33)
    assert batches[0].columns == ["name"]
    assert [v["name"] for _, v in rows(batches)] == ["é" * 50] * 20


def test_ragged_rows_are_bad_rows_and_keep_numbering(tmp_path: Path) -> None:
    lines = ["a,b"] + [f"{i},v{i}" for i in range(1, 201)]
    lines[50] = "short"  # data row 50
    lines[120] = '120,"quoted, with\nnewline"'  # fine: one record over two lines
    lines[121] = "121,too,many"  # data row 121
    lines[200] = "x"  # the last row
    path = write(tmp_path, ("\n".join(lines) + "\n").encode())
    batches = read(path, block_size=64)  # many blocks
    assert len(batches) > 10
    assert bad(batches) == [(50, "expected 2 fields, got 1"), (121, "expected 2 fields, got 3"),
                            (200, "expected 2 fields, got 1")]
    good = rows(batches)
    assert len(good) == 197
    assert all(values["a"] == str(number) for number, values in good)  # every row keeps its number
    assert [r.raw for b in batches for r in b.bad_rows] == ["short", "121,too,many", "x"]


def test_unterminated_quote_fails_the_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"unterminated quote.*row 2"):
        read(write(tmp_path, b'a,b\n1,x\n2,"open\n3,y\n'))
    with pytest.raises(SourceError, match="unterminated quote"):
        read(write(tmp_path, b'a\n1\n"open'))


def test_binary_garbage_fails_the_file(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
    with pytest.raises(SourceError, match=r"UTF-8|binary"):
        read(write(tmp_path, png))
    with pytest.raises(SourceError, match="NUL byte near line 2"):
        read(write(tmp_path, b"a,b\n1,\x00\n"))


def test_ten_megabyte_field(tmp_path: Path) -> None:
    big = "x" * (10 << 20)
    path = write(tmp_path, f"a,b\n1,short\n2,{big}\n3,\"{big}\"\n4,end\n".encode())
    batches = read(path, block_size=1 << 20)  # forces re-reading with larger blocks
    got = [(n, v["a"], len(v["b"])) for n, v in rows(batches)]
    assert got == [(1, "1", 5), (2, "2", 10 << 20), (3, "3", 10 << 20), (4, "4", 3)]


def test_ten_megabyte_field_in_gzip(tmp_path: Path) -> None:
    data = b"a,b\n1," + b"y" * (10 << 20) + b"\n2,z\n"
    batches = read(write(tmp_path, gzip.compress(data), "f.csv.gz"), gzip=True, block_size=1 << 20)
    assert [(n, len(v["b"])) for n, v in rows(batches)] == [(1, 10 << 20), (2, 1)]


def test_field_larger_than_max_field_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, b"a,b\n1," + b"x" * (3 << 20) + b"\n")
    with pytest.raises(SourceError, match="max_field_bytes"):
        read(path, block_size=1 << 18, max_field_bytes=1 << 20)


def test_tsv_skip_rows_and_no_header(tmp_path: Path) -> None:
    tsv = write(tmp_path, b"a\tb\n1\tx,y\n", "f.tsv")
    assert rows(read(tsv, "tsv")) == [(1, {"a": "1", "b": "x,y"})]
    skipped = write(tmp_path, b"exported by tool\n\nid;name\n1;x\n2;y\n")
    batches = read(skipped, delimiter=";", skip_rows=2)
    assert batches[0].columns == ["id", "name"]
    assert rows(batches) == [(1, {"id": "1", "name": "x"}), (2, {"id": "2", "name": "y"})]
    headless = read(write(tmp_path, b"1,x\n2,y\n"), header=False)
    assert headless[0].columns == ["col_1", "col_2"]
    assert rows(headless) == [(1, {"col_1": "1", "col_2": "x"}), (2, {"col_1": "2", "col_2": "y"})]
    with pytest.raises(SourceError, match="fewer than 9 rows to skip"):
        read(skipped, skip_rows=9)


def test_gzip_csv_and_its_failures(tmp_path: Path) -> None:
    data = b"a,b\n" + b"1,2\n" * 1000
    assert len(rows(read(write(tmp_path, gzip.compress(data), "f.csv.gz"), gzip=True))) == 1000
    with pytest.raises(SourceError, match="gzip stream is truncated/corrupt"):
        read(write(tmp_path, gzip.compress(data)[:-20], "t.csv.gz"), gzip=True)
    with pytest.raises(SourceError, match="gzip stream is truncated/corrupt"):
        read(write(tmp_path, data, "plain.csv.gz"), gzip=True)
    bomb = write(tmp_path, gzip.compress(b"a\n" + b"0\n" * 500_000), "bomb.csv.gz")
    with pytest.raises(SourceError, match="decompressed size exceeds 10000 bytes"):
        read(bomb, gzip=True, max_decompressed_bytes=10_000)


def test_options_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path, b"a\n1\n")
    with pytest.raises(SourceError, match="unknown format 'xml'"):
        read(path, "xml")
    with pytest.raises(SourceError, match="unknown encoding"):
        read(path, encoding="klingon")


def test_non_seekable_stream_still_reads(tmp_path: Path) -> None:
    table = pa.table({"a": [1, 2]})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    batches = list(read_batches(Pipe(sink.getvalue()), SourceOptions(format="parquet"), name="p"))  # type: ignore[arg-type]
    assert rows(batches) == [(1, {"a": 1}), (2, {"a": 2})]
    csv = list(read_batches(Pipe(b"a\n1\n"), SourceOptions(format="csv"), name="c"))  # type: ignore[arg-type]
    assert rows(csv) == [(1, {"a": "1"})]


def test_stream_failures_are_not_source_errors() -> None:
    class Flaky(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            raise ConnectionError("storage read timed out")

    # Plain and gzipped (the stream's failure must pass through the gzip layer untranslated too).
    for fmt, gz in (("csv", False), ("ndjson", False), ("parquet", False), ("csv", True), ("ndjson", True)):
        with pytest.raises(ConnectionError):
            list(read_batches(Flaky(), SourceOptions(format=fmt, gzip=gz), name="f"))  # type: ignore[arg-type]


def test_stopping_early_stops_the_read_ahead(tmp_path: Path) -> None:
    import threading

    path = write(tmp_path, b"a\n" + b"1\n" * 100_000)
    with path.open("rb") as stream:
        batches = read_batches(stream, SourceOptions(format="csv", block_size=1024), name=path.name)
        next(batches)
        batches.close()  # type: ignore[attr-defined]
    assert not [t for t in threading.enumerate() if t.name == "caf-read-ahead"]


# -- NDJSON / JSON -------------------------------------------------------------------------

def test_ndjson_keeps_nested_types(tmp_path: Path) -> None:
    lines = [{"id": 1, "tags": ["a", "b"], "who": {"n": "x"}}, {"id": 2, "tags": [], "who": None}]
    path = write(tmp_path, "\n".join(json.dumps(r) for r in lines).encode(), "f.ndjson")
    batches = read(path, "ndjson")
    assert batches[0].columns == ["id", "tags", "who"]
    schema = batches[0].data.schema
    assert schema.field("tags").type == pa.list_(pa.string())
    assert pa.types.is_struct(schema.field("who").type)
    assert rows(batches) == [(1, lines[0]), (2, lines[1])]


def test_ndjson_numbers_and_timestamps_stay_exact(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"n": 12345678901234567.123456789, "t": "2024-01-02T03:04:05.5+01:00"}\n', "f.ndjson")
    (_, values), = rows(read(path, "ndjson"))
    assert str(values["n"]) == "12345678901234567.123456789"
    assert values["t"] == "2024-01-02T03:04:05.5+01:00"


def test_ndjson_fast_path_keeps_values_text_and_column_order_across_blocks(tmp_path: Path) -> None:
    """Typical NDJSON goes through pyarrow's parser (fast) and must read exactly as the line-by-line
    path would: fractions as their decimal value, ISO strings as text, the file's column order."""
    from decimal import Decimal

    line = ('{{"id": {i}, "amount": {a}, "price": 0.1, "at": "2026-01-0{d}T12:00:07Z", "day": "2026-01-01", '
            '"tags": ["x"], "ok": true}}')
    data = "\n".join(line.format(i=i, a=["123456789.123456", "12.5", "7"][i % 3], d=i % 9 + 1)
                     for i in range(1, 301)).encode() + b"\n"
    batches = read(write(tmp_path, data, "f.ndjson"), "ndjson", block_size=4096)
    assert len(batches) > 3
    assert {tuple(b.columns) for b in batches} == {("id", "amount", "price", "at", "day", "tags", "ok")}
    got = rows(batches)
    assert [r for r, _ in got] == list(range(1, 301))
    assert got[0][1] == {"id": 1, "amount": Decimal("12.5"), "price": Decimal("0.1"), "at": "2026-01-02T12:00:07Z",
                         "day": "2026-01-01", "tags": ["x"], "ok": True}
    assert got[2][1]["amount"] == Decimal("123456789.123456")  # not 123456789.12345600128173828125


def test_ndjson_malformed_lines_are_bad_rows(tmp_path: Path) -> None:
    deep = b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    data = b'{"a": 1}\n{"a": \n{"a": 3}\n\n[4]\n{"a": 5}\n' + deep + b"\n"
    batches = read(write(tmp_path, data, "f.ndjson"), "ndjson")
    assert [(n, v["a"]) for n, v in rows(batches)] == [(1, 1), (3, 3), (5, 5)]
    reasons = bad(batches)
    assert reasons[0][0] == 2 and reasons[0][1].startswith("line 2 is not valid JSON: Expecting value")
    assert reasons[1:] == [(4, "line 5 is not a JSON object"), (6, "line 7 is not valid JSON: nested too deeply")]


def test_ndjson_gzip_and_many_blocks(tmp_path: Path) -> None:
    data = "".join(json.dumps({"i": i, "s": "x" * (i % 7)}) + "\n" for i in range(1, 501)).encode()
    batches = read(write(tmp_path, gzip.compress(data), "f.ndjson.gz"), "ndjson", gzip=True, block_size=256)
    assert len(batches) > 10
    assert all(values["i"] == n for n, values in rows(batches))


def test_json_array_streams_elements(tmp_path: Path) -> None:
    elements = [{"i": i, "nested": {"k": [i, i + 1]}} for i in range(1, 301)]
    path = write(tmp_path, json.dumps(elements, indent=2).encode(), "f.json")
    batches = read(path, "json", block_size=512)
    assert [v["i"] for _, v in rows(batches)] == list(range(1, 301))
    assert rows(batches)[0][1]["nested"] == {"k": [1, 2]}


def test_json_array_non_objects_and_malformed(tmp_path: Path) -> None:
    batches = read(write(tmp_path, b'[{"a": 1}, 2, {"a": 3}]', "f.json"), "json")
    assert [n for n, _ in rows(batches)] == [1, 3]
    assert bad(batches) == [(2, "element 2 of the top-level array (line 1) is not a JSON object")]
    with pytest.raises(SourceError, match="never closed"):
        read(write(tmp_path, b'[{"a": 1},\n {"a": 2}', "g.json"), "json")
    with pytest.raises(SourceError, match="malformed JSON near line 2"):
        read(write(tmp_path, b'[{"a": 1},\n {"a": }]', "h.json"), "json")


def test_ndjson_column_mixing_kinds_reads_as_exact_text(tmp_path: Path) -> None:
    data = b'{"v": true}\n{"v": 12345678901234567890.5}\n{"v": {"k": [1, null]}}\n{"v": "x"}\n{"v": null}\n'
    batches = read(write(tmp_path, data, "f.ndjson"), "ndjson")
    assert [v["v"] for _, v in rows(batches)] == ["true", "12345678901234567890.5", '{"k": [1, null]}', "x", None]


def test_json_accepts_ndjson_content(tmp_path: Path) -> None:
    batches = read(write(tmp_path, b'{"a": 1}\n{"a": 2}\n', "f.json"), "json")
    assert rows(batches) == [(1, {"a": 1}), (2, {"a": 2})]


# -- Parquet -------------------------------------------------------------------------------

def test_parquet_batches_keep_types_and_numbers(tmp_path: Path) -> None:
    table = pa.table({"id": pa.array(range(1, 150_001), pa.int64()), "tags": [["a"]] * 150_000})
    path = tmp_path / "f.parquet"
    pq.write_table(table, path, row_group_size=40_000)
    batches = read(path, "parquet")
    assert len(batches) > 1
    assert batches[0].data.schema.field("tags").type == pa.list_(pa.string())
    numbers = [n for b in batches for n in b.row_numbers().tolist()]
    ids = [i for b in batches for i in b.data.column("id").to_pylist()]
    assert numbers == ids


def test_parquet_gzip_and_garbage(tmp_path: Path) -> None:
    sink = io.BytesIO()
    pq.write_table(pa.table({"a": [1]}), sink)
    assert rows(read(write(tmp_path, gzip.compress(sink.getvalue()), "f.parquet.gz"), "parquet", gzip=True)) == [
        (1, {"a": 1})]
    with pytest.raises(SourceError, match="not a valid Parquet file"):
        read(write(tmp_path, b"this is not parquet" * 10, "g.parquet"), "parquet")


# -- XLSX ----------------------------------------------------------------------------------

@pytest.fixture
def workbook(tmp_path: Path) -> Path:
    from datetime import datetime

    from openpyxl import Workbook

    book = Workbook()
    first = book.active
    first.title = "Summary"
    first.append(["note"])
    first.append(["see Orders"])
    orders = book.create_sheet("Orders")
    orders.append(["id", "when", "amount", "code"])
    orders.append([1, datetime(2024, 1, 2, 3, 4, 5), 10.5, "A"])
    orders.append([2, datetime(2024, 1, 3), 7, 42])
    orders.append([])  # a gap inside the data
    orders.append([4, None, None, "D", "extra"])  # ragged
    orders.append([5, None, 1, "E"])
    for _ in range(3):
        orders.append([None, None])  # trailing empty rows
    path = tmp_path / "f.xlsx"
    book.save(path)
    return path


def test_xlsx_named_sheet(workbook: Path) -> None:
    batches = read(workbook, "xlsx", sheet="Orders")
    assert batches[0].columns == ["id", "when", "amount", "code"]
    got = rows(batches)
    assert [n for n, _ in got] == [1, 2, 5]  # sheet row - header row
    assert got[0][1]["when"].isoformat() == "2024-01-02T03:04:05"
    assert [v["code"] for _, v in got] == ["A", "42", "E"]  # mixed column → text
    assert bad(batches) == [(4, "expected 4 fields, got 5")]


def test_xlsx_default_first_sheet_and_unknown_sheet(workbook: Path) -> None:
    assert rows(read(workbook, "xlsx")) == [(1, {"note": "see Orders"})]
    with pytest.raises(SourceError, match="no sheet named 'Nope'; the workbook has: 'Summary', 'Orders'"):
        read(workbook, "xlsx", sheet="Nope")


def test_xlsx_without_header(workbook: Path) -> None:
    batches = read(workbook, "xlsx", sheet="Orders", header=False, skip_rows=1)
    assert batches[0].columns == ["col_1", "col_2", "col_3", "col_4"]
    assert [(n, v["col_1"]) for n, v in rows(batches)] == [(1, 1), (2, 2), (5, 5)]


def test_xlsx_garbage(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not a valid xlsx"):
        read(write(tmp_path, b"PK\x03\x04 not really a zip", "f.xlsx"), "xlsx")


# -- fuzz ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["csv", "ndjson", "json"])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=300),
                      st.text(alphabet='ab,"\n\r{}[]:1 \\', max_size=200).map(str.encode)))
def test_random_bytes_only_ever_raise_source_error(fmt: str, data: bytes) -> None:
    try:
        for batch in read_batches(io.BytesIO(data), SourceOptions(format=fmt, block_size=64), name="fuzz"):
            batch.row_numbers()
    except SourceError:
        pass
