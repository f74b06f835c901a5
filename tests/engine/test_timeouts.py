"""Timeouts: a run past its timeout is marked ERROR, its lease released, its descendants skipped."""

from __future__ import annotations

import time

from engine import scheduler
from tests.engine import callables
from tests.engine.conftest import batch, define, drain, py, runs
from values.messages import OutgoingMessage, PubSubMessage


def test_task_exceeding_its_timeout_is_marked_error_and_released(deps) -> None:
    define(deps, py("slow", dag="to", timeout=1), py("after", "slow", dag="to"))
    callables.SLEEP["slow"] = 3.0
    started = time.monotonic()
    batch_id = scheduler.start_batch(deps, name="to", trigger="cli")
    drain(deps)
    assert time.monotonic() - started < 2.5  # the handler gave up after the timeout, not after the task
    result = runs(deps, batch_id)
    assert result["slow"]["status"] == "ERROR"
    assert result["slow"]["error"] == "exceeded its timeout of 1s"
    assert result["slow"]["lease_until"] is None
    assert result["after"]["status"] == "SKIPPED"
    assert batch(deps, batch_id).status == "ERROR"


def test_expired_lease_found_by_a_redelivery_ends_the_run(deps, clock) -> None:
    """The instance running a task died: the redelivered message finds the lease expired."""
    from database import runs as run_db
    from database.session import unit_of_work
    from handlers import tasks as handler

    clock.frozen = True
    ids = define(deps, py("lost", timeout=60))
    batch_id = scheduler.start_batch(deps, name="lost", trigger="cli")
    with unit_of_work(deps.sessions) as session:  # an instance claims the run, then crashes
        assert run_db.claim_run(session=session, batch_id=batch_id, task_id=ids["lost"], attempt=1, now=clock())
    drain(deps)  # the original message: the run is leased to the dead instance, nothing happens
    assert runs(deps, batch_id)["lost"]["status"] == "PROCESSING" and callables.calls("lost") == 0
    clock.advance(61)
    data, attrs = OutgoingMessage("task", {"batch_id": batch_id, "task_id": ids["lost"], "attempt": 1}).encoded()
    handler.handle("task", PubSubMessage(data=data, attributes=attrs), deps)
    run = runs(deps, batch_id)["lost"]
    assert (run["status"], run["error"], run["lease_until"]) == ("ERROR", "exceeded its timeout of 60s", None)
    assert batch(deps, batch_id).status == "ERROR" and callables.calls("lost") == 0


def test_sweep_message_ends_expired_runs(deps, clock) -> None:
    from database import runs as run_db
    from database.session import unit_of_work

    clock.frozen = True
    ids = define(deps, py("stuck", timeout=30))
    batch_id = scheduler.start_batch(deps, name="stuck", trigger="cli")
    with unit_of_work(deps.sessions) as session:
        run_db.claim_run(session=session, batch_id=batch_id, task_id=ids["stuck"], attempt=1, now=clock())
    clock.advance(31)
    deps.publisher.publish(OutgoingMessage("task", {"sweep": True}))
    drain(deps)
    assert runs(deps, batch_id)["stuck"]["status"] == "ERROR"
    assert batch(deps, batch_id).status == "ERROR"
