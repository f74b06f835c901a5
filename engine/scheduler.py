"""Batches: start one, record how each task run ended, publish ready children, skip, close, restart.

Every transition runs in one transaction that first locks the batch row, so two parents that
finish at the same moment on two instances release their common child exactly once, and
exactly one transaction sees "nothing pending" and closes the batch. Messages for the next
runs are written to the outbox in that same transaction and published after commit.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from database import batches as batch_db
from database import outbox, tries
from database import runs as run_db
from database import tasks as task_db
from database.direct import direct
from database.session import unit_of_work
from errors import PermanentError
from values.reasons import task_reason

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from database.batches import BatchRow
    from database.runs import RunRow
    from database.tasks import TaskRow
    from engine.ports import TaskPorts

log = logging.getLogger("caf.engine")


# -- starting ------------------------------------------------------------------------------------
def start_batch(deps: TaskPorts, *, name: str, trigger: str, parameters: dict[str, Any] | None = None,
                message_id: str | None = None, tenant: str = "default") -> int:
    """Start a batch for the tenant's task or DAG called `name` (a task wins over a DAG of the same name).

    A trigger message delivered twice starts one batch: its message id is remembered.
    """
    from database.tenancy import validate_tenant

    validate_tenant(tenant)
    now = deps.clock()
    with unit_of_work(deps.sessions) as session:
        if message_id:
            session.execute(_advisory_lock(f"trigger:{message_id}"))
            existing = batch_db.batch_for_message(session=session, message_id=message_id)
            if existing is not None:
                log.info("trigger message %s already started batch %s", message_id, existing)
                return existing
        task = task_db.find_task(session=session, name=name, tenant=tenant)
        if task is not None and task.enabled:
            roots, label = [task.id], f"task:{name}"
        elif task_db.dag_exists(session=session, dag=name, tenant=tenant):
            roots, label = task_db.dag_roots(session=session, dag=name, tenant=tenant), f"dag:{name}"
        else:
            raise PermanentError(f"no enabled task or DAG named {name!r}"
                                 + ("" if tenant == "default" else f" for tenant {tenant}"))
        summary: dict[str, Any] = {"parameters": parameters or {}}
        if message_id:
            summary["message_id"] = message_id
        batch_id = batch_db.create_batch(session=session, trigger=trigger, root=label, summary=summary,
                                         started_at=now, tenant=tenant)
        ids = _plan(session, batch_id, roots, now)
    publish(deps, ids)
    log.info("started batch %s for %s (%s)", batch_id, label, trigger)
    return batch_id


def start_file_batch(deps: TaskPorts, *, batch_id: int, table: str) -> list[int]:
    """Start, in the batch a file load created, the tasks of the batch's tenant whose `on_file` lists `table`.

    `table` is `dataset.table` as the tenant registered it. Another tenant's listeners never start.
    Idempotent: a batch that already has tasks (or is closed) is left alone. With no listener
    the batch is closed SUCCESS with a summary saying so. Returns the root task ids.
    """
    now = deps.clock()
    with unit_of_work(deps.sessions) as session:
        batch = batch_db.get_batch(session=session, batch_id=batch_id, lock=True)
        if batch is None:
            raise PermanentError(f"file_loaded names batch {batch_id}, which does not exist")
        if batch.status != "PROCESSING" or batch.roots or "tasks" in batch.summary:
            log.info("batch %s already started (%s); file_loaded ignored", batch_id, batch.status)
            return []
        roots = task_db.file_listeners(session=session, table=table, tenant=batch.tenant_id)
        if not roots:
            batch_db.close_batch(session=session, batch_id=batch_id, status="SUCCESS", now=now,
                           summary={"tasks": 0, "table": table, "note": f"no task listens to {table}"})
            return []
        batch_db.set_batch(session=session, batch_id=batch_id, table=table)
        ids = _plan(session, batch_id, roots, now)
    publish(deps, ids)
    return roots


def _plan(session: Session, batch_id: int, roots: list[int], now: datetime) -> list[int]:
    scope = task_db.scope(session=session, roots=roots)
    batch_db.set_batch(session=session, batch_id=batch_id, roots=roots, tasks=len(scope))
    run_db.plan_runs(session=session, batch_id=batch_id, task_ids=scope, now=now)
    return [enqueue_run(session, batch_id, t, 1) for t in run_db.release_ready(session=session, batch_id=batch_id)]


def enqueue_run(session: Session, batch_id: int, task_id: int, attempt: int, *, route: str = "task",
                not_before: datetime | None = None, check: int | None = None) -> int:
    """Write the message that runs (or checks) a task run; published after commit."""
    payload: dict[str, Any] = {"batch_id": batch_id, "task_id": task_id, "attempt": attempt}
    if check is not None:
        payload["check"] = check
    return outbox.enqueue(session=session, event_type=route, payload=payload, not_before=not_before)


def publish(deps: TaskPorts, ids: list[int]) -> None:
    if ids:
        outbox.publish_pending(session_factory=deps.sessions, publisher=deps.publisher, ids=ids)


# -- recording -------------------------------------------------------------------------------
def succeed(deps: TaskPorts, task: TaskRow, run: RunRow, output: dict[str, Any],
            upstream: list[dict[str, Any]] | None = None) -> bool:
    """Record SUCCESS (with the run key of its inputs) and publish the children now ready.

    The hot path of a DAG: one transaction in one round trip (`run_db.succeed_run_direct`), then one
    to publish the children's messages.
    """
    from engine import freshness

    now = deps.clock()
    computed = freshness.static_inputs(task=task, output=output, upstream=upstream)
    if computed is None:  # files or parents' runs to read: they do not change under the batch lock
        with unit_of_work(deps.sessions) as session:
            computed = freshness.run_inputs(session=session, task=task, batch_id=run.batch_id, output=output,
                                            upstream=upstream)
    inputs, run_key = computed
    with direct(deps.sessions) as conn:
        done = run_db.succeed_run_direct(conn, run=run, now=now, output={**output, "inputs": inputs}, run_key=run_key)
        if not done.finished:
            log.warning("task %s finished but its run was already ended (timeout?); result dropped", task.name)
            return False
        outbox.publish_ids(connection=conn, publisher=deps.publisher, ids=done.outbox_ids)
    log.info("task %s SUCCESS", task.name, extra={"status": "SUCCESS", "metric": "task_run", "reason": None})
    if done.closed is not None:
        log.info("batch %s ended %s: %s", run.batch_id, done.closed["status"], done.closed["counts"],
                 extra={"status": done.closed["status"], "metric": "batch"})
        _alert("batch_done", deps, run.batch_id)
    return True


def end(deps: TaskPorts, task: TaskRow, run: RunRow, *, status: str, error: str,
        output: dict[str, Any] | None = None) -> bool:
    """Record ERROR (or SKIPPED, for a gate that waits) and skip every descendant, naming this task."""
    now = deps.clock()
    reason = (f"upstream task '{task.name}' failed" if status == "ERROR"
              else f"upstream task '{task.name}' was skipped: {error}")
    with unit_of_work(deps.sessions) as session:
        if not batch_db.lock_batch(session=session, batch_id=run.batch_id):
            return False
        if not run_db.finish_run(session=session, run_id=run.id, attempt=run.attempt, status=status, now=now,
                             output=output, error=error[:4000]):
            return False
        skipped = run_db.skip_descendants(session=session, batch_id=run.batch_id, task_id=task.id, reason=reason,
                                      now=now)
        closed = _close_if_done(session, run.batch_id, now)
    log.warning("task %s %s: %s%s", task.name, status, error,
                f" ({len(skipped)} descendant(s) skipped)" if skipped else "",
                extra={"status": status, "metric": "task_run", "reason": _task_reason(task, error, output)})
    if status == "ERROR":
        _alert("task_error", deps, run.id)
    if closed:
        _alert("batch_done", deps, run.batch_id)
    return True


def _task_reason(task: TaskRow, error: str, output: dict[str, Any] | None) -> str | None:
    return str(task_reason(task.kind, error, output))


def _alert(kind: str, deps: TaskPorts, ident: int) -> None:
    """Alerts are best effort: a failing webhook never breaks the engine."""
    try:
        deps.alert(kind, ident)
    except Exception:
        log.warning("alert %s failed for %s", kind, ident, exc_info=True)


def retry(deps: TaskPorts, task: TaskRow, run: RunRow, *, error: str, not_before: datetime) -> bool:
    """Queue attempt n+1, due at `not_before` (a message the bus or Pub/Sub holds until then)."""
    with unit_of_work(deps.sessions) as session:
        if not run_db.schedule_retry(session=session, run_id=run.id, attempt=run.attempt, not_before=not_before,
                                 error=error[:4000]):
            return False
        tries.record_retried(session=session, run_id=run.id, attempt=run.attempt, error=error[:4000],
                             started_at=run.started_at if run.attempt == 1 else None,  # later: not recorded
                             remote_id=run.remote_id, now=deps.clock())
        ids = [enqueue_run(session, run.batch_id, task.id, run.attempt + 1, not_before=not_before)]
    publish(deps, ids)
    log.info("task %s attempt %s failed (%s); attempt %s due at %s", task.name, run.attempt, error,
             run.attempt + 1, not_before.isoformat())
    return True


def pending(deps: TaskPorts, task: TaskRow, run: RunRow, *, seq: int, output: dict[str, Any], check_at: datetime,
            route: str) -> bool:
    """Record a remote run's progress and publish the next check (only one check chain per run)."""
    with unit_of_work(deps.sessions) as session:
        if not run_db.advance_check(session=session, run_id=run.id, attempt=run.attempt, seq=seq, output=output):
            return False
        ids = [enqueue_run(session, run.batch_id, task.id, run.attempt, route=route, not_before=check_at,
                           check=seq + 1)]
    publish(deps, ids)
    return True


