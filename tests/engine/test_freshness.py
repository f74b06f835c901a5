"""Freshness: which files and runs produced a table, and whether something newer exists (computed from run keys)."""

from __future__ import annotations

from database.session import unit_of_work
from engine.freshness import table_freshness
from tests.engine.conftest import define, drain, land_file, py, runs


def fresh(deps, qualified: str) -> dict:
    dataset, table = qualified.split(".")
    with unit_of_work(deps.sessions) as session:
        return table_freshness(session=session, warehouse=deps.warehouse, dataset=dataset, table=table)


def pipeline(deps, *, clean_extra: dict | None = None) -> None:
    define(deps, py("clean", on_file=["sales.orders"], produces=["mart.orders_clean"], **(clean_extra or {})),
           py("report", "clean", produces=["mart.report"]))


def test_fresh_table_lists_its_source_files_and_producing_runs(deps) -> None:
    pipeline(deps)
    file_id, batch_id = land_file(deps, "sales.orders", md5="md5-a")
    drain(deps)
    clean = fresh(deps, "mart.orders_clean")
    assert clean["status"] == "fresh" and clean["reasons"] == []
    assert clean["producer"]["task"] == "clean" and clean["producer"]["batch_id"] == batch_id
    assert clean["producer"]["run_key"] == runs(deps, batch_id)["clean"]["run_key"]
    [source] = clean["files"]
    assert (source["table"], source["file_id"], source["md5"], source["crc32c"]) == ("sales.orders", file_id,
                                                                                       "md5-a", "crc")
    report = fresh(deps, "mart.report")
    assert report["status"] == "fresh"
    [upstream] = report["upstream"]
    assert (upstream["task"], upstream["run_key"], upstream["stale"]) == ("clean", clean["producer"]["run_key"],
                                                                          False)


def test_newer_file_makes_the_table_and_everything_downstream_stale(deps) -> None:
    pipeline(deps)
    land_file(deps, "sales.orders", md5="md5-a")
    drain(deps)
    newer_id, newer_batch = land_file(deps, "sales.orders", md5="md5-b", publish=False)  # loaded, not yet run

    clean = fresh(deps, "mart.orders_clean")
    assert clean["status"] == "stale"
    assert any("newer source file for sales.orders" in r and "md5-b" in r for r in clean["reasons"])
    report = fresh(deps, "mart.report")
    assert report["status"] == "stale"
    used = report["upstream"][0]["task_log_id"]
    assert report["reasons"] == [f"upstream task clean has newer input than run {used} used"]

    from engine.scheduler import start_file_batch

    start_file_batch(deps, batch_id=newer_batch, table="sales.orders")
    drain(deps)
    assert fresh(deps, "mart.orders_clean")["status"] == fresh(deps, "mart.report")["status"] == "fresh"
    assert fresh(deps, "mart.orders_clean")["files"][0]["file_id"] == newer_id


def test_changed_definition_makes_its_table_stale(deps) -> None:
    pipeline(deps)
    land_file(deps, "sales.orders")
    drain(deps)
    pipeline(deps, clean_extra={"python": {"callable": "engine.kinds.python:noop"}})
    clean = fresh(deps, "mart.orders_clean")
    assert clean["status"] == "stale" and "the definition of task clean changed since it ran" in clean["reasons"]


def test_source_table_is_stale_while_a_newer_file_is_not_loaded(deps) -> None:
    land_file(deps, "sales.orders", md5="md5-a")
    assert fresh(deps, "sales.orders")["status"] == "fresh"
    land_file(deps, "sales.orders", md5="md5-b", status="ERROR")
    orders = fresh(deps, "sales.orders")
    assert orders["status"] == "stale"
    [reason] = orders["reasons"]
    assert reason.startswith("newer source gs://landing/sales/orders/") and reason.endswith("is ERROR, not loaded")
    assert [f["md5"] for f in orders["files"]] == ["md5-a"]


def test_unknown_table(deps) -> None:
    unknown = fresh(deps, "nowhere.nothing")
    assert unknown["status"] == "unknown" and unknown["rows"] is None
