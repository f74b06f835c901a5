"""Batches through the local bus and the real handle_pubsub path: ordering, fan-out, fan-in, skips."""

from __future__ import annotations

import threading

from engine import scheduler
from tests.engine import callables
from tests.engine.conftest import (
    batch,
    define,
    drain,
    permanent,
    py,
    run_batch,
    runs,
    statuses,
    task_messages,
)
from values.messages import OutgoingMessage, PubSubMessage


def test_diamond_runs_each_task_once_in_dependency_order(deps) -> None:
    ids = define(deps, py("a", dag="diamond"), py("b", dag="diamond"), py("c", "a", "b", dag="diamond"),
                 py("d", "c", dag="diamond"))
    batch_id = run_batch(deps, "diamond")
    assert statuses(deps, batch_id) == {"a": "SUCCESS", "b": "SUCCESS", "c": "SUCCESS", "d": "SUCCESS"}
    assert [callables.calls(n) for n in "abcd"] == [1, 1, 1, 1]
    order = callables.ORDER
    assert order.index("c") > max(order.index("a"), order.index("b")) and order[-1] == "d"
    assert len(task_messages(deps, ids["c"])) == 1
    done = batch(deps, batch_id)
    assert done.status == "SUCCESS" and done.finished_at is not None
    assert done.summary["counts"] == {"SUCCESS": 4, "ERROR": 0, "SKIPPED": 0}
    assert runs(deps, batch_id)["c"]["output"]["called_by"] == "c"


def test_fan_out_to_fifty_children_and_fan_in_to_one(deps) -> None:
    children = [py(f"child_{i:02d}", "root", dag="wide") for i in range(50)]
    ids = define(deps, py("root", dag="wide"), *children,
                 py("join", *[c["name"] for c in children], dag="wide"))
    batch_id = run_batch(deps, "wide")
    result = statuses(deps, batch_id)
    assert len(result) == 52 and set(result.values()) == {"SUCCESS"}
    assert callables.calls("join") == 1 and callables.ORDER[-1] == "join"
    assert len(task_messages(deps, ids["join"])) == 1
    assert batch(deps, batch_id).summary["counts"]["SUCCESS"] == 52


def test_running_one_task_runs_the_sub_dag_below_it(deps) -> None:
    define(deps, py("a", dag="d"), py("b", "a", dag="d"), py("c", "b", dag="d"), py("other", dag="d"))
    batch_id = run_batch(deps, "b")
    assert statuses(deps, batch_id) == {"b": "SUCCESS", "c": "SUCCESS"}
    assert batch(deps, batch_id).root == "task:b"


def test_failure_skips_every_descendant_naming_the_failed_ancestor(deps) -> None:
    define(deps, py("a", dag="f"), py("b", "a", dag="f"), py("c", "b", dag="f"), py("side", "a", dag="f"),
           py("d", "c", "side", dag="f"))
    callables.FAILURES["b"] = [permanent("bad input")]
    batch_id = run_batch(deps, "f")
    result = runs(deps, batch_id)
    assert {n: r["status"] for n, r in result.items()} == {
        "a": "SUCCESS", "b": "ERROR", "side": "SUCCESS", "c": "SKIPPED", "d": "SKIPPED"}
    assert "bad input" in result["b"]["error"]
    assert result["c"]["error"] == result["d"]["error"] == "upstream task 'b' failed"
    assert callables.calls("c") == callables.calls("d") == 0
    done = batch(deps, batch_id)
    assert done.status == "ERROR"
    assert done.summary["counts"] == {"SUCCESS": 2, "ERROR": 1, "SKIPPED": 2}
    assert done.summary["failed"] == [{"task": "b", "error": "bad input"}]


