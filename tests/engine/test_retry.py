"""Retries: exponential backoff with jitter as not-before messages, driven by the controllable clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from engine import retry, scheduler
from errors import TransientError
from tests.engine import callables
from tests.engine.conftest import batch, define, drain, permanent, py, runs, task_messages, transient
from values.messages import OutgoingMessage, PubSubMessage


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    for attempt, ceiling in ((1, 5), (2, 10), (3, 20), (4, 40), (10, 600)):
        delays = [retry.backoff_seconds(attempt, base=5, cap=600, rng=rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len({round(d, 6) for d in delays}) > 150  # jittered, not a fixed schedule


def test_retry_after_is_a_minimum() -> None:
    now = datetime.now(UTC)
    assert retry.retry_at(now, 1, base=1, cap=2, retry_after=90) == now + timedelta(seconds=90)


def test_transient_failure_is_retried_after_backoff_without_blocking(deps, clock) -> None:
    clock.frozen = True
    ids = define(deps, py("flaky", dag="t", max_attempts=3), py("after", "flaky", dag="t"))
    callables.FAILURES["flaky"] = [transient("warehouse busy")]
    batch_id = scheduler.start_batch(deps, name="t", trigger="cli")
    drain(deps)
    run = runs(deps, batch_id)["flaky"]
    assert (run["status"], run["attempt"], run["error"]) == ("PROCESSING", 2, "warehouse busy")
    retry_msg = task_messages(deps, ids["flaky"])[-1]
    assert retry_msg.data["attempt"] == 2
    delay = (retry_msg.not_before - clock()).total_seconds()
    base = deps.settings.tasks.backoff_base_seconds
    assert base / 2 <= delay <= base  # attempt 1 → [base/2, base]
    assert callables.calls("flaky") == 1

    clock.advance(delay - 0.5)  # not yet due: the bus holds it
    drain(deps)
    assert callables.calls("flaky") == 1
    clock.advance(1)
    drain(deps)
    assert callables.calls("flaky") == 2 and callables.calls("after") == 1
    final = runs(deps, batch_id)
    assert (final["flaky"]["status"], final["flaky"]["attempt"]) == ("SUCCESS", 2)
    assert batch(deps, batch_id).status == "SUCCESS"


def test_retries_stop_at_max_attempts_and_fail_the_task(deps, clock) -> None:
    clock.frozen = True
    define(deps, py("flaky", dag="t", max_attempts=3), py("after", "flaky", dag="t"))
    callables.FAILURES["flaky"] = [transient("503 from upstream")] * 5
    batch_id = scheduler.start_batch(deps, name="t", trigger="cli")
    for _ in range(5):
        drain(deps)
        clock.advance(deps.settings.tasks.backoff_max_seconds)
    result = runs(deps, batch_id)
    assert callables.calls("flaky") == 3
    assert (result["flaky"]["status"], result["flaky"]["attempt"]) == ("ERROR", 3)
    assert result["flaky"]["error"] == "failed after 3 attempt(s): 503 from upstream"
    assert result["after"]["status"] == "SKIPPED"
    assert batch(deps, batch_id).status == "ERROR"


def test_unexpected_exceptions_count_as_transient(deps, clock) -> None:
    clock.frozen = True
    define(deps, py("buggy", max_attempts=2))
    callables.FAILURES["buggy"] = [KeyError("x"), KeyError("x")]
    batch_id = scheduler.start_batch(deps, name="buggy", trigger="cli")
    drain(deps)
    clock.advance(deps.settings.tasks.backoff_max_seconds)
    drain(deps)
    run = runs(deps, batch_id)["buggy"]
    assert (run["status"], run["attempt"]) == ("ERROR", 2) and "KeyError" in run["error"]


def test_permanent_error_fails_at_once(deps, clock) -> None:
    clock.frozen = True
    ids = define(deps, py("broken", dag="p", max_attempts=5), py("after", "broken", dag="p"))
    callables.FAILURES["broken"] = [permanent("column x does not exist")]
    batch_id = scheduler.start_batch(deps, name="p", trigger="cli")
    drain(deps)
    result = runs(deps, batch_id)
    assert (result["broken"]["status"], result["broken"]["attempt"]) == ("ERROR", 1)
    assert result["broken"]["error"] == "column x does not exist"
    assert len(task_messages(deps, ids["broken"])) == 1  # no retry published
    assert callables.calls("broken") == 1 and batch(deps, batch_id).status == "ERROR"


def test_retry_after_from_the_error_delays_the_next_attempt(deps, clock) -> None:
    clock.frozen = True
    ids = define(deps, py("throttled", max_attempts=2))
    callables.FAILURES["throttled"] = [transient("429", retry_after=900)]
    scheduler.start_batch(deps, name="throttled", trigger="cli")
    drain(deps)
    message = task_messages(deps, ids["throttled"])[-1]
    assert (message.not_before - clock()).total_seconds() == pytest.approx(900)


def test_message_delivered_before_its_time_raises_transient(deps, clock) -> None:
    """In production Pub/Sub may deliver a retry early; raising makes it redeliver later."""
    from handlers import tasks as handler

    data, attrs = OutgoingMessage("task", {"batch_id": 1, "task_id": 1, "attempt": 2},
                                  not_before=clock() + timedelta(minutes=5)).encoded()
    with pytest.raises(TransientError, match="not due"):
        handler.handle("task", PubSubMessage(data=data, attributes=attrs), deps)


def test_child_waits_for_a_parent_that_is_retrying(deps, clock) -> None:
    """Fan-in: one parent succeeds while the other waits for its retry; the child must not run yet.

    The local bus delivers in order, so with two healthy parents the second always finishes
    before the child's message arrives: the transient failure is what opens the gap.
    """
    clock.frozen = True
    ids = define(deps, py("fast", dag="fan_in"), py("flaky", dag="fan_in", max_attempts=3),
                 py("child", "fast", "flaky", dag="fan_in"))
    callables.FAILURES["flaky"] = [transient("warehouse busy")]
    batch_id = scheduler.start_batch(deps, name="fan_in", trigger="cli")
    drain(deps)
    waiting = runs(deps, batch_id)
    assert (waiting["fast"]["status"], waiting["flaky"]["status"]) == ("SUCCESS", "PROCESSING")
    assert waiting["child"]["attempt"] == 0, "child released while a parent is still pending"
    assert task_messages(deps, ids["child"]) == [] and callables.calls("child") == 0

    clock.advance(deps.settings.tasks.backoff_max_seconds)
    drain(deps)
    assert callables.ORDER == ["fast", "flaky", "flaky", "child"]
    assert len(task_messages(deps, ids["child"])) == 1
    assert {n: r["status"] for n, r in runs(deps, batch_id).items()} == dict.fromkeys(("fast", "flaky", "child"),
                                                                                    "SUCCESS")
    assert batch(deps, batch_id).status == "SUCCESS"
