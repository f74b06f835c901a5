"""Every format, every write mode and every bad input, end to end through handle_raw_file."""

from __future__ import annotations

import gzip
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.handlers.ingest_support import ORDERS, Ingest

PEOPLE = """\
    dataset: crm
    table: people
    source: "crm/people/*"
    format: {fmt}
    schema:
      - {{name: id, type: INT64, mode: REQUIRED}}
      - {{name: name, type: STRING}}
      - {{name: score, type: FLOAT64}}
      - {{name: born, type: DATE}}
    keys: [id]
    write_mode: {mode}
    max_bad_records: 0
"""


@pytest.fixture
def ing(deps, tmp_path) -> Ingest:
    return Ingest(deps, tmp_path)


def people(ing: Ingest, fmt: str, mode: str = "append", extra: str = "") -> None:
    ing.register(PEOPLE.format(fmt=fmt, mode=mode) + extra)


def xlsx_bytes(sheets: dict[str, list[list[object]]]) -> bytes:
    from openpyxl import Workbook

    book = Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


EXPECTED = [(1, "Ann", 1.5), (2, "Bo Ö", None)]


@pytest.mark.parametrize(
    ("fmt", "name", "payload"),
    [
        ("csv", "crm/people/a.csv", "id,name,score,born\n1,Ann,1.5,2000-01-02\n2,Bo Ö,,2001-03-04\n"),
        ("tsv", "crm/people/a.tsv", "id\tname\tscore\tborn\n1\tAnn\t1.5\t2000-01-02\n2\tBo Ö\t\t2001-03-04\n"),
        ("ndjson", "crm/people/a.ndjson", '{"id": 1, "name": "Ann", "score": 1.5, "born": "2000-01-02"}\n'
                                          '{"id": 2, "name": "Bo Ö", "score": null, "born": "2001-03-04"}\n'),
        ("ndjson", "crm/people/a.ndjson.gz", gzip.compress(
            b'{"id": 1, "name": "Ann", "score": 1.5, "born": "2000-01-02"}\n'
            b'{"id": 2, "name": "Bo \xc3\x96", "score": null, "born": "2001-03-04"}\n')),
        ("json", "crm/people/a.json", json.dumps([
            {"id": 1, "name": "Ann", "score": 1.5, "born": "2000-01-02"},
            {"id": 2, "name": "Bo Ö", "score": None, "born": "2001-03-04"}])),
        ("csv", "crm/people/a.csv.gz", gzip.compress("id,name,score,born\n1,Ann,1.5,2000-01-02\n"
                                                     "2,Bo Ö,,2001-03-04\n".encode())),
    ],
)
def test_every_text_format_loads(ing: Ingest, fmt: str, name: str, payload: str | bytes) -> None:
    people(ing, fmt)
    row = ing.load(name, payload)
    assert row.status == "SUCCESS", row.error_message
    assert ing.rows("crm.people", "id, name, score") == EXPECTED
    assert [r[0] for r in ing.rows("crm.people", "_source_row")] == [1, 2]


def test_parquet_loads(ing: Ingest) -> None:
    people(ing, "parquet")
    table = pa.table({"id": [1, 2], "name": ["Ann", "Bo Ö"], "score": [1.5, None],
                      "born": pa.array([10958, 11385], pa.date32())})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    row = ing.load("crm/people/a.parquet", buf.getvalue())
    assert row.status == "SUCCESS", row.error_message
    assert ing.rows("crm.people", "id, name, score") == EXPECTED


def test_xlsx_with_several_sheets_loads_the_named_one(ing: Ingest) -> None:
    people(ing, "xlsx", extra="    sheet: People\n")
    data = xlsx_bytes({"Readme": [["not data"]],
                       "People": [["id", "name", "score", "born"], [1, "Ann", 1.5, "2000-01-02"],
                                  [2, "Bo Ö", None, "2001-03-04"]]})
    row = ing.load("crm/people/a.xlsx", data)
    assert row.status == "SUCCESS", row.error_message
    assert ing.rows("crm.people", "id, name, score") == EXPECTED


def test_xlsx_unknown_sheet_fails_listing_the_sheets(ing: Ingest) -> None:
    people(ing, "xlsx", extra="    sheet: Persons\n")
    row = ing.load("crm/people/a.xlsx", xlsx_bytes({"Readme": [["x"]], "People": [["id"]]}))
    assert row.status == "ERROR"
    assert "Persons" in row.error_message and "People" in row.error_message


def test_merge_upserts_on_keys(ing: Ingest) -> None:
    people(ing, "csv", mode="merge")
    ing.load("crm/people/1.csv", "id,name,score,born\n1,Ann,1,2000-01-01\n2,Bo,2,2000-01-01\n")
    ing.load("crm/people/2.csv", "id,name,score,born\n2,Bob,3,2000-01-01\n3,Cy,4,2000-01-01\n")
    assert ing.rows("crm.people", "id, name") == [(1, "Ann"), (2, "Bob"), (3, "Cy")]
    second = ing.load("crm/people/2.csv", "id,name,score,born\n2,Bobby,3,2000-01-01\n")  # new generation
    assert second.status == "SUCCESS"
    assert ing.rows("crm.people", "id, name") == [(1, "Ann"), (2, "Bobby")]


