"""A large appended file's rows enter the DuckDB table while the file is staged, committed at the end.

What a user relies on: the rows are the same as a load of the staged file would give, nobody
sees them before the file's status is SUCCESS, a failing file leaves nothing behind (not even a
table), and an earlier generation's or attempt's rows are replaced, never duplicated.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from adapters.warehouse.duckdb import DuckDbWarehouse, PendingAppend
from pipeline import stage
from tests.handlers.ingest_support import Ingest

COLUMNS = ("id:INT64:REQUIRED", "amount:NUMERIC", "big:BIGNUMERIC", "price:FLOAT64", "flag:BOOL", "day:DATE",
           "local:DATETIME", "clock:TIME", "seen_at:TIMESTAMP", "doc:JSON", "note:STRING")
ROWS = 3000  # ~400 KB: several 64 KiB blocks


def register(ing: Ingest, table: str, fmt: str = "csv", *, keys: str = "", extra: str = "",
             max_bad_records: int = 0) -> None:
    schema = "".join(f"  - {{name: {c.split(':')[0]}, type: {c.split(':')[1]}"
                     + (f", mode: {c.split(':')[2]}" if c.count(":") == 2 else "") + "}\n" for c in COLUMNS)
    ing.register(f"dataset: t\ntable: {table}\nsource: \"t/{table}/*\"\nformat: {fmt}\nschema:\n{schema}{extra}"
                 f"write_mode: append\nmax_bad_records: {max_bad_records}\n{keys}", f"{table}.yaml")


def small_blocks(ing: Ingest) -> None:
    """Files over 64 KiB count as large (read ahead, staged while appended)."""
    ing.deps.settings = ing.deps.settings.model_copy(update={"ingest": ing.deps.settings.ingest.model_copy(
        update={"block_size_bytes": 64 << 10})})


def csv_rows(first: int = 1, rows: int = ROWS, *, bad_at: int | None = None, repeat_at: int | None = None) -> str:
    lines = ["id,amount,big,price,flag,day,local,clock,seen_at,doc,note"]
    for i in range(first, first + rows):
        key = first if i == repeat_at else i
        amount = "oops" if i == bad_at else f"{i}.{i % 1000:03d}000001"
        lines.append(f'{key},{amount},{i}123456789012345678901234.5,{i / 7},{"true" if i % 2 else "false"},'
                     f'2026-{i % 12 + 1:02d}-{i % 28 + 1:02d},2026-01-02 03:04:{i % 60:02d}.25,12:{i % 60:02d}:00,'
                     f'2026-01-02T03:04:05+0{i % 9}:00,"{{""n"": {i}}}","note, {i} ""quoted"""')
    return "\n".join(lines) + "\n"


@pytest.fixture
def ing(deps, tmp_path) -> Ingest:
    return Ingest(deps, tmp_path)


@pytest.fixture
def staged_file_loads(monkeypatch) -> list[int]:
    """File ids loaded from their staged Parquet (the warehouse's `load`), as opposed to appended."""
    seen: list[int] = []
    real = DuckDbWarehouse.load

    def load(self: DuckDbWarehouse, request: Any) -> Any:
        seen.append(request.file_id)
        return real(self, request)

    monkeypatch.setattr(DuckDbWarehouse, "load", load)
    return seen


def lineage_free(ing: Ingest, table: str) -> list[tuple]:
    # TIMESTAMP read back as epoch microseconds: DuckDB's Python values for it need pytz.
    return ing.rows(table, "* EXCLUDE (_file_id, _batch_id, _ingested_at) REPLACE (epoch_us(seen_at) AS seen_at)",
                    "_source_row")


def test_rows_appended_while_staging_equal_a_load_of_the_staged_file(ing: Ingest, staged_file_loads) -> None:
    register(ing, "classic")
    register(ing, "streamed")
    data = csv_rows()
    classic = ing.load("t/classic/a.csv", data)  # one 2 MiB block: staged, then loaded
    small_blocks(ing)
    streamed = ing.load("t/streamed/a.csv", data)
    assert (classic.status, streamed.status) == ("SUCCESS", "SUCCESS"), (classic.error_message, streamed.error_message)
    assert staged_file_loads == [classic.id]  # the large file's rows went in while it was staged
    assert streamed.rows_loaded == ROWS
    assert lineage_free(ing, "t.streamed") == lineage_free(ing, "t.classic")
    types = "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $t ORDER BY 1"
    assert (ing.deps.warehouse.query(types, {"t": "streamed"}).rows
            == ing.deps.warehouse.query(types, {"t": "classic"}).rows)
    assert ing.rows("t.streamed", "DISTINCT _file_id, _batch_id") == [(streamed.id, streamed.batch_id)]


