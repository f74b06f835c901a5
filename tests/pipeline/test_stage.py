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


def staged(tmp_path: Path, csv: str, keys: tuple[str, ...] = (), *, overlap: bool = False,
           max_bad_records: int = 0, block_size: int = 64) -> StageResult:
    tmp_path.mkdir(parents=True, exist_ok=True)
    source = tmp_path / "in.csv"
    source.write_text(csv)
    target = TableTarget("sales", "orders", COLUMNS, keys=keys)
    lineage = Lineage(file_id=7, batch_id=3, ingested_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    with source.open("rb") as stream:
        # 64-byte blocks: a few rows per batch, so that rows and keys span many batches.
        batches = read_batches(stream, SourceOptions(format="csv", block_size=block_size), name=source.name)
        return stage_batches(batches, target=target, column_map={}, allow_new_columns=False, header=True,
                             lineage=lineage, path=tmp_path / "staged.parquet", max_bad_records=max_bad_records,
                             overlap=overlap)


@pytest.mark.parametrize("overlap", [False, True])
def test_every_row_is_staged_in_order_across_row_groups(tmp_path: Path, monkeypatch, overlap: bool) -> None:
    monkeypatch.setattr(stage, "ROW_GROUP_ROWS", 5)
    body = "".join(f"{i},c{i},2026-01-{i % 28 + 1:02d},{i}.5\n" for i in range(1, 61))
    result = staged(tmp_path, "id,code,day,amount\n" + body, overlap=overlap)
    parquet = pq.ParquetFile(result.path)
    assert result.rows_staged == 60 and parquet.metadata.num_row_groups > 5
    table = parquet.read()
    assert table.column("id").to_pylist() == list(range(1, 61))
    assert table.column("_source_row").to_pylist() == list(range(1, 61))
    assert set(table.column("_file_id").to_pylist()) == {7}


KEYED = "id,code,day,amount\n" + "".join(f"{i},c{i % 7},2026-01-0{i % 3 + 1},{i % 2}\n" for i in range(1, 31))
RISING_CODES = "id,code,day,amount\n" + "".join(f"{i},k{i:03d},2026-01-01,0\n" for i in range(1, 31))


@pytest.mark.parametrize(("csv", "keys"), [
    (KEYED, ("id",)),  # unique
    (KEYED + "5,x,2026-02-01,1\n", ("id",)),  # one repeat, in a later batch
    (KEYED, ("code", "day")),  # composite: repeats
    (KEYED.replace(",c1,", ",,") + ",,2026-01-01,0\n,,2026-01-01,0\n", ("id", "code")),  # NULL keys repeat too
    (KEYED, ("amount",)),  # a float key: left to DuckDB
    # A single key rising through the file is known unique as it arrives; anything else is hashed.
    (KEYED + "30,x,2026-02-01,1\n", ("id",)),  # rising, then the last value again
    (KEYED + "29,x,2026-02-01,1\n", ("id",)),  # rising, then a step back onto an earlier value
    (RISING_CODES, ("code",)),  # rising text keys
    (RISING_CODES + "99,k001,2026-02-01,1\n", ("code",)),  # ... whose first value comes back last
    ("id,code,day,amount\n" + "".join(f"{i},c,2026-01-01,0\n" for i in range(30, 0, -1)), ("id",)),  # falling
    (KEYED.replace("\n7,", "\n,"), ("id",)),  # one NULL key: no repeat
    (KEYED.replace("\n7,", "\n,").replace("\n21,", "\n,"), ("id",)),  # two NULL keys repeat
])
def test_duplicate_keys_known_while_staging_match_duckdb_over_the_staged_file(
        tmp_path: Path, csv: str, keys: tuple[str, ...]) -> None:
    result = staged(tmp_path, csv, keys)
    by_duckdb = duplicate_keys(result.path, keys)
    assert duplicate_keys(result.path, keys, repeat=result.keys_repeat) == by_duckdb
    assert result.keys_repeat is (None if keys == ("amount",) else bool(by_duckdb))


@pytest.mark.parametrize(("ids", "repeat"), [("1,2,,4,5", False), ("1,2,,4,,6", True)])
def test_null_keys_inside_one_batch_group_together(tmp_path: Path, ids: str, repeat: bool) -> None:
    # One batch (large blocks), NULLs between rising values: rising around them proves nothing.
    csv = "id,code,day,amount\n" + "".join(f"{i},c,2026-01-01,0\n" for i in ids.split(","))
    result = staged(tmp_path, csv, ("id",), block_size=1 << 20)
    assert result.keys_repeat is repeat
    assert bool(duplicate_keys(result.path, ("id",))) is repeat


def test_too_many_key_values_to_keep_are_left_to_duckdb(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(stage, "KEY_CHECK_BYTES", 100)
    result = staged(tmp_path, KEYED + "5,x,2026-02-01,1\n", ("id",))
    assert result.keys_repeat is None
    assert [b.row for b in duplicate_keys(result.path, ("id",), repeat=result.keys_repeat)] == [31]


def test_a_rising_key_is_known_unique_however_many_values_it_has(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(stage, "KEY_CHECK_BYTES", 100)  # far fewer bytes than the file's keys
    result = staged(tmp_path, KEYED, ("id",))
    assert result.keys_repeat is False
    assert duplicate_keys(result.path, ("id",)) == []


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


@pytest.mark.parametrize("max_bad_records", [0, 3, 100])
def test_validating_ahead_of_the_writer_gives_the_same_rows_bad_rows_and_early_stop(
        tmp_path: Path, max_bad_records: int) -> None:
    # Bad values spread over many batches; with a low max_bad_records the stage stops early.
    body = "".join(f"{i},c{i},{'2026-13-01' if i % 9 == 0 else '2026-01-01'},{i}\n" for i in range(1, 91))
    csv = "id,code,day,amount\n" + body + "91,x,2026-01-01,1,extra\n"
    plain = staged(tmp_path / "plain", csv, overlap=False, max_bad_records=max_bad_records)
    ahead = staged(tmp_path / "ahead", csv, overlap=True, max_bad_records=max_bad_records)
    assert (ahead.rows_read, ahead.rows_staged) == (plain.rows_read, plain.rows_staged)
    assert [(b.row, b.reason) for b in ahead.bad_rows] == [(b.row, b.reason) for b in plain.bad_rows]
    assert pq.read_table(ahead.path).drop_columns(["_ingested_at"]).equals(
        pq.read_table(plain.path).drop_columns(["_ingested_at"]))
    assert (len(plain.bad_rows) == 11) is (max_bad_records > 11)  # 10 bad dates and a ragged row


def test_an_error_in_a_later_batch_reaches_the_caller_through_the_validation_thread(tmp_path: Path) -> None:
    from errors import PermanentError

    body = "".join(f"{i},c{i},2026-01-01,{i}\n" for i in range(1, 60))
    with pytest.raises(PermanentError, match="unterminated quote"):
        staged(tmp_path, "id,code,day,amount\n" + body + '60,"open,2026-01-01,1\n', overlap=True)