def test_replace_swaps_the_whole_table(ing: Ingest) -> None:
    people(ing, "csv", mode="replace")
    ing.load("crm/people/1.csv", "id,name,score,born\n1,Ann,1,2000-01-01\n2,Bo,2,2000-01-01\n")
    ing.load("crm/people/2.csv", "id,name,score,born\n3,Cy,4,2000-01-01\n")
    assert ing.rows("crm.people", "id") == [(3,)]


def test_replace_with_partition_field_swaps_only_the_files_partitions(ing: Ingest) -> None:
    people(ing, "csv", mode="replace", extra="    partition_field: born\n")
    ing.load("crm/people/1.csv", "id,name,score,born\n1,Ann,1,2000-01-01\n2,Bo,2,2000-01-02\n")
    ing.load("crm/people/2.csv", "id,name,score,born\n3,Cy,4,2000-01-02\n")
    assert ing.rows("crm.people", "id") == [(1,), (3,)]


BAD_INPUTS = {
    "zero_bytes": ("crm/people/empty.csv", b"", "empty"),
    "wrong_encoding": ("crm/people/latin.csv", "id,name,score,born\n1,Jos\xe9,1,2000-01-01\n".encode("latin-1"),
                       "utf-8"),
    "unterminated_quote": ("crm/people/quote.csv", b'id,name,score,born\n1,"Ann,1,2000-01-01\n2,Bo,2,2000-01-01\n',
                           "quote"),
    "binary_garbage": ("crm/people/garbage.csv", bytes(range(256)) * 40, ""),
    "truncated_gzip": ("crm/people/cut.csv.gz",
                       gzip.compress(b"id,name,score,born\n" + b"1,Ann,1,2000-01-01\n" * 500)[:-40], "gzip"),
    "unknown_extension": ("crm/people/tool.exe", b"MZ\x90\x00", ".exe"),
    "ragged_rows": ("crm/people/ragged.csv", b"id,name,score,born\n1,Ann,1,2000-01-01\n2,Bo,2,2000-01-01,extra\n", ""),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_ends_in_a_recorded_error_with_nothing_loaded(ing: Ingest, case: str) -> None:
    name, payload, hint = BAD_INPUTS[case]
    people(ing, "csv")
    info = ing.put(name, payload)
    assert ing.deliver(info) == 200
    row = ing.file(info)
    assert row.status == "ERROR", (case, row.status, row.rows_loaded)
    assert row.error_message and hint.lower() in row.error_message.lower()
    assert ing.count("crm.people") == 0
    assert ing.exists(f"failed/{name}")


def test_ragged_rows_within_max_bad_records_are_quarantined(ing: Ingest) -> None:
    ing.register(PEOPLE.format(fmt="csv", mode="append").replace("max_bad_records: 0", "max_bad_records: 1"))
    info = ing.put("crm/people/ragged.csv", b"id,name,score,born\n1,Ann,1,2000-01-01\n2,Bo,2,2000-01-01,x\n"
                                            b"3,Cy,3,2000-01-01\n")
    assert ing.deliver(info) == 200
    row = ing.file(info)
    assert (row.status, row.rows_loaded, row.rows_rejected) == ("SUCCESS", 2, 1)
    assert ing.rows("crm.people", "id, _source_row") == [(1, 1), (3, 3)]
    assert ing.quarantine(info)[0]["row"] == 2


def test_header_only_csv_succeeds_with_zero_rows(ing: Ingest) -> None:
    people(ing, "csv")
    row = ing.load("crm/people/header.csv", "id,name,score,born\n")
    assert (row.status, row.rows_read, row.rows_loaded) == ("SUCCESS", 0, 0)


def test_declared_latin1_encoding_loads(ing: Ingest) -> None:
    people(ing, "csv", extra='    csv: {encoding: latin-1}\n')
    row = ing.load("crm/people/latin.csv", "id,name,score,born\n1,José,1,2000-01-01\n".encode("latin-1"))
    assert row.status == "SUCCESS", row.error_message
    assert ing.rows("crm.people", "name") == [("José",)]


def test_ten_megabyte_single_field_loads(ing: Ingest) -> None:
    people(ing, "csv")
    big = "x" * (10 * 1024 * 1024)
    row = ing.load("crm/people/big.csv", f'id,name,score,born\n1,"{big}",1,2000-01-01\n2,b,2,2000-01-01\n')
    assert row.status == "SUCCESS", row.error_message
    assert ing.rows("crm.people", "id, length(name)") == [(1, len(big)), (2, 1)]


@pytest.mark.parametrize("name", ["crm/people/with space.csv", "crm/people/ünï cødé ✓.csv"])
def test_object_names_with_spaces_and_unicode_load(ing: Ingest, name: str) -> None:
    people(ing, "csv")
    row = ing.load(name, "id,name,score,born\n1,Ann,1,2000-01-01\n")
    assert row.status == "SUCCESS", row.error_message
    assert ing.exists(f"archive/{name}")


def test_object_name_with_dotdot_is_rejected_without_touching_the_filesystem(ing: Ingest, tmp_path) -> None:
    from adapters.storage.base import ObjectInfo

    ing.register(ORDERS)
    info = ObjectInfo(bucket="landing", name="sales/orders/../../../../etc/passwd.csv", generation=1, size=10)
    assert ing.deliver(info) == 200
    row = ing.file(info)
    assert row.status == "ERROR"
    assert "cannot be stored" in row.error_message or "no table" in row.error_message
