"""`on_file` triggers and the wait_for_files gate, driven by file_loaded events as ingestion sends them."""

from __future__ import annotations

from tests.engine import callables
from tests.engine.conftest import batch, define, drain, land_file, py, runs, statuses
from values.messages import OutgoingMessage


def gate(name: str, *tables: str, **extra) -> dict:
    return {"name": name, "kind": "wait_for_files", "wait_for_files": {"tables": list(tables)},
            "on_file": list(tables), **extra}


def test_file_loaded_starts_the_tasks_listening_to_that_table(deps) -> None:
    define(deps, py("orders_clean", on_file=["sales.orders"]), py("orders_report", "orders_clean"),
           py("customers_clean", on_file=["sales.customers"]), py("both", on_file=["sales.orders", "sales.customers"]))
    _, batch_id = land_file(deps, "sales.orders")
    drain(deps)
    assert statuses(deps, batch_id) == {"orders_clean": "SUCCESS", "orders_report": "SUCCESS", "both": "SUCCESS"}
    assert callables.calls("customers_clean") == 0
    done = batch(deps, batch_id)
    assert (done.status, done.trigger, done.root) == ("SUCCESS", "file", "sales.orders")


def test_file_nobody_listens_to_closes_its_batch_with_a_summary(deps) -> None:
    define(deps, py("orders_clean", on_file=["sales.orders"]))
    _, batch_id = land_file(deps, "sales.returns")
    drain(deps)
    done = batch(deps, batch_id)
    assert done.status == "SUCCESS" and done.summary["tasks"] == 0
    assert done.summary["note"] == "no task listens to sales.returns"
    assert callables.calls("orders_clean") == 0


def test_redelivered_file_loaded_starts_the_tasks_once(deps) -> None:
    define(deps, py("orders_clean", on_file=["sales.orders"]))
    _, batch_id = land_file(deps, "sales.orders")
    event = next(m for m in deps.publisher.published if m.event_type == "file_loaded")
    deps.publisher.publish(event)
    drain(deps)
    deps.publisher.publish(event)  # and once more after the batch ended
    drain(deps)
    assert callables.calls("orders_clean") == 1 and batch(deps, batch_id).status == "SUCCESS"


def test_file_loaded_without_a_batch_gets_one(deps) -> None:
    from database.models import TaskBatch

    define(deps, py("orders_clean", on_file=["sales.orders"]))
    deps.publisher.publish(OutgoingMessage("file_loaded", {"dataset": "sales", "table": "orders"}))
    drain(deps)
    with deps.sessions() as session:
        only = session.query(TaskBatch).one()
    assert (only.trigger, only.status) == ("file", "SUCCESS") and callables.calls("orders_clean") == 1


def test_gate_waits_for_every_table_then_runs_its_descendants_once(deps) -> None:
    define(deps, gate("ready", "sales.orders", "sales.customers"), py("transform", "ready"))
    _, first = land_file(deps, "sales.orders", md5="o1")
    drain(deps)
    waiting = runs(deps, first)
    assert waiting["ready"]["status"] == "SKIPPED"
    assert waiting["ready"]["error"] == "waiting for files: sales.customers"
    assert waiting["transform"]["error"] == "upstream task 'ready' was skipped: waiting for files: sales.customers"
    assert batch(deps, first).status == "SUCCESS"  # nothing failed: the set is just not complete

    _, second = land_file(deps, "sales.customers", md5="c1")
    drain(deps)
    passed = runs(deps, second)
    assert passed["ready"]["status"] == passed["transform"]["status"] == "SUCCESS"
    assert set(passed["ready"]["output"]["files"]) == {"sales.orders", "sales.customers"}
    assert callables.calls("transform") == 1

    _, third = land_file(deps, "sales.customers", md5="c2")  # orders already consumed: wait again
    drain(deps)
    assert runs(deps, third)["ready"]["error"] == "waiting for files: sales.orders"
    assert callables.calls("transform") == 1


def test_disabled_listener_is_not_started(deps) -> None:
    define(deps, py("old", on_file=["sales.orders"]))
    define(deps, py("new", on_file=["sales.orders"]))  # `old` is no longer defined: disabled
    _, batch_id = land_file(deps, "sales.orders")
    drain(deps)
    assert statuses(deps, batch_id) == {"new": "SUCCESS"} and callables.calls("old") == 0
