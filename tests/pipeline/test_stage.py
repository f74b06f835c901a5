"""The stage step on real files: row groups, the in-file key-duplicate check."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import stage
from pipeline.read import read_batches
from pipeline.source import SourceOptions
from pipeline.stage import Lineage, StageResult, duplicate_keys, stage_batches
from values.tables import Column, TableTarget

COLUMNS = (Column("id", "INT64"), Column("code", "STRING"), Column("day", "DATE"), Column("amount", "FLOAT64"))


def staged(tmp_path: Path, csv: str, keys: tuple[str, ...] = ()) -> StageResult:
    source = tmp_path / "in.csv"
    source.write_text(csv)
    target = TableTarget("sales", "orders", COLUMNS, keys=keys)
    lineage = Lineage(file_id=7, batch_id=3, ingested_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    with source.open("rb") as stream:
        # 64-byte blocks: a few rows per batch, so that rows and keys span many batches.
        batches = read_batches(stream, SourceOptions(format="csv", block_size=64), name=source.name)
        return stage_batches(batches, target=target, column_map={}, allow_new_columns=False, header=True,
                             lineage=lineage, path=tmp_path / "staged.parquet", max_bad_records=0)


def test_every_row_is_staged_in_order_across_row_groups(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(stage, "ROW_GROUP_ROWS", 5)
    body = "".join(f"{i},c{i},2026-01-{i % 28 + 1:02d},{i}.5\n" for i in range(1, 61))
    result = staged(tmp_path, "id,code,day,amount\n" + body)
    parquet = pq.ParquetFile(result.path)
    assert result.rows_staged == 60 and parquet.metadata.num_row_groups > 5
    table = parquet.read()
    assert table.column("id").to_pylist() == list(range(1, 61))
    assert table.column("_source_row").to_pylist() == list(range(1, 61))
    assert set(table.column("_file_id").to_pylist()) == {7}


KEYED = "id,code,day,amount\n" + "".join(f"{i},c{i % 7},2026-01-0{i % 3 + 1},{i % 2}\n" for i in range(1, 31))


@pytest.mark.parametrize(("csv", "keys"), [
    (KEYED, ("id",)),  # unique
    (KEYED + "5,x,2026-02-01,1\n", ("id",)),  # one repeat, in a later batch
    (KEYED, ("code", "day")),  # composite: repeats
    (KEYED.replace(",c1,", ",,") + ",,2026-01-01,0\n,,2026-01-01,0\n", ("id", "code")),  # NULL keys repeat too
    (KEYED, ("amount",)),  # a float key: left to DuckDB
])
def test_duplicate_keys_known_while_staging_match_duckdb_over_the_staged_file(
        tmp_path: Path, csv: str, keys: tuple[str, ...]) -> None:
    result = staged(tmp_path, csv, keys)
    by_duckdb = duplicate_keys(result.path, keys)
    assert duplicate_keys(result.path, keys, repeat=result.keys_repeat) == by_duckdb
    assert result.keys_repeat is (None if keys == ("amount",) else bool(by_duckdb))


def test_too_many_key_values_to_keep_are_left_to_duckdb(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(stage, "KEY_CHECK_BYTES", 100)
    result = staged(tmp_path, KEYED + "5,x,2026-02-01,1\n", ("id",))
    assert result.keys_repeat is None
    assert [b.row for b in duplicate_keys(result.path, ("id",), repeat=result.keys_repeat)] == [31]


def test_a_large_staged_file_is_checked_in_a_duckdb_of_its_own(tmp_path: Path, monkeypatch) -> None:
    # The shared scratch database keeps what a large query allocated; a large file's check must
    # not leave that in the process for the warehouse load that follows.
    from pipeline import scratch

    result = staged(tmp_path, KEYED + "5,x,2026-02-01,1\n", ("amount", "id"))
    shared = duplicate_keys(result.path, ("amount", "id"))
    monkeypatch.setattr(stage, "PRIVATE_SCRATCH_BYTES", 0)
    monkeypatch.setitem(scratch._state, "conn", None)
    assert duplicate_keys(result.path, ("amount", "id")) == shared
    assert scratch._state["conn"] is None  # the shared database was not opened
