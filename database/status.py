"""Read-only summaries of what CAF remembers (operator status, `caf status`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from database.models import File, TaskBatch, TaskLog


def _counts(session: Session, column: Any, tenant: str | None) -> dict[str, int]:
    query = select(column, func.count()).group_by(column)
    if tenant is not None:
        query = query.where(column.table.c.tenant_id == tenant)
    return {str(status): int(n) for status, n in session.execute(query).all()}


def summary(*, session: Session, recent: int = 10, tenant: str | None = None) -> dict[str, Any]:
    """Counts by status for files, batches and task runs, plus the most recent file errors.

    `tenant`: only that tenant's (call it in the tenant's `tenant_session`); None: every tenant,
    with per-tenant file counts under `tenants` (system callers: `caf status`, admins).
    """
    errors_query = (select(File.id, File.bucket, File.name, File.generation, File.error_message, File.updated_at)
                    .where(File.status == "ERROR").order_by(File.updated_at.desc()).limit(recent))
    if tenant is not None:
        errors_query = errors_query.where(File.tenant_id == tenant)
    errors = session.execute(errors_query).all()
    result: dict[str, Any] = {}
    if tenant is None:
        per_tenant: dict[str, dict[str, int]] = {}
        for owner, status, n in session.execute(select(File.tenant_id, File.status, func.count())
                                                .group_by(File.tenant_id, File.status)):
            per_tenant.setdefault(str(owner), {})[str(status)] = int(n)
        result["tenants"] = per_tenant
    return {
        "files": _counts(session, File.status, tenant),
        "batches": _counts(session, TaskBatch.status, tenant),
        "task_runs": _counts(session, TaskLog.status, tenant),
        "recent_file_errors": [
            {"id": r.id, "object": f"gs://{r.bucket}/{r.name}#{r.generation}", "error": r.error_message,
             "at": r.updated_at.isoformat() if r.updated_at else None}
            for r in errors
        ],
        **result,
    }
