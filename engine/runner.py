"""One task message: claim the run, execute its kind within the timeout, record the outcome.

A run is claimed in `task_log` (batch, task, attempt) before anything executes, so a
redelivered message never runs a task twice. The kind executes in a worker thread so that a
task exceeding its timeout is marked ERROR and its lease released while the function returns.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import logs
from database import batches as batch_db
from database import outbox
from database import runs as run_db
from database import tasks as task_db
from database.direct import direct
from database.session import unit_of_work
from engine import kinds, retry, scheduler
from engine.kinds.base import Done, Outcome, Pending, RemoteFailure, Skip, TaskContext
from errors import PermanentError, TransientError

if TYPE_CHECKING:
    from collections.abc import Callable

    from database.runs import RunRow
    from database.tasks import TaskRow
    from engine.ports import TaskPorts

log = logging.getLogger("caf.engine")


class _TimedOut(Exception):
    pass


def run_message(deps: TaskPorts, *, batch_id: int, task_id: int, attempt: int, check: int | None = None) -> None:
    """Run (or, with `check`, check) attempt `attempt` of task `task_id` in batch `batch_id`."""
    now = deps.clock()
    claimed = None
    if check is None:
        with direct(deps.sessions) as conn:
            claimed = run_db.claim_run_direct(conn, batch_id=batch_id, task_id=task_id, attempt=attempt, now=now)
    if claimed is None:
        with unit_of_work(deps.sessions) as session:
            task = task_db.get_task(session=session, task_id=task_id)
            run = run_db.get_run(session=session, batch_id=batch_id, task_id=task_id)
            batch = batch_db.get_batch(session=session, batch_id=batch_id)
    if claimed is not None:
        run, task, batch = claimed.run, claimed.task, claimed.batch
    elif task is None or run is None or batch is None:
        log.info("task %s has no run in batch %s; message dropped", task_id, batch_id)
        return
    with logs.bind(batch=batch_id, task=task.name, attempt=attempt):
        if claimed is None:
            check = _unclaimed(deps, task, run, attempt, check)
            if check is None:
                return
        upstream = claimed.upstream if claimed is not None else None
        _execute_and_record(TaskContext(deps=deps, task=task, batch=batch, run=run, upstream=upstream), check)


def _unclaimed(deps: TaskPorts, task: TaskRow, run: RunRow, attempt: int, check: int | None) -> int | None:
    """Why a message did not claim its run; returns the check number to run, or None to drop it."""
    now = deps.clock()
    if run.status != "PROCESSING":
        # A redelivery after the end: make sure what that run published went out, then ack.
        outbox.publish_pending(session_factory=deps.sessions, publisher=deps.publisher)
        return None
    if run.attempt != attempt:
        return None
    if run.lease_until is None:
        retry.ensure_due(run.not_before, now)  # early: TransientError, Pub/Sub redelivers later
        if run.not_before is not None and run.not_before > now:
            # Inside the message's clock-skew allowance but not claimable yet: acknowledging it
            # would lose the only message of this attempt, so have it redelivered.
            raise TransientError(f"task {task.name} attempt {attempt} is not due yet")
        return None
    if run.lease_until <= now:
        scheduler.expire(deps, task, run)
        return None
    seq = int(run.output.get("check_seq") or 0)
    if check is not None:
        return check if check == seq else None  # a stale or duplicated check message
    if run.remote_id and not seq:
        # The start recorded its remote id, then died before scheduling checks: resume, don't start again.
        log.info("redelivered start of %s found remote run %s; checking it", task.name, run.remote_id)
        return 0
    return None  # running on another delivery


def _execute_and_record(ctx: TaskContext, check: int | None) -> None:
    deps, task, run = ctx.deps, ctx.task, ctx.run
    kind = kinds.get(task.kind)
    step = kind.check if (check is not None or run.remote_id) else kind.start
    lease = run.lease_until or deps.clock() + timedelta(seconds=task.timeout_seconds)
    remaining = (lease - deps.clock()).total_seconds()
    try:
        outcome = _call_with_timeout(step, ctx, remaining)
    except _TimedOut:
        scheduler.expire(deps, task, ctx.run)
        return
    except PermanentError as exc:
        output = {"alert": {"kind": exc.alert, "detail": exc.detail}} if isinstance(exc, RemoteFailure) else None
        scheduler.end(deps, task, ctx.run, status="ERROR", error=str(exc), output=output)
        return
    except Exception as exc:  # noqa: BLE001 - TransientError and anything unexpected: worth a retry
        _transient(ctx, exc, check)
        return
    run = ctx.run  # the kind may have recorded a remote id
    if isinstance(outcome, Done):
        scheduler.succeed(deps, task, run, outcome.output, upstream=ctx.upstream)
    elif isinstance(outcome, Skip):
        scheduler.end(deps, task, run, status="SKIPPED", error=outcome.reason, output=outcome.output)
    elif isinstance(outcome, Pending):
        route = kinds.CHECK_ROUTES.get(task.kind, "task")
        seq = check if check is not None else int(run.output.get("check_seq") or 0)
        scheduler.pending(deps, task, run, seq=seq, output=outcome.output, check_at=outcome.check_at, route=route)
    else:
        scheduler.end(deps, task, run, status="ERROR", error=f"kind {task.kind} returned {outcome!r}")


def _transient(ctx: TaskContext, exc: Exception, check: int | None) -> None:
    deps, task, run = ctx.deps, ctx.task, ctx.run
    settings = deps.settings.tasks
    error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, TransientError) else str(exc)
    retry_after = exc.retry_after if isinstance(exc, TransientError) else None
    if not isinstance(exc, TransientError):
        log.warning("task %s raised %s", task.name, type(exc).__name__, exc_info=exc)
    if check is not None or run.remote_id:
        # The remote run goes on: only the status read failed. Check again later; the timeout bounds this.
        seq = check if check is not None else int(run.output.get("check_seq") or 0)
        errors = int(run.output.get("check_errors") or 0) + 1
        when = retry.retry_at(deps.clock(), errors, base=settings.backoff_base_seconds,
                              cap=settings.backoff_max_seconds, retry_after=retry_after)
        scheduler.pending(deps, task, run, seq=seq, output={"check_errors": errors, "last_check_error": error},
                          check_at=when, route=kinds.CHECK_ROUTES.get(task.kind, "task"))
    elif run.attempt < task.max_attempts:
        when = retry.retry_at(deps.clock(), run.attempt, base=settings.backoff_base_seconds,
                              cap=settings.backoff_max_seconds, retry_after=retry_after)
        scheduler.retry(deps, task, run, error=error, not_before=when)
    else:
        scheduler.end(deps, task, run, status="ERROR",
                      error=f"failed after {run.attempt} attempt(s): {error}")


def _call_with_timeout(step: Callable[[TaskContext], Outcome], ctx: TaskContext, seconds: float) -> Outcome:
    """Run `step` on a worker thread; past `seconds` give up on it (the thread is left to finish)."""
    if seconds <= 0:
        raise _TimedOut
    box: dict[str, Any] = {}
    context = contextvars.copy_context()  # keep the bound log labels in the worker

    def target() -> None:
        try:
            box["outcome"] = context.run(step, ctx)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    if not _workers.run(target, seconds):
        raise _TimedOut
    if "error" in box:
        raise box["error"]
    return box["outcome"]


class _Workers:
    """Daemon threads reused across task runs (starting a thread per run costs more than a no-op task).

    Python cannot stop a thread: a run that outlives its timeout keeps its worker busy until it
    returns, and the next run gets another idle worker or a new one.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], None], threading.Event]] = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()

    def run(self, job: Callable[[], None], seconds: float) -> bool:
        """Run `job` on a worker; True if it finished within `seconds`."""
        done = threading.Event()
        with self._lock:
            if self._idle == 0:
                threading.Thread(target=self._loop, name="caf-task", daemon=True).start()
            else:
                self._idle -= 1
        self._jobs.put((job, done))
        return done.wait(seconds)

    def _loop(self) -> None:
        while True:
            job, done = self._jobs.get()
            try:
                job()
            finally:
                with self._lock:
                    self._idle += 1
                done.set()


_workers = _Workers()
