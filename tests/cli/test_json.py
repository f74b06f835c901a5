"""`--json` on every command that reports: one JSON document on stdout, usable from scripts."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import write_yaml
from tests.engine import callables
from tests.engine.conftest import define, py
from tests.handlers.ingest_support import ORDERS, ORDERS_CSV


def as_json(result) -> dict:
    assert result.err == "" or "WARNING" in result.err, result.err
    return json.loads(result.out)


def test_ingest_backfill_reprocess_and_syncs_report_json(caf, deps, tmp_path: Path) -> None:
    registry = as_json(caf("registry", "sync", str(write_yaml(tmp_path / "defs", "orders.yaml", ORDERS)), "--json"))
    assert registry["tables"][0]["table"] == "sales.orders"
    tasks = as_json(caf("tasks", "sync", str(write_yaml(tmp_path / "tasks", "t.yaml", (
        "name: after_orders\nkind: python\non_file: [sales.orders]\n"
        "python: {callable: 'tests.engine.callables:record'}\n"))), "--json"))
    assert tasks["counts"]["created"] == 1

    day1 = tmp_path / "day1.csv"
    day1.write_text(ORDERS_CSV)
    ingested = caf("ingest", str(day1), "--prefix", "sales/orders/", "--json")
    assert ingested.code == 0
    files = as_json(ingested)["files"]
    assert files[0]["status"] == "SUCCESS" and files[0]["rows_loaded"] == 5 and files[0]["object"].endswith("day1.csv")

    deps.storage.put_bytes("landing", "sales/orders/broken.csv", b"Order ID,amount\n")
    backfilled = caf("backfill", "landing/sales/", "--json")
    assert backfilled.code == 1  # the broken file ended in ERROR
    data = as_json(backfilled)
    assert data["objects"] == 1 and [f["status"] for f in data["files"]] == ["ERROR"]  # day1 was archived

    reprocessed = caf("batch", "reprocess", "sales.orders", "--json")
    assert reprocessed.code == 0, reprocessed.text
    batch = as_json(reprocessed)
    assert batch["batch"]["status"] == "SUCCESS" and batch["runs"][0]["name"] == "after_orders"

    purge = as_json(caf("purge", "--older-than", "1d", "--json"))
    assert purge["dry_run"] is True and purge["plan"]["files"] == []

    status = caf("status", "--json")
    assert status.code == 1  # the broken file
    assert as_json(status)["environment"]["app_env"] == "test"  # which environment it read


def test_run_and_restart_report_json(caf, deps) -> None:
    define(deps, py("extract", dag="nightly"), py("load", "extract", dag="nightly"))
    callables.FAILURES["extract"] = [callables.permanent("source down")]
    failed = caf("run", "nightly", "--json")
    assert failed.code == 1
    data = as_json(failed)
    assert data["batch"]["status"] == "ERROR"
    assert {r["name"]: r["status"] for r in data["runs"]} == {"extract": "ERROR", "load": "SKIPPED"}
    restarted = caf("batch", "restart", str(data["batch"]["id"]), "--json")
    assert restarted.code == 0
    assert as_json(restarted)["batch"]["status"] == "SUCCESS"
