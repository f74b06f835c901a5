"""Errors and rejected rows say what to change, in the table definition's own words (issue 15, Must 5).

Every case goes through a real finalize event into handle_raw_file, as a user's upload would.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tests.handlers.ingest_support import ORDERS, Ingest
from tests.handlers.test_ingest_formats import PEOPLE, xlsx_bytes


@pytest.fixture
def ing(deps, tmp_path) -> Ingest:
    return Ingest(deps, tmp_path)


# -- columns ------------------------------------------------------------------------------------

def test_renamed_column_hint_names_the_columns_key_with_the_mapping(ing: Ingest) -> None:
    ing.register(ORDERS)
    row = ing.load("sales/orders/a.csv", "Order ID,amt,order_date,note\n1,2.5,2026-11-01,x\n")
    assert row.status == "ERROR"
    assert "missing column(s): amount" in row.error_message
    assert "unexpected column(s): amt" in row.error_message
    assert 'columns: {"amt": amount}' in row.error_message  # the registry key, with the mapping to write
    assert "column_map" not in row.error_message


@pytest.mark.parametrize(("delimiter", "shown"), [(";", '";"'), ("\t", '"\\t"'), ("|", '"|"')])
def test_wrong_delimiter_suggests_csv_delimiter(ing: Ingest, delimiter: str, shown: str) -> None:
    ing.register(ORDERS)
    header = delimiter.join(["Order ID", "amount", "order_date", "note"])
    row = ing.load("sales/orders/a.csv", f"{header}\n" + delimiter.join(["1", "2.5", "2026-11-01", "x"]) + "\n")
    assert row.status == "ERROR"
    assert "unexpected column(s): Order ID" in row.error_message
    assert f"csv: {{delimiter: {shown}}}" in row.error_message, row.error_message


def test_delimiter_hint_is_not_given_when_the_header_is_just_wrong(ing: Ingest) -> None:
    ing.register(ORDERS)
    row = ing.load("sales/orders/a.csv", "Shipment;carrier\n1;x\n")
    assert row.status == "ERROR" and "delimiter" not in row.error_message


# -- sheets -------------------------------------------------------------------------------------

SHEETS = {"Readme": [["About this export"], ["made by the shop system"]],
          "People": [["id", "name", "score", "born"], [1, "Ann", 1.5, dt.datetime(2000, 1, 2)]]}


def test_first_sheet_not_the_data_names_it_and_lists_the_sheets(ing: Ingest) -> None:
    ing.register(PEOPLE.format(fmt="xlsx", mode="append"))
    row = ing.load("crm/people/a.xlsx", xlsx_bytes(SHEETS))
    assert row.status == "ERROR"
    assert "read sheet 'Readme'" in row.error_message
    assert "'Readme', 'People'" in row.error_message and "sheet:" in row.error_message


def test_configured_sheet_with_other_columns_is_named_with_the_sheets(ing: Ingest) -> None:
    ing.register(PEOPLE.format(fmt="xlsx", mode="append") + "    sheet: Readme\n")
    row = ing.load("crm/people/a.xlsx", xlsx_bytes(SHEETS))
    assert row.status == "ERROR"
    assert "read sheet 'Readme'" in row.error_message and "'Readme', 'People'" in row.error_message


def test_one_sheet_workbook_mismatch_has_no_sheet_talk(ing: Ingest) -> None:
    ing.register(PEOPLE.format(fmt="xlsx", mode="append"))
    row = ing.load("crm/people/a.xlsx", xlsx_bytes({"Only": [["id", "nom"], [1, "Ann"]]}))
    assert row.status == "ERROR" and "missing column(s)" in row.error_message
    assert "sheet" not in row.error_message


# -- Excel dates --------------------------------------------------------------------------------

def test_excel_date_cells_load_into_a_date_column(ing: Ingest) -> None:
    ing.register(PEOPLE.format(fmt="xlsx", mode="append").replace("max_bad_records: 0", "max_bad_records: 2"))
    data = xlsx_bytes({"People": [
        ["id", "name", "score", "born"],
        [1, "Ann", 1.5, dt.datetime(2000, 1, 2)],  # how Excel date cells come back: midnight datetimes
        [2, "Bo", 2.5, dt.date(2001, 3, 4)],
        [3, "Cy", 3.5, "unknown"],  # text in the column: the others are typed from text too
        [4, "Di", 4.5, dt.datetime(2002, 5, 6, 13, 30)],  # a time of day: not a DATE
    ]})
    info = ing.put("crm/people/a.xlsx", data)
    assert ing.deliver(info) == 200
    row = ing.file(info)
    assert (row.status, row.rows_loaded, row.rows_rejected) == ("SUCCESS", 2, 2), row.error_message
    assert ing.rows("crm.people", "id, born") == [(1, dt.date(2000, 1, 2)), (2, dt.date(2001, 3, 4))]
    rejected = {r["row"]: r["reason"] for r in ing.quarantine(info)}
    assert "'unknown' is not a valid DATE" in rejected[3]
    assert "has a time of day (13:30:00)" in rejected[4]


def test_all_date_cells_typed_as_dates_load_and_a_time_is_rejected_with_its_reason(ing: Ingest) -> None:
    ing.register(PEOPLE.format(fmt="xlsx", mode="append").replace("max_bad_records: 0", "max_bad_records: 1"))
    data = xlsx_bytes({"People": [["id", "name", "score", "born"], [1, "Ann", 1.5, dt.datetime(2000, 1, 2)],
                                  [2, "Bo", 2.5, dt.datetime(2001, 3, 4, 8, 15)]]})
    info = ing.put("crm/people/a.xlsx", data)
    assert ing.deliver(info) == 200
    row = ing.file(info)
    assert (row.status, row.rows_loaded, row.rows_rejected) == ("SUCCESS", 1, 1), row.error_message
    assert "has a time of day (08:15:00)" in ing.quarantine(info)[0]["reason"]


# -- NDJSON keys --------------------------------------------------------------------------------

def records(*rows: dict) -> str:
    """NDJSON lines with every column of PEOPLE (a key absent from a whole file is a missing column)."""
    return "".join(json.dumps({"name": None, "score": None, "born": None, **r}) + "\n" for r in rows)


def test_ndjson_record_with_an_extra_key_is_a_rejected_row_with_a_hint(ing: Ingest) -> None:
    """Like BigQuery's load with ignoreUnknownValues=false (and dlt's discard_row contract): the
    record carrying an unknown key is a bad row, counted against max_bad_records."""
    ing.register(PEOPLE.format(fmt="ndjson", mode="append").replace("max_bad_records: 0", "max_bad_records: 1"))
    data = records({"id": 1, "name": "Ann"}, {"id": 2, "name": "Bo", "coupon": "X1"},
                   {"id": 3, "name": "Cy", "coupon": None}, {"id": 4, "name": "Di"})
    info = ing.put("crm/people/a.ndjson", data)
    assert ing.deliver(info) == 200
    row = ing.file(info)
    assert (row.status, row.rows_loaded, row.rows_rejected) == ("SUCCESS", 3, 1), row.error_message
    assert ing.rows("crm.people", "id") == [(1,), (3,), (4,)]  # a null-valued key carries nothing to lose
    [rejected] = ing.quarantine(info)
    assert rejected["row"] == 2 and rejected["raw"]["coupon"] == "X1"
    assert "key coupon is not a column of crm.people" in rejected["reason"]
    assert "allow_new_columns: true" in rejected["reason"] and "columns:" in rejected["reason"]


def test_ndjson_extra_key_beyond_max_bad_records_fails_the_file_naming_the_row(ing: Ingest) -> None:
    ing.register(PEOPLE.format(fmt="ndjson", mode="append"))
    row = ing.load("crm/people/a.ndjson", records({"id": 1}, {"id": 2, "coupon": "X1"}))
    assert row.status == "ERROR"
    assert "row 2: key coupon is not a column of crm.people" in row.error_message
    assert ing.count("crm.people") == 0


def test_ndjson_key_first_given_after_the_first_block_loads_null_before_it(ing: Ingest) -> None:
    """Records leave out keys they have no value for: an optional key first seen thousands of
    records in (past the first read block) loads, NULL where not given, as BigQuery loads it."""
    ing.register(PEOPLE.format(fmt="ndjson", mode="append"))
    ing.deps.settings = ing.deps.settings.model_copy(update={"ingest": ing.deps.settings.ingest.model_copy(
        update={"block_size_bytes": 64 << 10})})
    lines = [json.dumps({"id": i, "name": f"n{i}"}) for i in range(1, 5001)]  # ~120 KB: two blocks at least
    lines += [json.dumps({"id": 5001, "name": "late", "score": 2.5, "born": "2000-01-02"})]
    row = ing.load("crm/people/a.ndjson", "\n".join(lines) + "\n")
    assert (row.status, row.rows_loaded) == ("SUCCESS", 5001), row.error_message
    assert ing.rows("crm.people", "count(score), count(born), max(score)") == [(1, 1, 2.5)]


def test_ndjson_key_no_record_gives_is_a_missing_column(ing: Ingest) -> None:
    ing.register(PEOPLE.format(fmt="ndjson", mode="append"))
    row = ing.load("crm/people/a.ndjson", "".join(json.dumps({"id": i, "name": "x", "score": 1}) + "\n"
                                                  for i in range(1, 4)))
    assert row.status == "ERROR" and "missing column(s): born" in row.error_message
    assert ing.count("crm.people") == 0


def test_ndjson_extra_key_is_a_new_column_with_allow_new_columns(ing: Ingest) -> None:
    ing.register(PEOPLE.format(fmt="ndjson", mode="append") + "    allow_new_columns: true\n")
    row = ing.load("crm/people/a.ndjson", records({"id": 1}, {"id": 2, "coupon": "X1"}))
    assert row.status == "SUCCESS", row.error_message
    assert ing.rows("crm.people", "id, coupon") == [(1, None), (2, "X1")]


# -- timestamps ---------------------------------------------------------------------------------

def test_mixed_zone_forms_cast_per_value_and_only_the_bad_value_is_rejected(ing: Ingest) -> None:
    ing.register("""\
        dataset: ev
        table: clicks
        source: "ev/clicks/*"
        format: csv
        schema:
          - {name: id, type: INT64}
          - {name: seen_at, type: TIMESTAMP}
        max_bad_records: 1
        """)
    info = ing.put("ev/clicks/a.csv", "id,seen_at\n1,2024-01-02T03+01\n2,2024-01-02T03:00:00Z\n"
                                      "3,2024-01-02T03:00:00\n4,yesterday\n")
    assert ing.deliver(info) == 200
    row = ing.file(info)
    assert (row.status, row.rows_loaded, row.rows_rejected) == ("SUCCESS", 3, 1), row.error_message
    assert ing.rows("ev.clicks", "id, epoch_us(seen_at) // 1000000 - 1704164400") == [(1, -3600), (2, 0), (3, 0)]
    assert ing.quarantine(info)[0]["reason"] == "column seen_at: 'yesterday' is not a valid TIMESTAMP"
