"""Earlier tries of task runs (`task_try`): what a retry or a restart would otherwise overwrite.

`task_log` holds one row per batch and task, the latest try. Before a transient failure moves a
run to its next attempt, and before a restart plans failed and skipped runs again, the try that
ended is copied here, so the page, `caf batch show` and `/runs?status=ERROR` still show it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session


def record_retried(*, session: Session, run_id: int, attempt: int, started_at: datetime | None, error: str,
                   remote_id: str | None, now: datetime) -> None:
    """Attempt `attempt` of run `run_id` failed transiently and is being retried: keep it as RETRIED."""
    session.execute(text(
        "INSERT INTO task_try (task_log_id, batch_id, task_id, tenant_id, restart, attempt, status, started_at,"
        " finished_at, error, remote_id)"
        " SELECT l.id, l.batch_id, l.task_id, b.tenant_id, COALESCE((b.summary->>'restarts')::int, 0), :a,"
        " 'RETRIED', :started, :now, :e, :r FROM task_log l JOIN task_batch b ON b.id = l.batch_id WHERE l.id = :id"),
        {"id": run_id, "a": attempt, "started": started_at, "now": now, "e": error, "r": remote_id})


def record_restarted(*, session: Session, batch_id: int) -> int:
    """The ERROR and SKIPPED runs of a batch about to be restarted, kept as they ended; returns how many."""
    result = session.execute(text(
        "INSERT INTO task_try (task_log_id, batch_id, task_id, tenant_id, restart, attempt, status, started_at,"
        " finished_at, error, output, remote_id)"
        " SELECT l.id, l.batch_id, l.task_id, b.tenant_id, COALESCE((b.summary->>'restarts')::int, 0), l.attempt,"
        " l.status, CASE WHEN l.attempt > 0 THEN l.started_at END, l.finished_at, l.error,"
        " l.output - 'previous', l.remote_id"
        " FROM task_log l JOIN task_batch b ON b.id = l.batch_id"
        " WHERE l.batch_id = :b AND l.status IN ('ERROR', 'SKIPPED')"), {"b": batch_id})
    return int(getattr(result, "rowcount", 0) or 0)


_TRY_COLUMNS = (
    "y.id, y.task_log_id, y.batch_id, y.task_id, t.name, t.kind, y.restart, y.attempt, y.status, y.started_at,"
    " y.finished_at, y.error, y.output, y.remote_id"
)


def batch_tries(*, session: Session, batch_id: int) -> list[dict[str, Any]]:
    """Every earlier try in a batch, oldest first."""
    rows = session.execute(text(
        f"SELECT {_TRY_COLUMNS} FROM task_try y JOIN tasks t ON t.id = y.task_id WHERE y.batch_id = :b"
        " ORDER BY y.id"), {"b": batch_id}).mappings()
    return [dict(r) for r in rows]