def test_redelivered_task_message_runs_the_task_once(deps) -> None:
    ids = define(deps, py("a", dag="r"), py("b", "a", dag="r"))
    batch_id = scheduler.start_batch(deps, name="r", trigger="cli")
    drain(deps)
    first = task_messages(deps, ids["a"])[0]
    for _ in range(3):  # Pub/Sub delivers at least once
        deps.publisher.publish(first)
    deps.publisher.publish(task_messages(deps, ids["b"])[0])
    drain(deps)
    assert callables.calls("a") == 1 and callables.calls("b") == 1
    assert len(task_messages(deps, ids["b"])) == 2  # the original and the one re-published above
    assert batch(deps, batch_id).status == "SUCCESS"


def test_two_parents_finishing_at_once_run_the_child_once(deps) -> None:
    """Parents completing concurrently on two threads (two instances) against real Postgres."""
    from handlers import tasks as handler

    ids = define(deps, py("p1", dag="race"), py("p2", dag="race"), py("child", "p1", "p2", dag="race"))
    for attempt in range(5):
        callables.BARRIERS["p1"] = callables.BARRIERS["p2"] = barrier = threading.Barrier(2)
        batch_id = scheduler.start_batch(deps, name="race", trigger="cli")
        errors: list[BaseException] = []

        def deliver(task: str, batch_id: int = batch_id) -> None:
            data = OutgoingMessage("task", {"batch_id": batch_id, "task_id": ids[task], "attempt": 1}).encoded()[0]
            try:
                handler.handle("task", PubSubMessage(data=data, attributes={"event_type": "task"}), deps)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=deliver, args=(name,)) for name in ("p1", "p2")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and not barrier.broken
        drain(deps)  # the bus still holds the original p1/p2 messages: redeliveries, dropped
        child_runs = [m for m in task_messages(deps, ids["child"]) if m.data["batch_id"] == batch_id]
        assert len(child_runs) == 1, f"round {attempt}: child published {len(child_runs)} times"
        assert callables.CALLS[(batch_id, "child")] == 1
        assert batch(deps, batch_id).status == "SUCCESS"


def test_scheduled_trigger_message_starts_one_batch_even_if_redelivered(deps) -> None:
    from database.models import TaskBatch

    define(deps, py("a", dag="nightly"), py("b", "a", dag="nightly"))
    message = OutgoingMessage("task", {"dag": "nightly"})
    data, attrs = message.encoded()
    for _ in range(2):  # the same Pub/Sub message (same message id) delivered twice
        deps.publisher.deliver(data, attrs, "scheduler-123")
    drain(deps)
    with deps.sessions() as session:
        batches = session.query(TaskBatch).all()
    assert len(batches) == 1 and batches[0].trigger == "schedule" and batches[0].status == "SUCCESS"
    assert callables.calls("a") == callables.calls("b") == 1


def test_restart_reruns_only_what_failed_or_was_skipped(deps) -> None:
    define(deps, py("a", dag="rs"), py("b", "a", dag="rs"), py("c", "b", dag="rs"), py("ok", "a", dag="rs"))
    callables.FAILURES["b"] = [permanent("first time")]
    batch_id = run_batch(deps, "rs")
    assert statuses(deps, batch_id) == {"a": "SUCCESS", "b": "ERROR", "c": "SKIPPED", "ok": "SUCCESS"}
    again = scheduler.restart_batch(deps, batch_id)
    drain(deps)
    assert len(again) == 2
    assert statuses(deps, batch_id) == dict.fromkeys(("a", "b", "c", "ok"), "SUCCESS")
    assert [callables.CALLS[(batch_id, n)] for n in ("a", "b", "c", "ok")] == [1, 2, 1, 1]
    done = batch(deps, batch_id)
    assert done.status == "SUCCESS" and done.summary["restarts"] == 1 and done.summary["failed"] == []
    assert runs(deps, batch_id)["b"]["output"]["previous"]["status"] == "ERROR"
    assert scheduler.restart_batch(deps, batch_id) == []  # nothing left to re-run


def test_batch_of_a_missing_name_is_refused(deps) -> None:
    import pytest

    from errors import PermanentError

    with pytest.raises(PermanentError, match="no enabled task or DAG named 'nope'"):
        scheduler.start_batch(deps, name="nope", trigger="cli")
