"""Read-only summaries of what CAF remembers (operator status, `caf status`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from database.models import File, TaskBatch, TaskLog


def _counts(session: Session, column: Any) -> dict[str, int]:
    rows = session.execute(select(column, func.count()).group_by(column)).all()
    return {str(status): int(n) for status, n in rows}


def summary(*, session: Session, recent: int = 10) -> dict[str, Any]:
    """Counts by status for files, batches and task runs, plus the most recent file errors."""
    errors = session.execute(
        select(File.id, File.bucket, File.name, File.generation, File.error_message, File.updated_at)
        .where(File.status == "ERROR").order_by(File.updated_at.desc()).limit(recent)
    ).all()
    return {
        "files": _counts(session, File.status),
        "batches": _counts(session, TaskBatch.status),
        "task_runs": _counts(session, TaskLog.status),
        "recent_file_errors": [
            {"id": r.id, "object": f"gs://{r.bucket}/{r.name}#{r.generation}", "error": r.error_message,
             "at": r.updated_at.isoformat() if r.updated_at else None}
            for r in errors
        ],
    }