def _close_if_done(session: Session, batch_id: int, now: datetime) -> bool:
    """Close the batch when nothing is pending; returns True when it closed it."""
    if batch_db.has_pending(session=session, batch_id=batch_id):
        return False
    runs = batch_db.batch_runs(session=session, batch_id=batch_id)
    counts = {s: sum(1 for r in runs if r["status"] == s) for s in ("SUCCESS", "ERROR", "SKIPPED")}
    failed = [{"task": r["name"], "error": (r["error"] or "")[:500]} for r in runs if r["status"] == "ERROR"]
    batch = batch_db.get_batch(session=session, batch_id=batch_id)
    duration = (now - batch.started_at).total_seconds() if batch else None
    status = "ERROR" if failed else "SUCCESS"
    batch_db.close_batch(session=session, batch_id=batch_id, status=status, now=now,
                   summary={"counts": counts, "failed": failed, "duration_seconds": duration})
    log.info("batch %s ended %s: %s", batch_id, status, counts, extra={"status": status, "metric": "batch"})
    return True


# -- restart, timeouts -----------------------------------------------------------------------
def restart_batch(deps: TaskPorts, batch_id: int) -> list[int]:
    """Re-run the failed and skipped tasks of a batch under the same batch id; returns their ids."""
    sweep_expired(deps, batch_id=batch_id)
    with unit_of_work(deps.sessions) as session:
        batch = batch_db.get_batch(session=session, batch_id=batch_id, lock=True)
        if batch is None:
            raise PermanentError(f"batch {batch_id} does not exist")
        tries.record_restarted(session=session, batch_id=batch_id)  # what failed stays visible
        reset = run_db.reset_unfinished(session=session, batch_id=batch_id)
        if not reset:
            return []
        batch_db.reopen_batch(session=session, batch_id=batch_id, restarts=int(batch.summary.get("restarts") or 0) + 1,
                        failed=[], counts={})
        ready = run_db.release_ready(session=session, batch_id=batch_id)
        ids = [enqueue_run(session, batch_id, t, 1) for t in ready]
    publish(deps, ids)
    log.info("batch %s restarted: %s task(s) to run again", batch_id, len(reset))
    return reset


