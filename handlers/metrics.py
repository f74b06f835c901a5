"""Operational metrics: error reasons (stable labels for log-based metrics) and a summary of the last hours.

`error_reason` and `task_reason` turn an error message into one of a few stable labels; log lines
carry it as the `reason` field, so a Cloud Logging log-based metric can count errors by reason
(docs/operations.md). `summary` computes the same figures from the metadata database for
`caf status --metrics` and the operator page.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

FILE_REASONS = ("no_table", "mapping_mismatch", "bad_rows", "convert", "load", "internal", "other")
TASK_REASONS = ("transform", "dataform", "refresh", "limit", "timeout", "python", "gate", "other")

# First match wins; patterns follow the messages raised by pipeline/ and adapters/warehouse/.
_FILE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (reason, re.compile(pattern, re.IGNORECASE)) for reason, pattern in (
        ("no_table", r"^no table registered"),
        ("internal", r"^internal error"),
        ("bad_rows", r"row\(s\) rejected"),
        ("mapping_mismatch", r"columns do not match|appear from row|is not in warehouse table|"
                             r"is REPEATED but|cannot be loaded as"),
        ("load", r"warehouse|load job|BigQuery|job id|write_mode|write mode|merged but has no keys"),
        ("convert", r"cannot parse|cannot read|malformed|not valid|corrupt|gzip|file is empty|no header row|"
                    r"extension|unknown format|no sheet|worksheet|max_field_bytes|decompressed size|"
                    r"fewer than .* rows to skip|cannot number rows|unexpected data"),
    )
)
_TASK_KIND_REASONS = {"sql": "transform", "dataform": "dataform", "powerbi": "refresh", "python": "python",
                      "wait_for_files": "gate"}


def error_reason(message: str | None) -> str:
    """A stable label for a file error message (see FILE_REASONS)."""
    if not message:
        return "other"
    for reason, pattern in _FILE_PATTERNS:
        if pattern.search(message):
            return reason
    return "other"


def task_reason(kind: str | None, error: str | None, output: dict[str, Any] | None = None) -> str:
    """A stable label for a failed task run (see TASK_REASONS)."""
    alert = ((output or {}).get("alert") or {}).get("kind")
    if alert == "limit_reached" or (error and "daily refresh limit" in error):
        return "limit"
    if error and "exceeded its timeout" in error:
        return "timeout"
    return _TASK_KIND_REASONS.get(kind or "", "other")


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
