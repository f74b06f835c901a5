"""`caf status`: counts and rich tables, --json, exit 1 on an unresolved ERROR, one table's freshness, --metrics."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from cli import ops, status
from tests.handlers.ingest_support import ORDERS, ORDERS_CSV

app = typer.Typer()
app.command()(status.status)
ops.register(app)
runner = CliRunner()

MISSING_NOTE = "Order ID,amount,order_date\n9,1.00,2026-11-05\n"


def caf(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["status", *args], catch_exceptions=False)
    return result.exit_code, result.output


def test_status_tables_json_and_exit_code(deps, ingest) -> None:
    code, out = caf()
    assert code == 0 and "CAF status" in out

    ingest.register(ORDERS)
    ingest.load("sales/orders/day1.csv", ORDERS_CSV)
    failed = ingest.load("sales/orders/day2.csv", MISSING_NOTE)
    code, out = caf()
    assert code == 1
    for title in ("CAF status", "recent file errors", "recent batches", "tables"):
        assert title in out
    assert "ERROR" in out and "sales.orders" in out

    code, out = caf("--json")
    data = json.loads(out)
    assert code == 1
    assert data["files"] == {"SUCCESS": 1, "ERROR": 1}
    assert data["unresolved"] == {"files": 1, "task_runs": 0, "batches": 1}
    assert data["recent_file_errors"][0]["id"] == failed.id
    assert data["tables"][0]["table"] == "sales.orders"

    # The object is fixed and arrives again: the old ERROR is history, not an open problem.
    ingest.load("sales/orders/day2.csv", MISSING_NOTE.replace("order_date\n", "order_date,note\n")
                .replace("2026-11-05\n", "2026-11-05,x\n"))
    code, out = caf("--json")
    data = json.loads(out)
    assert data["files"] == {"SUCCESS": 2, "ERROR": 1}
    assert data["unresolved"] == {"files": 0, "task_runs": 0, "batches": 0}
    assert code == 0


def test_status_of_one_table_shows_freshness(deps, ingest) -> None:
    ingest.register(ORDERS)
    ingest.load("sales/orders/day1.csv", ORDERS_CSV)
    code, out = caf("sales.orders", "--json")
    data = json.loads(out)
    assert code == 0 and data["status"] == "fresh" and data["rows"] == 5
    assert data["files"][0]["object"].startswith("gs://landing/sales/orders/day1.csv#")

    ingest.load("sales/orders/day2.csv", MISSING_NOTE)  # a newer source that did not load
    code, out = caf("sales.orders")
    assert code == 1 and "stale" in out and "day2.csv" in out

    result = runner.invoke(app, ["status", "not-a-table"])
    assert result.exit_code == 2 and "DATASET.TABLE" in result.output


def test_status_metrics_summarise_the_last_hours(deps, ingest) -> None:
    ingest.register(ORDERS)
    ingest.load("sales/orders/day1.csv", ORDERS_CSV)
    ingest.load("sales/orders/day2.csv", MISSING_NOTE)
    ingest.load("sales/orders/bad.csv", "Order ID,amount,order_date,note\nx,1,2026-11-01,a\ny,2,2026-11-01,b\n"
                "z,3,2026-11-01,c\n")
    code, out = caf("--metrics", "--hours", "2", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["hours"] == 2
    files = data["files"]
    assert files["by_status"]["SUCCESS"]["count"] == 1 and files["by_status"]["ERROR"]["count"] == 2
    assert files["totals"]["rows_loaded"] == 5 and files["totals"]["rows_rejected"] == 3
    assert files["totals"]["bytes"] > 0 and files["by_status"]["SUCCESS"]["avg_ms"] is not None
    assert files["errors_by_reason"] == {"bad_rows": 1, "mapping_mismatch": 1}

    code, out = caf("--metrics")
    assert code == 0
    for title in ("files since", "task runs", "errors by reason", "mapping_mismatch", "bad_rows"):
        assert title in out

    deps.clock.advance(3 * 3600)
    code, out = caf("--metrics", "--hours", "1", "--json")
    assert json.loads(out)["files"]["totals"]["count"] == 0
