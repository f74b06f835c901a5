"""Re-runs of a DAG behind a wait_for_files gate: `caf run`, a scheduled start and `caf batch reprocess`
run with the latest loaded files; file-triggered batches keep the "new files" rule."""

from __future__ import annotations

import textwrap
from pathlib import Path

from adapters.publisher.base import OutgoingMessage
from tests.engine import callables
from tests.engine.conftest import batch, define, drain, land_file, py, runs, statuses


def gate(name: str, *tables: str, **extra) -> dict:
    return {"name": name, "kind": "wait_for_files", "wait_for_files": {"tables": list(tables)},
            "on_file": list(tables), **extra}


def test_manual_and_scheduled_runs_of_a_gated_dag_use_the_latest_files(caf, deps) -> None:
    define(deps, gate("ready", "sales.orders", "sales.customers", dag="daily"), py("transform", "ready", dag="daily"))
    orders, _ = land_file(deps, "sales.orders", md5="o1")
    drain(deps)
    customers, passed = land_file(deps, "sales.customers", md5="c1")
    drain(deps)
    assert statuses(deps, passed) == {"ready": "SUCCESS", "transform": "SUCCESS"}  # both files consumed

    result = caf("run", "daily")  # what "re-run after changing a downstream task" means
    assert result.exit_code == 0, result.output
    manual = max(r for r in _batch_ids(deps))
    assert statuses(deps, manual) == {"ready": "SUCCESS", "transform": "SUCCESS"}
    files = runs(deps, manual)["ready"]["output"]["files"]
    assert {t: f["file_id"] for t, f in files.items()} == {"sales.orders": orders, "sales.customers": customers}
    assert callables.calls("transform") == 2 and "SKIPPED 0" in result.output

    deps.publisher.publish(OutgoingMessage("task", {"dag": "daily"}))  # Cloud Scheduler's message
    drain(deps)
    scheduled = max(_batch_ids(deps))
    assert batch(deps, scheduled).trigger == "schedule"
    assert statuses(deps, scheduled) == {"ready": "SUCCESS", "transform": "SUCCESS"}

    # The manual and scheduled runs consumed nothing: a file-triggered batch still waits for new files.
    _, waiting = land_file(deps, "sales.orders", md5="o2")
    drain(deps)
    assert runs(deps, waiting)["ready"]["error"] == "waiting for files: sales.customers"
    _, complete = land_file(deps, "sales.customers", md5="c2")
    drain(deps)
    assert statuses(deps, complete) == {"ready": "SUCCESS", "transform": "SUCCESS"}
    assert callables.calls("transform") == 4


def test_manual_run_without_any_loaded_file_says_which_table_is_missing(caf, deps) -> None:
    define(deps, gate("ready", "sales.orders", "sales.customers", dag="daily"), py("transform", "ready", dag="daily"))
    land_file(deps, "sales.orders", md5="o1")
    drain(deps)
    result = caf("run", "daily")
    assert "waiting for files: sales.customers (no file loaded yet)" in result.output
    assert callables.calls("transform") == 0


def test_reprocess_reruns_the_tasks_behind_a_gate(caf, deps, tmp_path: Path) -> None:
    from tests.handlers.ingest_support import Ingest

    ingest = Ingest(deps, tmp_path)
    for table in ("orders", "customers"):
        ingest.register(textwrap.dedent(f"""
            dataset: sales
            table: {table}
            source: "sales/{table}/*.csv"
            format: csv
            schema:
              - {{name: id, type: INT64, mode: REQUIRED}}
            """), f"{table}.yaml")
    define(deps, gate("ready", "sales.orders", "sales.customers"),
           {"name": "order_count", "kind": "sql", "depends_on": ["ready"],
            "sql": {"query": "CREATE OR REPLACE TABLE sales.order_count AS "
                             "SELECT count(*) AS n, max(_batch_id) AS b FROM sales.orders"}})
    ingest.load("sales/orders/day1.csv", "id\n1\n2\n")
    drain(deps)
    loaded = ingest.load("sales/customers/day1.csv", "id\n7\n")
    drain(deps)
    assert statuses(deps, loaded.batch_id) == {"ready": "SUCCESS", "order_count": "SUCCESS"}

    result = caf("batch", "reprocess", "sales.orders")
    assert result.exit_code == 0, result.output
    [(n, reprocess_batch)] = deps.warehouse.query("SELECT n, b FROM sales.order_count").rows
    assert n == 2 and reprocess_batch != loaded.batch_id
    assert statuses(deps, reprocess_batch) == {"ready": "SUCCESS", "order_count": "SUCCESS"}
    assert "SKIPPED 0" in result.output


def _batch_ids(deps) -> list[int]:
    from sqlalchemy import text

    with deps.sessions() as session:
        return list(session.execute(text("SELECT id FROM task_batch")).scalars())