def expire(deps: TaskPorts, task: TaskRow, run: RunRow) -> bool:
    """A run past its lease (start + timeout): ERROR, lease released, descendants skipped."""
    return end(deps, task, run, status="ERROR", error=f"exceeded its timeout of {task.timeout_seconds}s")


def sweep_expired(deps: TaskPorts, *, batch_id: int | None = None) -> int:
    """End every run whose lease has passed (crashed instance, lost check message); returns how many."""
    with unit_of_work(deps.sessions) as session:
        runs = run_db.expired_runs(session=session, now=deps.clock(), batch_id=batch_id)
        tasks = {r.task_id: task_db.get_task(session=session, task_id=r.task_id) for r in runs}
    ended = 0
    for run in runs:
        task = tasks[run.task_id]
        if task is not None and expire(deps, task, run):
            ended += 1
    return ended


def wait_local(deps: TaskPorts, batch_id: int, *, timeout: float | None = None) -> BatchRow:
    """Drive the local bus until the batch ends (CLI); sleeps here, never inside a handler."""
    bus: Any = deps.publisher
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        bus.drain()
        with unit_of_work(deps.sessions) as session:
            batch = batch_db.get_batch(session=session, batch_id=batch_id)
        if batch is None:
            raise PermanentError(f"batch {batch_id} does not exist")
        if batch.status != "PROCESSING":
            return batch
        outbox.publish_pending(session_factory=deps.sessions, publisher=bus)
        sweep_expired(deps, batch_id=batch_id)
        if deadline is not None and time.monotonic() > deadline:
            return batch
        due = bus.next_due()
        wait = 0.05 if due is None else (due - deps.clock()).total_seconds()
        time.sleep(min(max(wait, 0.0), 1.0))


def _advisory_lock(key: str) -> Any:
    from sqlalchemy import func, select

    return select(func.pg_advisory_xact_lock(func.hashtext(key)))