def test_nested_json_rows_appended_while_staging_equal_a_staged_file_load(ing: Ingest, staged_file_loads) -> None:
    extra = "  - {name: tags, type: INT64, mode: REPEATED}\n"
    register(ing, "classic", "ndjson", extra=extra)
    register(ing, "streamed", "ndjson", extra=extra)
    data = "".join(json.dumps({
        "id": i, "amount": f"{i}.5", "big": str(10**30 + i), "price": i / 3, "flag": i % 3 == 0, "day": "2026-02-03",
        "local": "2026-01-02T03:04:05.5", "clock": "01:02:03", "seen_at": "2026-01-02T03:04:05Z",
        "doc": {"k": [i, None]}, "note": f"n{i}" * 20, "tags": list(range(i % 4))}) + "\n" for i in range(1, ROWS))
    classic = ing.load("t/classic/a.ndjson", data)
    small_blocks(ing)
    streamed = ing.load("t/streamed/a.ndjson", data)
    assert (classic.status, streamed.status) == ("SUCCESS", "SUCCESS"), (classic.error_message, streamed.error_message)
    assert staged_file_loads == [classic.id]
    assert lineage_free(ing, "t.streamed") == lineage_free(ing, "t.classic")


def test_appended_rows_stay_invisible_until_the_file_succeeds(ing: Ingest, monkeypatch) -> None:
    register(ing, "streamed")
    small_blocks(ing)
    monkeypatch.setattr(stage, "ROW_GROUP_ROWS", 200)  # many appends while the file is read
    seen: list[tuple[int, int]] = []
    real_append = PendingAppend.append

    def append(self: PendingAppend, table: Any) -> None:
        real_append(self, table)
        seen.append((self.rows, ing.count("t.streamed")))  # what everyone else sees meanwhile

    monkeypatch.setattr(PendingAppend, "append", append)
    row = ing.load("t/streamed/a.csv", csv_rows())
    assert row.status == "SUCCESS", row.error_message
    assert len(seen) > 5 and seen[-1][0] == ROWS
    assert {visible for _, visible in seen} == {0}
    assert ing.count("t.streamed") == ROWS


@pytest.mark.parametrize("existing", [False, True])
def test_a_large_file_that_fails_late_leaves_nothing_behind(ing: Ingest, monkeypatch, existing: bool) -> None:
    register(ing, "streamed")
    small_blocks(ing)
    monkeypatch.setattr(stage, "ROW_GROUP_ROWS", 200)  # most rows appended before the bad one is met
    if existing:
        assert ing.load("t/streamed/before.csv", csv_rows(10_000, 5)).status == "SUCCESS"
    row = ing.load("t/streamed/a.csv", csv_rows(bad_at=ROWS - 10))
    assert row.status == "ERROR" and "max_bad_records=0" in row.error_message
    if existing:
        assert ing.rows("t.streamed", "id") == [(i,) for i in range(10_000, 10_005)]
    else:  # the table was to be created with the file's rows: it is not there either
        assert ing.deps.warehouse.table_columns("t", "streamed") is None
    again = ing.load("t/streamed/b.csv", csv_rows(20_000, ROWS))  # and the warehouse takes the next file
    assert again.status == "SUCCESS" and again.rows_loaded == ROWS


def test_a_later_generation_replaces_the_earlier_ones_rows(ing: Ingest, staged_file_loads) -> None:
    register(ing, "streamed")
    small_blocks(ing)
    first = ing.load("t/streamed/a.csv", csv_rows(1))
    second = ing.load("t/streamed/a.csv", csv_rows(50_001, ROWS - 100))
    assert (first.status, second.status) == ("SUCCESS", "SUCCESS"), second.error_message
    # The first generation's rows were committed: the second is loaded from its staged file, replacing them.
    assert staged_file_loads == [second.id]
    assert ing.rows("t.streamed", "min(id), max(id), count(*), count(DISTINCT _source_row), min(_file_id), "
                    "max(_file_id)") == [(50_001, 50_000 + ROWS - 100, ROWS - 100, ROWS - 100, second.id, second.id)]


def test_in_file_duplicate_keys_in_a_large_file_are_quarantined_and_the_rest_loaded_once(ing: Ingest) -> None:
    register(ing, "streamed", keys="keys: [id]\n", max_bad_records=1)
    small_blocks(ing)
    info = ing.put("t/streamed/a.csv", csv_rows(repeat_at=ROWS - 5))
    assert ing.deliver(info) == 200
    row = ing.file(info)
    assert (row.status, row.rows_loaded, row.rows_rejected) == ("SUCCESS", ROWS - 1, 1), row.error_message
    assert [q["row"] for q in ing.quarantine(info)] == [ROWS - 5]
    assert ing.rows("t.streamed", "count(*), count(DISTINCT id)") == [(ROWS - 1, ROWS - 1)]
