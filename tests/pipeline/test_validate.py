"""The validate stage: header planning, typing every BigQuery type, and exact bad-row reporting."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adapters.warehouse.types import arrow_type
from errors import PermanentError
from pipeline.read import read_batches
from pipeline.source import SourceBatch, SourceOptions
from pipeline.validate import BadRow, HeaderPlan, ValidatedBatch, plan_header, validate_batch
from values.tables import Column, TableTarget

UTC = dt.UTC


def table(*columns: tuple[str, ...]) -> TableTarget:
    return TableTarget("sales", "orders", tuple(Column(*c) for c in columns))


def text_batch(values: dict[str, list[str | None]], first_row: int = 1) -> SourceBatch:
    data = pa.RecordBatch.from_pydict({k: pa.array(v, pa.string()) for k, v in values.items()})
    return SourceBatch(columns=list(values), data=data, first_row=first_row, bad_rows=[])


def identity(target: TableTarget) -> HeaderPlan:
    return HeaderPlan({c.name: c.name for c in target.columns}, [])


def one_column(bq_type: str, values: list[Any], mode: str = "NULLABLE") -> ValidatedBatch:
    target = table(("v", bq_type, mode))
    arr = values if isinstance(values, pa.Array) else pa.array(values)
    batch = SourceBatch(columns=["v"], data=pa.RecordBatch.from_arrays([arr], names=["v"]), first_row=1)
    return validate_batch(batch, identity(target), target)


def good(result: ValidatedBatch) -> list[Any]:
    return result.data.column("v").to_pylist()


def reasons(result: ValidatedBatch) -> list[tuple[int, str]]:
    return [(b.row, b.reason) for b in result.bad_rows]


# -- plan_header ----------------------------------------------------------------------------

ORDERS = table(("order_id", "INT64", "REQUIRED"), ("amount", "NUMERIC"), ("note", "STRING"))


def test_plan_exact_case_insensitive_and_column_map() -> None:
    plan = plan_header(["ORDER_ID", "amt", "note"], ORDERS, column_map={"amt": "amount"},
                       allow_new_columns=False, header=True)
    assert plan == HeaderPlan({"ORDER_ID": "order_id", "amt": "amount", "note": "note"}, [])


def test_plan_names_missing_and_unexpected_columns() -> None:
    with pytest.raises(PermanentError) as info:
        plan_header(["order_id", "amt", "note"], ORDERS, column_map={}, allow_new_columns=False, header=True)
    message = str(info.value)
    assert "missing column(s): amount" in message
    assert "unexpected column(s): amt (map them under columns: in the table definition (e.g. columns: " \
           '{"amt": amount}), add them to schema:, or set allow_new_columns: true' in message


def test_plan_missing_nullable_column_is_an_error() -> None:
    with pytest.raises(PermanentError, match="missing column\\(s\\): note"):
        plan_header(["order_id", "amount"], ORDERS, column_map={}, allow_new_columns=False, header=True)


def test_plan_new_columns_are_validated() -> None:
    plan = plan_header(["order_id", "amount", "note", "Region"], ORDERS, column_map={},
                       allow_new_columns=True, header=True)
    assert plan.new_columns == ["Region"]
    assert plan.source_to_target["Region"] == "Region"
    with pytest.raises(PermanentError, match="column name 'unit price' is invalid"):
        plan_header(["order_id", "amount", "note", "unit price"], ORDERS, column_map={},
                    allow_new_columns=True, header=True)
    with pytest.raises(PermanentError, match="reserved"):
        plan_header(["order_id", "amount", "note", "_source_row"], ORDERS, column_map={},
                    allow_new_columns=True, header=True)


def test_plan_duplicates() -> None:
    with pytest.raises(PermanentError, match="duplicate column\\(s\\): Amount"):
        plan_header(["order_id", "amount", "Amount", "note"], ORDERS, column_map={},
                    allow_new_columns=False, header=True)


def test_plan_without_header_is_positional() -> None:
    plan = plan_header(["col_1", "col_2", "col_3"], ORDERS, column_map={}, allow_new_columns=False, header=False)
    assert plan.source_to_target == {"col_1": "order_id", "col_2": "amount", "col_3": "note"}
    mapped = plan_header(["col_1", "col_2", "col_3"], ORDERS, column_map={"col_1": "note", "col_3": "order_id"},
                         allow_new_columns=False, header=False)
    assert mapped.source_to_target == {"col_1": "note", "col_2": "amount", "col_3": "order_id"}
    with pytest.raises(PermanentError, match="missing column\\(s\\): note"):
        plan_header(["col_1", "col_2"], ORDERS, column_map={}, allow_new_columns=False, header=False)
    extra = plan_header(["col_1", "col_2", "col_3", "col_4"], ORDERS, column_map={}, allow_new_columns=True,
                        header=False)
    assert extra.new_columns == ["col_4"]


# -- typing text ----------------------------------------------------------------------------

@pytest.mark.parametrize(("bq_type", "values", "expected", "bad"), [
    ("INT64", ["1", "-20", " 7 ", "", "1.5", "0x10", "9223372036854775808", None],
     [1, -20, 7, None, None], [5, 6, 7]),
    ("NUMERIC", ["1.5", "-0.000000001", "1e3", "abc", "0.0000000001", "1" * 30, None],
     [Decimal("1.5"), Decimal("-1E-9"), Decimal("1000"), None], [4, 5, 6]),
    ("FLOAT64", ["1.5", "-2", "NaN", "1,5", None], [1.5, -2.0, "nan", None], [4]),
    ("BOOL", ["true", "FALSE", "1", "0", "Yes", "n", "T", "maybe", None],
     [True, False, True, False, True, False, True, None], [8]),
    ("DATE", ["2024-01-02", "2024-02-30", "02/01/2024", None], [dt.date(2024, 1, 2), None], [2, 3]),
    ("DATETIME", ["2024-01-02 03:04:05", "2024-01-02T03:04:05.123456", "2024-01-02T03:04:05Z"],
     [dt.datetime(2024, 1, 2, 3, 4, 5), dt.datetime(2024, 1, 2, 3, 4, 5, 123456)], [3]),
    ("TIME", ["03:04:05", "23:59:59.5", "24:00:00", "3pm"], [dt.time(3, 4, 5), dt.time(23, 59, 59, 500000)],
     [3, 4]),
    ("JSON", ['{"a": [1, 2]}', "3", "{nope", None], ['{"a": [1, 2]}', "3", None], [3]),
    ("BYTES", ["aGVsbG8=", "", "not base64!"], [b"hello", b""], [3]),
    ("BIGNUMERIC", ["1" * 38 + "." + "2" * 38, "-1.5", "1e5", "x"], ["1" * 38 + "." + "2" * 38, "-1.5"], [3, 4]),
    ("STRING", ["", " as is ", None], ["", " as is ", None], []),
])
def test_text_to_each_type(bq_type: str, values: list[Any], expected: list[Any], bad: list[int]) -> None:
    result = one_column(bq_type, pa.array(values, pa.string()))
    got = good(result)
    if bq_type == "FLOAT64":
        got = ["nan" if v != v else v for v in got]
    assert got == expected
    assert [b.row for b in result.bad_rows] == bad
    assert result.data.schema.field("v").type == arrow_type(bq_type)
    assert result.data.column("_source_row").to_pylist() == [i for i in range(1, len(values) + 1) if i not in bad]


def test_timestamp_with_zone_and_naive_as_utc() -> None:
    result = one_column("TIMESTAMP", pa.array(["2024-01-02T03:04:05+01:00", "2024-01-02 03:04:05Z",
                                               "2024-01-02T03:04:05", "2024-01-02", "soon"]))
    assert good(result) == [dt.datetime(2024, 1, 2, 2, 4, 5, tzinfo=UTC), dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
                            dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), dt.datetime(2024, 1, 2, tzinfo=UTC)]
    assert reasons(result) == [(5, "column v: 'soon' is not a valid TIMESTAMP")]


def test_reason_and_raw_name_the_value() -> None:
    target = table(("id", "INT64"), ("amount", "NUMERIC"))
    batch = text_batch({"id": ["1", "2"], "amount": ["9.99", "abc"]}, first_row=41)
    result = validate_batch(batch, identity(target), target)
    assert result.bad_rows == [BadRow(42, "column amount: 'abc' is not a valid NUMERIC", {"id": "2", "amount": "abc"})]
    assert result.data.to_pylist() == [{"id": 1, "amount": Decimal("9.99"), "_source_row": 41}]


def test_several_bad_values_in_one_row_are_one_bad_row() -> None:
    target = table(("a", "INT64"), ("b", "DATE"))
    result = validate_batch(text_batch({"a": ["x"], "b": ["y"]}), identity(target), target)
    assert reasons(result) == [(1, "column a: 'x' is not a valid INT64; column b: 'y' is not a valid DATE")]


def test_required_null_is_a_bad_row() -> None:
    target = table(("order_id", "STRING", "REQUIRED"), ("qty", "INT64", "REQUIRED"))
    result = validate_batch(text_batch({"order_id": ["A", None, ""], "qty": ["1", "2", " "]}), identity(target), target)
    assert reasons(result) == [(2, "column order_id is REQUIRED but empty"), (3, "column qty is REQUIRED but empty")]
    assert result.data.column("order_id").to_pylist() == ["A"]


def test_new_columns_are_strings_after_registered_ones() -> None:
    target = table(("id", "INT64"))
    plan = plan_header(["extra", "id"], target, column_map={}, allow_new_columns=True, header=True)
    result = validate_batch(text_batch({"extra": ["x"], "id": ["5"]}), plan, target)
    assert result.data.schema.names == ["id", "extra", "_source_row"]
    assert result.data.to_pylist() == [{"id": 5, "extra": "x", "_source_row": 1}]


def test_unknown_column_in_a_later_batch_fails() -> None:
    target = table(("id", "INT64"))
    with pytest.raises(PermanentError, match="column\\(s\\) surprise appear from row 7"):
        validate_batch(text_batch({"id": ["1"], "surprise": ["x"]}, first_row=7), identity(target), target)


def test_empty_batch() -> None:
    result = validate_batch(text_batch({"order_id": [], "amount": [], "note": []}), identity(ORDERS), ORDERS)
    assert result.data.num_rows == 0 and result.bad_rows == []
    assert result.data.schema.names == ["order_id", "amount", "note", "_source_row"]


# -- already typed inputs -------------------------------------------------------------------

def test_typed_numbers() -> None:
    assert good(one_column("NUMERIC", pa.array([5, None], pa.int64()))) == [Decimal(5), None]
    result = one_column("INT64", pa.array([2.0, 2.5, 1e20]))
    assert good(result) == [2]
    assert reasons(result) == [(2, "column v: 2.5 is not a valid INT64"), (3, "column v: 1e+20 is not a valid INT64")]
    assert good(one_column("FLOAT64", pa.array([1, 2], pa.int32()))) == [1.0, 2.0]
    big = 443021102827542046  # past 2**53: the nearest double, as from the same digits in text
    assert good(one_column("FLOAT64", pa.array([big, -big]))) == [float(big), float(-big)]
    assert good(one_column("FLOAT64", pa.array([str(big)]))) == [float(big)]
    assert reasons(one_column("NUMERIC", pa.array([Decimal("0.1234567891"), Decimal("1.5")]))) == [
        (1, "column v: 0.1234567891 is not a valid NUMERIC: it has more than 9 digits after the decimal point "
            "(NUMERIC's limit; BIGNUMERIC keeps 38 of each)")]
    assert reasons(one_column("NUMERIC", ["1" + "0" * 29, "x1", "1.5"])) == [
        (1, "column v: '1" + "0" * 29 + "' is not a valid NUMERIC: it has more than 29 digits before the decimal "
            "point (NUMERIC's limit; BIGNUMERIC keeps 38 of each)"), (2, "column v: 'x1' is not a valid NUMERIC")]
    assert good(one_column("STRING", pa.array([1.5, 2.0]))) == ["1.5", "2"]
    assert reasons(one_column("BOOL", pa.array([0, 1, 2]))) == [(3, "column v: 2 is not a valid BOOL")]


def test_decimal_numbers_become_the_nearest_float64() -> None:
    # JSON numbers arrive as exact decimals (their text); the FLOAT64 must be the double nearest
    # that text, as every JSON parser gives, whatever scale the batch's decimals were read at.
    texts = [repr(i / 3) for i in range(1, 2000)] + ["0.1", "1e-7", "12345.6789", "-2.5"]
    for scale in (17, 20):
        values = pa.array([Decimal(t).quantize(Decimal(1).scaleb(-scale)) for t in texts], pa.decimal128(38, scale))
        assert good(one_column("FLOAT64", values)) == [float(t) for t in texts]


@pytest.mark.parametrize("bq_type", ["STRING", "JSON", "BIGNUMERIC"])
def test_decimal_numbers_as_text_depend_on_their_value_only(bq_type: str) -> None:
    # Arrow writes a decimal with its column's scale and small ones with an exponent ("0E-9",
    # "1.000E-7"): the same number read in another block would be other text, or no BIGNUMERIC.
    texts = ["0.0000001", "2.5", "100", "0", "-12.34", "0.00000000000000000001"]
    for scale in (9, 20):
        values = pa.array([Decimal(t) for t in texts[:5]] + [None], pa.decimal128(38, scale))
        assert good(one_column(bq_type, values)) == [*texts[:5], None]
    assert good(one_column(bq_type, pa.array([Decimal(texts[5])], pa.decimal128(38, 20)))) == [texts[5]]


def test_typed_dates_and_timestamps() -> None:
    stamps = pa.array([dt.datetime(2024, 1, 2), dt.datetime(2024, 1, 2, 3)], pa.timestamp("us"))
    result = one_column("DATE", stamps)
    assert good(result) == [dt.date(2024, 1, 2)]
    assert reasons(result) == [(2, "column v: '2024-01-02 03:00:00' is not a valid DATE: it has a time of day "
                                   "(03:00:00)")]
    assert good(one_column("TIMESTAMP", stamps)) == [dt.datetime(2024, 1, 2, tzinfo=UTC),
                                                     dt.datetime(2024, 1, 2, 3, tzinfo=UTC)]
    assert good(one_column("DATETIME", pa.array([dt.date(2024, 1, 2)]))) == [dt.datetime(2024, 1, 2)]


def test_nested_values() -> None:
    structs = pa.array([{"k": [1, 2]}, None])
    assert good(one_column("JSON", structs)) == ['{"k": [1, 2]}', None]
    with pytest.raises(PermanentError, match="column v: the file's struct<k: list<item: int64>> values cannot be"):
        one_column("INT64", structs)


def test_nested_decimals_become_exact_json_numbers() -> None:
    # json.dumps would write a decimal as a float (digits lost) or as a string (a number no more).
    structs = pa.array([{"k": Decimal("123456789012345678.123456789"), "d": dt.date(2026, 1, 2), "b": b"\x00"},
                        {"k": Decimal("-0.500"), "d": None, "b": None}])
    assert good(one_column("JSON", structs)) == [
        '{"k": 123456789012345678.123456789, "d": "2026-01-02", "b": "AA=="}', '{"k": -0.5, "d": null, "b": null}']
    no_decimal = pa.array([{"d": dt.date(2026, 1, 2), "n": [1.5]}])  # the json.dumps path writes the same
    assert good(one_column("JSON", no_decimal)) == ['{"d": "2026-01-02", "n": [1.5]}']


def test_repeated_from_lists_and_from_json_text() -> None:
    lists = pa.array([["1", "2"], [], None, ["3", None], ["x"]], pa.list_(pa.string()))
    result = one_column("INT64", lists, "REPEATED")
    assert good(result) == [[1, 2], [], None]
    assert reasons(result) == [(4, "column v: an array element is NULL"), (5, "column v: 'x' is not a valid INT64")]
    assert result.data.schema.field("v").type == pa.list_(pa.int64())
    from_text = one_column("DATE", pa.array(['["2024-01-02"]', "[]", "2024-01-02"]), "REPEATED")
    assert good(from_text) == [[dt.date(2024, 1, 2)], []]
    assert reasons(from_text) == [(3, "column v: '2024-01-02' is not a JSON array")]


# -- through the reader ---------------------------------------------------------------------

def test_bad_values_keep_exact_row_numbers_across_batches(tmp_path: Path) -> None:
    target = table(("id", "INT64", "REQUIRED"), ("amount", "NUMERIC"), ("day", "DATE"))
    lines = ["id,amount,day"]
    expected_bad = {}
    for i in range(1, 2001):
        amount, day = f"{i}.25", "2024-01-01"
        if i % 97 == 0:
            amount = "n/a"
            expected_bad[i] = "column amount: 'n/a' is not a valid NUMERIC"
        if i % 389 == 0:
            day = "2024-13-01"
            expected_bad[i] = (expected_bad[i] + "; " if i in expected_bad else "") + \
                "column day: '2024-13-01' is not a valid DATE"
        lines.append(f"{i},{amount},{day}")
    lines[1500] = "1500,ragged"
    path = tmp_path / "f.csv"
    path.write_text("\n".join(lines) + "\n")
    plan, staged, bad = None, [], []
    with path.open("rb") as stream:
        batches = list(read_batches(stream, SourceOptions(format="csv", block_size=1024), name="f.csv"))
    assert len(batches) > 20
    for batch in batches:
        plan = plan or plan_header(batch.columns, target, column_map={}, allow_new_columns=False, header=True)
        bad += [(b.row, b.reason) for b in batch.bad_rows]
        result = validate_batch(batch, plan, target)
        bad += [(b.row, b.reason) for b in result.bad_rows]
        staged += result.data.to_pylist()
    assert sorted(bad) == sorted([(1500, "expected 3 fields, got 2"), *expected_bad.items()])
    assert all(r["id"] == r["_source_row"] for r in staged)
    assert len(staged) == 2000 - len(expected_bad) - 1


def test_parquet_and_ndjson_inputs(tmp_path: Path) -> None:
    target = table(("id", "NUMERIC"), ("day", "DATE"), ("tags", "STRING", "REPEATED"), ("price", "NUMERIC"))
    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"id": pa.array([1, 2], pa.int64()),
                             "day": pa.array([dt.datetime(2024, 1, 2), dt.datetime(2024, 1, 2, 12)]),
                             "tags": [["a"], []], "price": [0.1, 2.5]}), path)
    with path.open("rb") as stream:
        (batch,) = list(read_batches(stream, SourceOptions(format="parquet"), name="f.parquet"))
    result = validate_batch(batch, identity(target), target)
    assert result.data.to_pylist() == [{"id": Decimal(1), "day": dt.date(2024, 1, 2), "tags": ["a"],
                                        "price": Decimal("0.1"), "_source_row": 1}]
    assert [b.row for b in result.bad_rows] == [2]
    data = '{"id": 12345678901234567890.123456789, "day": "2024-01-02", "tags": ["x", "y"], "price": 1}\n'
    (nd,) = list(read_batches(io.BytesIO(data.encode()), SourceOptions(format="ndjson"), name="f.ndjson"))
    typed = validate_batch(nd, identity(target), target)
    assert typed.data.to_pylist()[0]["id"] == Decimal("12345678901234567890.123456789")
    assert typed.data.to_pylist()[0]["tags"] == ["x", "y"]


def test_date_from_datetime_text_at_midnight_only() -> None:
    result = one_column("DATE", pa.array(["2020-01-01T00:00:00", "2020-01-02 00:00", "2020-01-03T13:30:00",
                                          "2020-02-30T00:00:00", "2020-01-04"]))
    assert good(result) == [dt.date(2020, 1, 1), dt.date(2020, 1, 2), dt.date(2020, 1, 4)]
    assert reasons(result) == [
        (3, "column v: '2020-01-03T13:30:00' is not a valid DATE: it has a time of day (13:30:00)"),
        (4, "column v: '2020-02-30T00:00:00' is not a valid DATE")]


def test_timestamp_mix_that_used_to_defeat_the_bad_value_search() -> None:
    """Each value alone casts; together they used to fail every cast and no value was found bad."""
    result = one_column("TIMESTAMP", pa.array(["2024-01-02T03+01", "2024-01-02T03:00:00Z", "2024-01-02T03:00:00"]))
    assert good(result) == [dt.datetime(2024, 1, 2, 2, tzinfo=UTC), dt.datetime(2024, 1, 2, 3, tzinfo=UTC),
                            dt.datetime(2024, 1, 2, 3, tzinfo=UTC)]
    assert result.bad_rows == []


def test_json_keys_per_row_reject_only_rows_with_a_value() -> None:
    target = table(("id", "INT64"))
    plan = plan_header(["id", "coupon"], target, column_map={}, allow_new_columns=False, header=True,
                       keys_per_row=True)
    assert plan.unknown_keys_reject_rows
    batch = text_batch({"id": ["1", "2", "3"], "coupon": [None, "X1", None]})
    result = validate_batch(batch, plan, target)
    assert result.data.column("id").to_pylist() == [1, 3]
    assert reasons(result) == [(2, "key coupon is not a column of sales.orders (add it to schema:, map it under "
                                   "columns: or set allow_new_columns: true)")]
    late = validate_batch(text_batch({"id": ["4"], "late": ["y"]}, first_row=4), plan, target)
    assert [b.row for b in late.bad_rows] == [4]  # a key first seen in a later batch: the same rule
    with pytest.raises(PermanentError, match="missing column\\(s\\): id; unexpected column\\(s\\): ID2"):
        plan_header(["ID2"], target, column_map={}, allow_new_columns=False, header=True, keys_per_row=True)


def test_json_key_absent_from_the_first_records_is_null_until_given_and_must_come() -> None:
    target = table(("id", "INT64"), ("note", "STRING"))
    plan = plan_header(["id"], target, column_map={}, allow_new_columns=False, header=True, keys_per_row=True)
    assert plan.unseen == ("note",)
    assert validate_batch(text_batch({"id": ["1"]}), plan, target).data.column("note").to_pylist() == [None]
    later = validate_batch(text_batch({"id": ["2"], "note": ["x"]}, first_row=2), plan, target)
    assert later.bad_rows == [] and later.data.column("note").to_pylist() == ["x"]
    folded = validate_batch(text_batch({"id": ["3"], " Note": ["y"]}, first_row=3), plan, target)
    assert folded.bad_rows == [] and folded.data.column("note").to_pylist() == ["y"]  # as the first rows match
    plan.missing_columns({"id", "note"}, target)  # given somewhere: nothing missing
    plan.missing_columns({"id", " Note"}, target)
    with pytest.raises(PermanentError, match="missing column\\(s\\): note"):
        plan.missing_columns({"id"}, target)
    with pytest.raises(PermanentError, match="missing column\\(s\\): note"):  # a header is the file's shape
        plan_header(["id"], target, column_map={}, allow_new_columns=False, header=True)
