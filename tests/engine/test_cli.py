"""The `caf` task commands through typer, and the example DAG end to end on DuckDB."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

from config.settings import PROJECT_ROOT
from tests.engine import callables
from tests.engine.conftest import define, drain, land_file, py, runs, statuses

EXAMPLES = PROJECT_ROOT / "examples" / "tasks"


def test_tasks_sync_prints_what_changed(caf, tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: a\nkind: python\npython: {callable: 'engine.kinds.python:noop'}\n")
    first = caf("tasks", "sync", str(tmp_path))
    assert first.exit_code == 0 and "1 created, 0 updated, 0 unchanged, 0 disabled, 0 missing" in first.output
    assert "0 created, 0 updated, 1 unchanged, 0 disabled, 0 missing" in caf("tasks", "sync", str(tmp_path)).output


def test_run_drives_the_local_bus_and_prints_the_batch(caf, deps) -> None:
    define(deps, py("extract", dag="nightly"), py("load", "extract", dag="nightly"))
    result = caf("run", "nightly")
    assert result.exit_code == 0, result.output
    assert "batch 1 SUCCESS" in result.output and "extract" in result.output and "SUCCESS 2" in result.output


def test_failed_batch_exits_1_and_restart_reruns_it(caf, deps) -> None:
    define(deps, py("extract", dag="nightly"), py("load", "extract", dag="nightly"))
    callables.FAILURES["extract"] = [callables.permanent("source down")]
    failed = caf("run", "nightly")
    assert failed.exit_code == 1 and "source down" in failed.output
    assert "upstream task 'extract' failed" in failed.output
    restarted = caf("batch", "restart", "1")
    assert restarted.exit_code == 0 and "running 2 task(s) again" in restarted.output
    assert statuses(deps, 1) == {"extract": "SUCCESS", "load": "SUCCESS"}
    shown = caf("batch", "show", "1", "--json")
    assert '"restarts": 1' in shown.output


def test_run_passes_parameters_and_rejects_bad_ones(caf, deps) -> None:
    define(deps, py("p"))
    assert caf("run", "p", "--param", "day=2024-01-01").exit_code == 0
    from tests.engine.conftest import batch

    assert batch(deps, 1).summary["parameters"] == {"day": "2024-01-01"}
    assert caf("run", "p", "--param", "oops").exit_code == 2


def test_example_dag_runs_after_both_sample_tables_load(caf, deps) -> None:
    warehouse = deps.warehouse
    warehouse.query("CREATE SCHEMA sales")
    warehouse.query("CREATE TABLE sales.orders (order_id BIGINT, customer_id BIGINT, amount DECIMAL(18,3), "
                    "order_date DATE)")
    warehouse.query("CREATE TABLE sales.customers (customer_id BIGINT, name VARCHAR, country VARCHAR)")
    warehouse.query("INSERT INTO sales.orders VALUES (1, 10, 12.50, DATE '2026-11-18'), "
                    "(2, 10, 7.50, DATE '2026-11-19'), (3, 11, 100, DATE '2026-11-19')")
    warehouse.query("INSERT INTO sales.customers VALUES (10, 'Ada', 'FR'), (11, 'Bob', 'DE'), (12, 'Cy', 'FR')")
    assert caf("tasks", "sync", str(EXAMPLES)).exit_code == 0

    _, orders_batch = land_file(deps, "sales.orders", md5="o")
    drain(deps)
    assert statuses(deps, orders_batch)["sales_files_ready"] == "SKIPPED"  # customers not there yet
    _, customers_batch = land_file(deps, "sales.customers", md5="c")
    drain(deps)
    assert set(statuses(deps, customers_batch).values()) == {"SUCCESS"}
    summary = warehouse.query("SELECT country, customers, orders, revenue, last_order_date, _batch_id "
                              "FROM sales.sales_summary ORDER BY country").rows
    assert [row[:4] for row in summary] == [("DE", 1, 1, Decimal("100.000")), ("FR", 2, 2, Decimal("20.000"))]
    assert {row[5] for row in summary} == {customers_batch}
    shown = caf("batch", "show", str(customers_batch))
    assert "sales_summary" in shown.output and "rows_affected" in shown.output
    freshness = caf("freshness", "sales.sales_summary")
    assert freshness.exit_code == 0 and "is fresh" in freshness.output and "customer_revenue" in freshness.output


def test_freshness_exits_1_when_stale(caf, deps) -> None:
    define(deps, py("clean", on_file=["sales.orders"], produces=["mart.clean"]))
    land_file(deps, "sales.orders", md5="a")
    drain(deps)
    land_file(deps, "sales.orders", md5="b", publish=False)
    stale = caf("freshness", "mart.clean")
    assert stale.exit_code == 1 and "is stale" in stale.output and "newer source file for sales.orders" in stale.output


def test_reprocess_reloads_without_duplicates_and_reruns_downstream(caf, deps, tmp_path: Path) -> None:
    """End to end through the real ingestion (handlers.raw_file), the path `caf batch reprocess` takes."""
    from tests.handlers.ingest_support import Ingest

    ingest = Ingest(deps, tmp_path)
    ingest.register(textwrap.dedent("""
        dataset: sales
        table: orders
        source: "sales/orders/*.csv"
        format: csv
        schema:
          - {name: order_id, type: INT64, mode: REQUIRED}
          - {name: amount, type: NUMERIC}
        write_mode: append
        """))
    define(deps, {"name": "order_count", "kind": "sql", "on_file": ["sales.orders"],
                  "sql": {"query": "CREATE OR REPLACE TABLE sales.order_count AS "
                                   "SELECT count(*) AS n, max(_batch_id) AS b FROM sales.orders"}})
    loaded = ingest.load("sales/orders/day1.csv", "order_id,amount\n1,2.5\n2,3.5\n")
    drain(deps)
    assert runs(deps, loaded.batch_id)["order_count"]["status"] == "SUCCESS"

    result = caf("batch", "reprocess", "sales.orders")
    assert result.exit_code == 0, result.output
    assert ingest.count("sales.orders") == 2
    [(n, reprocess_batch)] = deps.warehouse.query("SELECT n, b FROM sales.order_count").rows
    assert n == 2 and reprocess_batch != loaded.batch_id
    assert runs(deps, reprocess_batch)["order_count"]["status"] == "SUCCESS"
