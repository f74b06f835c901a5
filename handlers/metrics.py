"""Operational metrics: a summary of the last hours, errors counted by reason.

The reason labels (`values.reasons`) are the ones log lines carry for log-based metrics
(docs/operations.md); `summary` computes the same figures from the metadata database for
`caf status --metrics` and the operator page.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from values.reasons import error_reason, task_reason


def _tenant_clause(alias: str, tenant: str | None) -> str:
    return f" AND {alias}.tenant_id = :tenant" if tenant else ""


def summary(*, session: Session, since: datetime, tenant: str | None = None) -> dict[str, Any]:
    """Files, task runs and batches since `since`: counts, rows, bytes, durations, errors by reason."""
    params = {"since": since, "tenant": tenant}
    files = session.execute(text(
        "SELECT f.status, count(*), COALESCE(sum(f.rows_read), 0), COALESCE(sum(f.rows_loaded), 0),"
        " COALESCE(sum(f.rows_rejected), 0), COALESCE(sum(f.size), 0),"
        " avg(EXTRACT(EPOCH FROM f.finished_at - f.claimed_at)) * 1000,"
        " percentile_cont(0.95) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM f.finished_at - f.claimed_at)) * 1000,"
        " max(EXTRACT(EPOCH FROM f.finished_at - f.claimed_at)) * 1000"
        " FROM files f WHERE f.created_at >= :since" + _tenant_clause("f", tenant) +
        " GROUP BY f.status ORDER BY f.status"), params).all()
    file_errors = session.execute(text(
        "SELECT f.error_message FROM files f WHERE f.status = 'ERROR' AND f.created_at >= :since"
        + _tenant_clause("f", tenant)), params).scalars().all()
    runs = session.execute(text(
        "SELECT t.kind, l.status, count(*),"
        " avg(EXTRACT(EPOCH FROM l.finished_at - l.started_at)) * 1000,"
        " percentile_cont(0.95) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM l.finished_at - l.started_at)) * 1000"
        " FROM task_log l JOIN tasks t ON t.id = l.task_id JOIN task_batch b ON b.id = l.batch_id"
        " WHERE l.started_at >= :since" + _tenant_clause("b", tenant) +
        " GROUP BY t.kind, l.status ORDER BY t.kind, l.status"), params).all()
    run_errors = session.execute(text(
        "SELECT t.kind, l.error, l.output FROM task_log l JOIN tasks t ON t.id = l.task_id"
        " JOIN task_batch b ON b.id = l.batch_id WHERE l.status = 'ERROR' AND l.started_at >= :since"
        + _tenant_clause("b", tenant)), params).all()
    batches = session.execute(text(
        "SELECT b.status, count(*), avg(EXTRACT(EPOCH FROM b.finished_at - b.started_at)) * 1000"
        " FROM task_batch b WHERE b.started_at >= :since" + _tenant_clause("b", tenant) +
        " GROUP BY b.status ORDER BY b.status"), params).all()

    def ms(value: Any) -> int | None:
        return None if value is None else round(float(value))

    file_rows: dict[str, dict[str, Any]] = {r[0]: {"count": int(r[1]), "rows_read": int(r[2]), "rows_loaded": int(r[3]),
                        "rows_rejected": int(r[4]), "bytes": int(r[5]), "avg_ms": ms(r[6]), "p95_ms": ms(r[7]),
                        "max_ms": ms(r[8])} for r in files}
    totals = {k: sum(int(v[k]) for v in file_rows.values()) for k in
              ("count", "rows_read", "rows_loaded", "rows_rejected", "bytes")}
    file_reasons: dict[str, int] = {}
    for message in file_errors:
        reason = error_reason(message)
        file_reasons[reason] = file_reasons.get(reason, 0) + 1
    run_reasons: dict[str, int] = {}
    for kind, error, output in run_errors:
        reason = task_reason(kind, error, output)
        run_reasons[reason] = run_reasons.get(reason, 0) + 1
    return {
        "since": since.isoformat(),
        "files": {"by_status": file_rows, "totals": totals, "errors_by_reason": dict(sorted(file_reasons.items()))},
        "task_runs": {"by_kind": [{"kind": r[0], "status": r[1], "count": int(r[2]), "avg_ms": ms(r[3]),
                                   "p95_ms": ms(r[4])} for r in runs],
                      "errors_by_reason": dict(sorted(run_reasons.items()))},
        "batches": {r[0]: {"count": int(r[1]), "avg_ms": ms(r[2])} for r in batches},
    }
