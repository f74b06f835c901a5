"""Values survive the whole path unchanged: read, typed, staged, loaded and read back from the warehouse."""

from __future__ import annotations

import datetime as dt
import gzip
from decimal import Decimal

import pytest

from tests.handlers.ingest_support import Ingest
from tests.handlers.test_ingest_formats import xlsx_bytes

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


@pytest.fixture
def ing(deps, tmp_path) -> Ingest:
    return Ingest(deps, tmp_path)


def register(ing: Ingest, fmt: str, *columns: str, extra: str = "") -> None:
    schema = "".join(f"      - {{name: {c.split(':')[0]}, type: {c.split(':')[1]}}}\n" for c in columns)
    ing.register(f"dataset: t\ntable: v\nsource: \"t/v/*\"\nformat: {fmt}\nschema:\n{schema}{extra}")


def test_numeric_keeps_nine_decimals(ing: Ingest) -> None:
    register(ing, "csv", "id:INT64", "amount:NUMERIC")
    values = ["0.123456789", "-0.000000001", "12345678901234567890123456789.987654321", "1"]
    csv = "id,amount\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values))
    row = ing.load("t/v/a.csv", csv)
    assert row.status == "SUCCESS", row.error_message
    assert [r[0] for r in ing.rows("t.v", "amount", "id")] == [Decimal(v) for v in values]


def test_timestamp_zone_offsets_in_every_iso_form(ing: Ingest) -> None:
    """`+01:00`, `+0100`, `+01`, `-05`, `Z` and no zone (UTC) mixed in one column: each its own instant."""
    register(ing, "csv", "id:INT64", "seen_at:TIMESTAMP")
    values = ["2024-01-02T03:04:05+01:00", "2024-01-02T03:04:05+0100", "2024-01-02T03:04:05-05",
              "2024-01-02T03+01", "2024-01-02T03:04:05Z", "2024-01-02 03:04:05", "2024-01-02T03:04:05.5-0530"]
    row = ing.load("t/v/a.csv", "id,seen_at\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)))
    assert row.status == "SUCCESS", row.error_message
    assert row.rows_rejected == 0
    got = [EPOCH + dt.timedelta(microseconds=r[0]) for r in ing.rows("t.v", "epoch_us(seen_at)", "id")]
    assert got == [dt.datetime(2024, 1, 2, 2, 4, 5, tzinfo=UTC), dt.datetime(2024, 1, 2, 2, 4, 5, tzinfo=UTC),
                   dt.datetime(2024, 1, 2, 8, 4, 5, tzinfo=UTC), dt.datetime(2024, 1, 2, 2, 0, 0, tzinfo=UTC),
                   dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
                   dt.datetime(2024, 1, 2, 8, 34, 5, 500000, tzinfo=UTC)]


def test_xlsx_row_of_zeros_is_data_not_an_empty_row(ing: Ingest) -> None:
    register(ing, "xlsx", "id:INT64", "qty:FLOAT64", "flag:BOOL", "note:STRING")
    data = xlsx_bytes({"Sheet": [["id", "qty", "flag", "note"], [1, 2.5, True, "a"], [0, 0.0, False, "0"],
                                 [0, 0, False, None], [None, None, None, ""], [4, 1, True, "d"]]})
    row = ing.load("t/v/a.xlsx", data)
    assert row.status == "SUCCESS", row.error_message
    assert ing.rows("t.v", "_source_row, id, qty, flag, note", "_source_row") == [
        (1, 1, 2.5, True, "a"), (2, 0, 0.0, False, "0"), (3, 0, 0.0, False, None), (5, 4, 1.0, True, "d")]


def test_gzip_limit_counts_every_decompressed_byte(ing: Ingest) -> None:
    """4 MB of content read in 64 KiB blocks against a 1 MiB limit: no single read is over the limit,
    their sum is."""
    ing.deps.settings = ing.deps.settings.model_copy(update={"ingest": ing.deps.settings.ingest.model_copy(
        update={"block_size_bytes": 64 << 10, "max_decompressed_bytes": 1 << 20})})
    register(ing, "csv", "id:INT64", "note:STRING")
    content = b"id,note\n" + b"".join(b"%d,%s\n" % (i, b"x" * 90) for i in range(44_000))
    assert len(content) > 4_000_000
    row = ing.load("t/v/big.csv.gz", gzip.compress(content))
    assert row.status == "ERROR"
    assert "max_decompressed_bytes" in row.error_message and str(1 << 20) in row.error_message
    assert ing.count("t.v") == 0


def test_json_column_keeps_nested_numbers_exact_whatever_the_shapes_mix(ing: Ingest) -> None:
    """An object in one record, an array in the next: the column is read as text, and its numbers
    stay numbers with every digit (not strings, not floats)."""
    register(ing, "ndjson", "id:INT64", "doc:JSON")
    lines = ['{"id": 1, "doc": {"k": 123456789012345678.123456789, "s": "1.5"}}', '{"id": 2, "doc": [1.50, "x", null]}']
    row = ing.load("t/v/a.ndjson", "\n".join(lines) + "\n")
    assert row.status == "SUCCESS", row.error_message
    assert ing.rows("t.v", "CAST(doc AS VARCHAR)", "id") == [
        ('{"k": 123456789012345678.123456789, "s": "1.5"}',), ('[1.5, "x", null]',)]
