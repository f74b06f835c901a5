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
