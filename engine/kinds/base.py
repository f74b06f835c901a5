"""The kind interface: what a task kind gets (TaskContext) and what it answers (an Outcome).

A kind is a module with `start(ctx) -> Outcome` and, when its work happens elsewhere (Dataform,
Power BI, a gate), `check(ctx) -> Outcome`. `Pending(check_at)` means "not finished, check again
at T": the engine records the progress and re-publishes a check message due at T, so no
function waits on a remote service. A remote id is recorded with `ctx.record_remote_id` the
moment it exists, before anything can redeliver; a start that finds `ctx.remote_id` set must
check that remote run instead of starting another one.

Kinds raise PermanentError (fail now) or TransientError (retry with backoff); any other
exception counts as transient.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Protocol

from errors import PermanentError

if TYPE_CHECKING:
    from database.batches import BatchRow
    from database.runs import RunRow
    from database.tasks import TaskRow
    from engine.ports import TaskPorts


@dataclass(frozen=True)
class Done:
    """Finished: the output is recorded in task_log (rows affected, invocation name, ...)."""

    output: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Pending:
    """Not finished: record `output`, check again at `check_at`."""

    check_at: datetime
    output: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Skip:
    """Nothing to do in this batch (a gate still waiting): SKIPPED, and so are the descendants."""

    reason: str
    output: dict[str, Any] = field(default_factory=dict)


Outcome = Done | Pending | Skip


class RemoteFailure(PermanentError):
    """The remote run ended badly (or a limit was reached): recorded with an `alert` for operations."""

    def __init__(self, message: str, *, alert: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.alert = alert
        self.detail = detail or {}


@dataclass
class TaskContext:
    """One claimed task run, as a kind (or a `python` task's callable) sees it."""

    deps: TaskPorts
    task: TaskRow
    batch: BatchRow
    run: RunRow
    upstream: list[dict[str, Any]] | None = None
    """The parents' SUCCESS runs read at claim time (None: read when the run is recorded)."""

    @property
    def batch_id(self) -> int:
        return self.batch.id

    @property
    def attempt(self) -> int:
        return self.run.attempt

    @property
    def run_date(self) -> date:
        """The batch's start date (UTC): stable across retries and restarts of the batch."""
        return self.batch.started_at.date()

    @property
    def parameters(self) -> dict[str, Any]:
        """Values given when the batch was started (`caf run --param`, scheduler message)."""
        return dict(self.batch.summary.get("parameters") or {})

    @property
    def remote_id(self) -> str | None:
        return self.run.remote_id

    @property
    def previous_output(self) -> dict[str, Any]:
        return dict(self.run.output)

    @property
    def job_id(self) -> str:
        """Deterministic per task run: a redelivered attempt reattaches to its warehouse job."""
        restarts = int(self.batch.summary.get("restarts") or 0)
        return f"caf_b{self.batch.id}_t{self.task.id}_r{restarts}_a{self.attempt}"

    @property
    def labels(self) -> dict[str, str]:
        return {"caf_batch": str(self.batch.id), "caf_task": label_value(self.task.name)}

    @property
    def log(self) -> logging.Logger:
        return logging.getLogger(f"caf.task.{self.task.name}")

    def now(self) -> datetime:
        return self.deps.clock()

    def record_remote_id(self, remote_id: str) -> None:
        """Commit the remote run's id now, so a redelivered start finds it instead of starting again."""
        from database import runs as run_db
        from database.session import unit_of_work

        with unit_of_work(self.deps.sessions) as session:
            run_db.set_remote_id(session=session, run_id=self.run.id, attempt=self.attempt, remote_id=remote_id)
        self.run = _replace(self.run, remote_id=remote_id)

    def intent(self, key: str) -> dict[str, Any] | None:
        """What an earlier delivery of this run recorded under `key` before calling a remote."""
        value = self.run.output.get(key)
        return dict(value) if isinstance(value, dict) else None

    def record_intent(self, key: str, intent: dict[str, Any], *, session: Any = None) -> None:
        """Commit `intent` before a remote call whose reply may be lost (`session`: inside the caller's
        transaction, e.g. together with taking a quota); a redelivery then finds it with `intent(key)`."""
        from database import remote_calls
        from database.session import unit_of_work

        if session is not None:
            remote_calls.record_intent(session=session, run_id=self.run.id, attempt=self.attempt, key=key,
                                       intent=intent)
        else:
            with unit_of_work(self.deps.sessions) as own:
                remote_calls.record_intent(session=own, run_id=self.run.id, attempt=self.attempt, key=key,
                                           intent=intent)
        self.run = _replace(self.run, output={**self.run.output, key: intent})


def label_value(value: str) -> str:
    """A BigQuery label value: lowercase letters, digits, `_` and `-`, at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "_", value.lower())[:63]


def _replace(run: RunRow, **changes: Any) -> RunRow:
    import dataclasses

    return dataclasses.replace(run, **changes)


class Kind(Protocol):
    def start(self, ctx: TaskContext) -> Outcome: ...

    def check(self, ctx: TaskContext) -> Outcome: ...
