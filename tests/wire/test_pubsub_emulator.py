"""CAF's events on the wire: PubSubPublisher → emulator topic → push subscription → `caf serve` /pubsub/.

Everything between publishing and handling is Google's Pub/Sub emulator (push over real HTTP,
retry policy, dead-letter policy); the tests read the outcome back from Postgres.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

from engine import scheduler
from tests.engine import callables
from tests.engine.conftest import batch, define, land_file, py, runs, transient
from tests.wire.conftest import Wire, wait_for
from values.messages import OutgoingMessage


def finished(deps, batch_id: int, timeout: float = 30.0):
    return wait_for(lambda: (b := batch(deps, batch_id)) is not None and b.status != "PROCESSING" and b,
                    timeout=timeout, what=f"batch {batch_id} to finish")


def test_file_triggered_dag_fans_out_and_in_over_pubsub(wire: Wire) -> None:
    deps = wire.deps
    define(deps, py("clean", on_file=["sales.orders"]), py("left", "clean"), py("right", "clean"),
           py("join", "left", "right"))
    _, batch_id = land_file(deps, "sales.orders")  # ingestion's file_loaded, published to the topic
    done = finished(deps, batch_id)
    assert done.status == "SUCCESS"
    assert {n: r["status"] for n, r in runs(deps, batch_id).items()} == dict.fromkeys(
        ("clean", "left", "right", "join"), "SUCCESS")
    assert [callables.calls(n) for n in ("clean", "left", "right", "join")] == [1, 1, 1, 1]
    pushed = [b for b in wire.acks.seen if b.get("message")]
    assert len(pushed) >= 5 and all(b["subscription"].endswith(wire.subscription) for b in pushed)


def test_delayed_retry_is_redelivered_by_pubsub_and_runs_once(wire: Wire) -> None:
    deps = wire.deps
    define(deps, py("flaky"))
    callables.FAILURES["flaky"] = [transient("warehouse busy")]
    batch_id = scheduler.start_batch(deps, name="flaky", trigger="cli")
    done = finished(deps, batch_id)
    run = runs(deps, batch_id)["flaky"]
    assert done.status == "SUCCESS" and run["attempt"] == 2
    assert callables.calls("flaky") == 2  # the failed attempt and exactly one retry
    early = [b for b in wire.acks.seen if (b.get("message") or {}).get("attributes", {}).get("not_before")]
    assert early, "the retry travelled with a not_before attribute"


def test_poison_message_ends_on_the_dead_letter_topic(wire: Wire) -> None:
    never = datetime.now(UTC) + timedelta(days=1)  # every delivery is "too early": 500 each time
    wire.deps.publisher.publish(OutgoingMessage("task", {"batch_id": 1, "task_id": 1, "attempt": 1},
                                                not_before=never))
    [dead] = wire.dead_letters(timeout=40)
    assert json.loads(dead.data) == {"batch_id": 1, "task_id": 1, "attempt": 1}
    assert dead.attributes["event_type"] == "task"
    assert sum(1 for b in wire.acks.seen if b.get("message")) == 5  # max_delivery_attempts


def test_redelivered_trigger_starts_one_batch(wire: Wire) -> None:
    from database.models import TaskBatch

    deps = wire.deps
    define(deps, py("nightly"))

    def is_trigger(body: dict) -> bool:
        data = (body.get("message") or {}).get("data")
        return bool(data) and "batch_id" not in json.loads(base64.b64decode(data))

    wire.acks.rules.append([is_trigger, 1])  # the batch starts, then the ack is lost: Pub/Sub redelivers
    deps.publisher.publish(OutgoingMessage("task", {"task": "nightly"}))
    wait_for(lambda: sum(1 for b in wire.acks.seen if is_trigger(b)) >= 2, what="the trigger's redelivery")
    [only] = wait_for(lambda: _batches(deps), what="a batch")
    assert finished(deps, only.id).status == "SUCCESS"
    assert len(_batches(deps)) == 1 and callables.calls("nightly") == 1
    assert only.summary["message_id"].startswith(f"//pubsub.googleapis.com/projects/caf-emu/topics/{wire.topic}|")
    del TaskBatch


def _batches(deps) -> list:
    from sqlalchemy import select

    from database.models import TaskBatch

    with deps.sessions() as session:
        return list(session.scalars(select(TaskBatch)))
