"""`sql` tasks against DuckDB: parameters stay data, rows affected and job ids recorded."""

from __future__ import annotations

from datetime import date

import pytest

from engine import scheduler
from engine.kinds.sql import bind_parameters
from errors import PermanentError
from tests.engine.conftest import batch, define, drain, runs


def sql_task(name: str, query: str, parameters: dict | None = None, **extra) -> dict:
    return {"name": name, "kind": "sql", "sql": {"query": query, "parameters": parameters or {}}, **extra}


@pytest.fixture
def notes(deps):
    deps.warehouse.query("CREATE SCHEMA IF NOT EXISTS ops")
    deps.warehouse.query("CREATE TABLE ops.notes (batch_id BIGINT, run_date DATE, note VARCHAR, n INTEGER)")
    return deps.warehouse


def test_parameters_with_quotes_and_semicolons_stay_data(deps, notes) -> None:
    hostile = "x'); DROP TABLE ops.notes; --"
    define(deps, sql_task("write_note", "INSERT INTO ops.notes VALUES (@batch_id, @run_date, @note, @n)",
                          {"note": "STRING", "n": {"type": "INT64", "default": 7}}))
    batch_id = scheduler.start_batch(deps, name="write_note", trigger="cli", parameters={"note": hostile})
    drain(deps)
    run = runs(deps, batch_id)["write_note"]
    assert run["status"] == "SUCCESS", run["error"]
    assert run["output"]["rows_affected"] == 1
    rows = notes.query("SELECT batch_id, run_date, note, n FROM ops.notes").rows
    assert rows == [(batch_id, batch(deps, batch_id).started_at.date(), hostile, 7)]


def test_job_id_is_derived_from_the_task_run(deps, notes) -> None:
    ids = define(deps, sql_task("count", "SELECT count(*) FROM ops.notes"))
    batch_id = scheduler.start_batch(deps, name="count", trigger="cli")
    drain(deps)
    assert runs(deps, batch_id)["count"]["output"]["job_id"] == f"caf_b{batch_id}_t{ids['count']}_r0_a1"


def test_missing_parameter_fails_naming_it(deps, notes) -> None:
    define(deps, sql_task("needs", "INSERT INTO ops.notes (note) VALUES (@note)", {"note": "STRING"}))
    batch_id = scheduler.start_batch(deps, name="needs", trigger="cli")
    drain(deps)
    run = runs(deps, batch_id)["needs"]
    assert (run["status"], run["attempt"]) == ("ERROR", 1)
    assert run["error"] == "task needs: parameter 'note' has no value and no default"


def test_warehouse_rejection_is_permanent(deps, notes) -> None:
    define(deps, sql_task("typo", "SELECT no_such_column FROM ops.notes"))
    batch_id = scheduler.start_batch(deps, name="typo", trigger="cli")
    drain(deps)
    run = runs(deps, batch_id)["typo"]
    assert (run["status"], run["attempt"]) == ("ERROR", 1) and "no_such_column" in run["error"]


def test_bind_parameters_converts_types_and_sends_only_referenced_ones() -> None:
    declared = {"d": {"type": "DATE"}, "amount": {"type": "NUMERIC"}, "flag": {"type": "BOOL"},
                "unused": {"type": "STRING"}}
    params = bind_parameters("SELECT @d, @amount, @flag, 'a@b.com', @batch_id", declared,
                             {"d": "2024-02-29", "amount": "12.50", "flag": "true", "unused": "x"},
                             batch_id=5, run_date=date(2024, 3, 1), task="t")
    assert params == {"d": date(2024, 2, 29), "amount": __import__("decimal").Decimal("12.50"), "flag": True,
                      "batch_id": 5}
    with pytest.raises(PermanentError, match="parameter 'd': 'soon' is not a DATE"):
        bind_parameters("SELECT @d", declared, {"d": "soon"}, batch_id=1, run_date=date.today(), task="t")
