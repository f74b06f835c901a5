"""The DuckDB warehouse keeps its connection while work flows and gives the file up when idle.

Other `caf` commands (another process: `caf status` beside `caf serve`) must still open the
warehouse: the file lock is released after `idle_seconds`, and an opener waits for it instead
of failing at once. What the warehouse remembers about tables is dropped with the connection,
so a change made by another process meanwhile is seen.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters.warehouse.duckdb import DuckDbWarehouse
from errors import TransientError
from values.tables import Column, TableTarget

TARGET = TableTarget(dataset="sales", table="orders", columns=(Column("id", "INT64"),))


def _other_process(path: Path, sql: str, lock_wait: float = 0.0) -> subprocess.CompletedProcess[str]:
    """Run SQL on the warehouse file from another process, through the same adapter."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from adapters.warehouse.duckdb import DuckDbWarehouse\n"
        f"w = DuckDbWarehouse(Path({str(path)!r}), lock_wait_seconds={lock_wait})\n"
        f"print(w.query({sql!r}).rows)\n"
    )
    root = Path(__file__).resolve().parents[2]
    return subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)


def test_another_process_opens_the_warehouse_once_it_is_idle(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    warehouse = DuckDbWarehouse(path, idle_seconds=0.3)
    warehouse.ensure_table(TARGET)
    warehouse.query("INSERT INTO sales.orders (id) VALUES (1), (2)")
    time.sleep(1.0)
    idle = _other_process(path, "SELECT count(*) FROM sales.orders")  # no waiting for the lock
    assert idle.returncode == 0, idle.stderr
    assert idle.stdout.strip() == "[(2,)]"


def test_an_opener_waits_for_the_lock_instead_of_failing(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    warehouse = DuckDbWarehouse(path, idle_seconds=3.0)  # longer than the other process takes to start
    warehouse.ensure_table(TARGET)
    waited = _other_process(path, "SELECT count(*) FROM sales.orders", lock_wait=20)
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.strip() == "[(0,)]"


def test_a_change_made_by_another_process_while_idle_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    warehouse = DuckDbWarehouse(path, idle_seconds=0.2)
    warehouse.ensure_table(TARGET)
    assert warehouse.table_columns("sales", "orders") == {
        "id": "INT64", "_file_id": "INT64", "_batch_id": "INT64", "_source_row": "INT64", "_ingested_at": "TIMESTAMP"}
    changed = _other_process(path, "ALTER TABLE sales.orders ADD COLUMN note VARCHAR", lock_wait=20)
    assert changed.returncode == 0, changed.stderr
    assert (warehouse.table_columns("sales", "orders") or {}).get("note") == "STRING"


def test_a_lock_held_too_long_is_transient(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time\n"
         f"c = duckdb.connect({str(path)!r})\nprint('held', flush=True)\ntime.sleep(30)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(TransientError, match="busy"):
            DuckDbWarehouse(path, lock_wait_seconds=0.3).count_rows("sales", "orders")
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("earlier", [1, 3, 1500])
def test_a_load_replaces_the_rows_of_every_earlier_file_id_and_only_those(tmp_path: Path, earlier: int) -> None:
    # The ids go to DuckDB as an IN list of parameters (a long list as one array parameter).
    import pyarrow as pa
    import pyarrow.parquet as pq

    from adapters.warehouse.base import LoadRequest

    def staged(file_id: int, ids: list[int]) -> Path:
        path = tmp_path / f"{file_id}.parquet"
        # Columns in another order than the table's, as a staged file may have them.
        pq.write_table(pa.table({"_file_id": [file_id] * len(ids), "id": ids}), path)
        return path

    warehouse = DuckDbWarehouse(tmp_path / "w.duckdb")
    warehouse.ensure_table(TARGET)
    others = list(range(1, earlier + 1))
    for file_id in [*others, 9000]:
        path = staged(file_id, [file_id * 10, file_id * 10 + 1])
        warehouse.load(LoadRequest(target=TARGET, staged_uri=str(path), staged_path=path, file_id=file_id,
                                   batch_id=None, job_id=f"j{file_id}"))
    path = staged(9001, [1, 2, 3])
    result = warehouse.load(LoadRequest(target=TARGET, staged_uri=str(path), staged_path=path, file_id=9001,
                                        batch_id=None, job_id="j9001", replace_file_ids=(*others, 9001)))
    assert result.rows_loaded == 3
    rows = warehouse.query("SELECT _file_id, count(*) FROM sales.orders GROUP BY 1 ORDER BY 1").rows
    assert rows == [(9000, 2), (9001, 3)]
    warehouse.close()
