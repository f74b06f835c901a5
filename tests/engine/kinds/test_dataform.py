"""`dataform` tasks through the engine against the loopback Dataform API (real client, REST transport)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.auth.credentials import AnonymousCredentials

from adapters.services.dataform import DataformClient
from app.deps import Deps, set_deps
from engine import scheduler
from tests.adapters.services.fake_dataform import FakeDataform, action, serve
from tests.engine.conftest import batch, define, drain, runs
from values.messages import OutgoingMessage

REPO = {"project": "p", "location": "l", "repository": "r", "git_commitish": "main",
        "included_tags": ["daily"]}


@pytest.fixture
def fake() -> Iterator[FakeDataform]:
    fake = FakeDataform()
    server = serve(fake)
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def df_deps(deps, fake) -> Iterator[Deps]:
    client = DataformClient(api_endpoint=fake.url, credentials=AnonymousCredentials())
    with_client = Deps(deps.settings, clock=deps.clock, engine=deps.engine, sessions=deps.sessions,
                       publisher=deps.publisher, dataform=client)
    previous = set_deps(with_client)
    yield with_client
    set_deps(previous)


def dataform_task(name: str = "transform", **extra) -> dict:
    return {"name": name, "kind": "dataform", "dataform": {"repo": REPO, "poll_seconds": 30}, **extra}


def follow(deps, clock, rounds: int = 4) -> None:
    for _ in range(rounds):
        drain(deps)
        clock.advance(30)
    drain(deps)


def invocations(fake: FakeDataform) -> int:
    return len(fake.bodies("/workflowInvocations"))


def test_invocation_is_started_once_and_followed_by_check_messages(df_deps, fake, clock) -> None:
    clock.frozen = True
    fake.running_polls = 2
    define(df_deps, dataform_task())
    batch_id = scheduler.start_batch(df_deps, name="transform", trigger="cli")
    drain(df_deps)
    pending = runs(df_deps, batch_id)["transform"]
    assert pending["status"] == "PROCESSING" and pending["remote_id"].endswith("/workflowInvocations/i2")
    assert fake.bodies("/workflowInvocations")[0]["invocationConfig"]["includedTags"] == ["daily"]
    checks = [m for m in df_deps.publisher.published if m.event_type == "dataform"]
    assert len(checks) == 1 and checks[0].data["check"] == 1
    follow(df_deps, clock)
    done = runs(df_deps, batch_id)["transform"]
    assert done["status"] == "SUCCESS" and done["output"]["state"] == "SUCCEEDED"
    assert invocations(fake) == 1 and batch(df_deps, batch_id).status == "SUCCESS"


def test_redelivered_start_after_a_crash_checks_the_recorded_invocation(df_deps, fake, clock) -> None:
    """The start recorded the invocation name, then its instance died before scheduling checks."""
    from database import runs as run_db
    from database.session import unit_of_work
    from engine.kinds.base import TaskContext
    from engine.kinds.dataform import _target

    clock.frozen = True
    ids = define(df_deps, dataform_task())
    batch_id = scheduler.start_batch(df_deps, name="transform", trigger="cli")
    with unit_of_work(df_deps.sessions) as session:
        claim = run_db.claim_run(session=session, batch_id=batch_id, task_id=ids["transform"], attempt=1, now=clock())
    ctx = TaskContext(deps=df_deps, task=claim.task, batch=claim.batch, run=claim.run)
    client = df_deps._get("dataform", DataformClient)
    ctx.record_remote_id(client.start(_target(ctx)))  # ... and the instance is gone
    start = OutgoingMessage("task", {"batch_id": batch_id, "task_id": ids["transform"], "attempt": 1})
    for _ in range(2):
        df_deps.publisher.publish(start)  # Pub/Sub redelivers the unacknowledged start
    follow(df_deps, clock)
    assert runs(df_deps, batch_id)["transform"]["status"] == "SUCCESS"
    assert invocations(fake) == 1


def test_failed_invocation_records_failed_actions_and_an_alert(df_deps, fake, clock) -> None:
    clock.frozen = True
    fake.outcome = "FAILED"
    fake.actions = [action("proj.sales.orders_clean", "FAILED", "Syntax error: Unexpected ')'"),
                    action("sales.report", "SKIPPED"), action("sales.ok", "SUCCEEDED")]
    define(df_deps, dataform_task(), {"name": "after", "kind": "python", "depends_on": ["transform"],
                                      "python": {"callable": "engine.kinds.python:noop"}})
    batch_id = scheduler.start_batch(df_deps, name="transform", trigger="cli")
    follow(df_deps, clock)
    result = runs(df_deps, batch_id)
    failed = result["transform"]
    assert failed["status"] == "ERROR" and failed["attempt"] == 1
    assert "FAILED: proj.sales.orders_clean: Syntax error: Unexpected ')'" in failed["error"]
    assert failed["output"]["alert"]["kind"] == "remote_failure"
    assert [a["target"] for a in failed["output"]["alert"]["detail"]["failed_actions"]] == ["proj.sales.orders_clean"]
    assert result["after"]["status"] == "SKIPPED"


def test_compilation_error_fails_at_once_with_its_message(df_deps, fake, clock) -> None:
    clock.frozen = True
    fake.compilation_errors = [{"message": "Unexpected token ';'", "path": "definitions/orders.sqlx"}]
    define(df_deps, dataform_task())
    batch_id = scheduler.start_batch(df_deps, name="transform", trigger="cli")
    drain(df_deps)
    failed = runs(df_deps, batch_id)["transform"]
    assert (failed["status"], failed["attempt"]) == ("ERROR", 1)
    assert "Unexpected token ';' (at definitions/orders.sqlx)" in failed["error"]
    assert invocations(fake) == 0


def test_lost_reply_of_invocation_create_adopts_the_invocation_instead_of_starting_another(
        df_deps, fake, clock) -> None:
    """The remote starts the invocation, then the connection drops before the reply: the retry
    finds the invocation of the recorded compilation result and follows it."""
    clock.frozen = True
    fake.lose_replies = {"_create_invocation": 1}
    define(df_deps, dataform_task())
    batch_id = scheduler.start_batch(df_deps, name="transform", trigger="cli")
    follow(df_deps, clock, rounds=8)
    run = runs(df_deps, batch_id)["transform"]
    assert run["status"] == "SUCCESS", run["error"]
    assert invocations(fake) == 1 and len(fake.bodies("/compilationResults")) == 1
    assert run["output"]["adopted"] is True and run["remote_id"].endswith("/workflowInvocations/i2")


def test_failed_invoke_retries_with_the_recorded_compilation_and_starts_one_invocation(
        df_deps, fake, clock) -> None:
    """The invoke got a 503 (the remote did nothing): the retry finds no invocation and starts one."""
    clock.frozen = True
    fake.unavailable = {"_create_invocation": 1}
    define(df_deps, dataform_task())
    batch_id = scheduler.start_batch(df_deps, name="transform", trigger="cli")
    follow(df_deps, clock, rounds=8)
    run = runs(df_deps, batch_id)["transform"]
    assert run["status"] == "SUCCESS" and run["attempt"] == 2 and "adopted" not in run["output"]
    assert invocations(fake) == 2 and len(fake.bodies("/compilationResults")) == 1  # the 503'd one + one
    compilations = {b["compilationResult"] for b in fake.bodies("/workflowInvocations")}
    assert len(compilations) == 1
