"""Tenant-scoped reads for the operator page: every query filters on the caller's tenant.

The pages call them inside `tenant_session` (role caf_app): row-level security returns nothing
of another tenant even where a filter were missing. `task_log`, `task_dependencies` and `schemas`
carry their parent's tenant (migration 0005), so caf_app can read them.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

_FILE_COLUMNS = (
    "f.id, f.bucket, f.name, f.generation, f.status, f.size, f.rows_read, f.rows_loaded, f.rows_rejected,"
    " f.error_message, f.detail, f.quarantine_uri, f.staged_uri, f.archived_uri, f.batch_id, f.attempts,"
    " f.created_at, f.finished_at, f.claimed_at, f.tenant_id, d.name || '.' || tb.name AS tbl,"
    " nv.newer_id, nv.newer_status, f.last_error, f.released_at"
)
# The newest later version of the same object: an ERROR followed by one was retried (page, re-upload).
_FILE_FROM = (
    " FROM files f LEFT JOIN tables tb ON tb.id = f.table_id LEFT JOIN domain d ON d.id = tb.domain_id"
    " LEFT JOIN LATERAL (SELECT g.id AS newer_id, g.status AS newer_status FROM files g"
    "  WHERE g.bucket = f.bucket AND g.name = f.name AND g.generation > f.generation"
    "  AND g.tenant_id = f.tenant_id ORDER BY g.generation DESC LIMIT 1) nv ON true"
)


def scope(*, session: Session, tenant: str) -> None:
    """Bind the transaction to `tenant` for row-level security policies (harmless without them)."""
    session.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": tenant})


def counts(*, session: Session, tenant: str) -> dict[str, dict[str, int]]:
    """Files, batches and task runs by status."""
    queries = {
        "files": "SELECT status, count(*) FROM files WHERE tenant_id = :t GROUP BY status",
        "batches": "SELECT status, count(*) FROM task_batch WHERE tenant_id = :t GROUP BY status",
        "task_runs": "SELECT l.status, count(*) FROM task_log l JOIN task_batch b ON b.id = l.batch_id"
                     " WHERE b.tenant_id = :t GROUP BY l.status",
    }
    return {what: {str(s): int(n) for s, n in session.execute(text(sql), {"t": tenant}).all()}
            for what, sql in queries.items()}


def files(*, session: Session, tenant: str, status: str | None = None, table: str | None = None,
          day: date | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Files newest first, filtered by status, `dataset.table` and the UTC day they arrived."""
    where = ["f.tenant_id = :t"]
    params: dict[str, Any] = {"t": tenant, "limit": limit}
    if status:
        where.append("f.status = :status")
        params["status"] = status
    if table:
        where.append("d.name || '.' || tb.name = :tbl")
        params["tbl"] = table
    if day:
        where.append("(f.created_at AT TIME ZONE 'UTC')::date = :day")
        params["day"] = day
    sql = f"SELECT {_FILE_COLUMNS}{_FILE_FROM} WHERE {' AND '.join(where)} ORDER BY f.id DESC LIMIT :limit"
    return [dict(r) for r in session.execute(text(sql), params).mappings()]


def file(*, session: Session, tenant: str, file_id: int) -> dict[str, Any] | None:
    row = session.execute(text(f"SELECT {_FILE_COLUMNS}{_FILE_FROM} WHERE f.id = :id AND f.tenant_id = :t"),
                          {"id": file_id, "t": tenant}).mappings().first()
    return dict(row) if row else None


def table_names(*, session: Session, tenant: str) -> list[str]:
    """Registered `dataset.table` names of the tenant."""
    return list(session.execute(text(
        "SELECT d.name || '.' || tb.name FROM tables tb JOIN domain d ON d.id = tb.domain_id"
        " WHERE tb.tenant_id = :t ORDER BY 1"), {"t": tenant}).scalars())


def produced_tables(*, session: Session, tenant: str) -> list[str]:
    """`dataset.table` names written by the tenant's enabled tasks (`produces`)."""
    rows = session.execute(text(
        "SELECT DISTINCT jsonb_array_elements_text(config->'produces') FROM tasks"
        " WHERE tenant_id = :t AND enabled AND jsonb_typeof(config->'produces') = 'array'"), {"t": tenant})
    return sorted(r[0] for r in rows)


def batches(*, session: Session, tenant: str, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Batches newest first, with their task runs counted by status and their files counted."""
    where = "b.tenant_id = :t" + (" AND b.status = :status" if status else "")
    rows = session.execute(text(
        "SELECT b.id, b.status, b.trigger, b.root, b.started_at, b.finished_at, b.summary,"
        " (SELECT jsonb_object_agg(s, n) FROM (SELECT l.status AS s, count(*) AS n FROM task_log l"
        "   WHERE l.batch_id = b.id GROUP BY l.status) c) AS runs,"
        " (SELECT count(*) FROM files f WHERE f.batch_id = b.id) AS files"
        f" FROM task_batch b WHERE {where} ORDER BY b.id DESC LIMIT :limit"),
        {"t": tenant, "status": status, "limit": limit}).mappings()
    return [dict(r) | {"runs": r["runs"] or {}} for r in rows]


def batch(*, session: Session, tenant: str, batch_id: int) -> dict[str, Any] | None:
    row = session.execute(text(
        "SELECT id, status, trigger, root, roots, summary, started_at, finished_at FROM task_batch"
        " WHERE id = :id AND tenant_id = :t"), {"id": batch_id, "t": tenant}).mappings().first()
    return dict(row) if row else None


def batch_runs(*, session: Session, batch_id: int) -> list[dict[str, Any]]:
    """Task runs of a batch (call after `batch` checked the tenant)."""
    rows = session.execute(text(
        "SELECT l.id, l.task_id, t.name, t.kind, l.status, l.attempt, l.started_at, l.finished_at, l.error,"
        " l.output, l.remote_id, l.lease_until FROM task_log l JOIN tasks t ON t.id = l.task_id"
        " WHERE l.batch_id = :b ORDER BY l.started_at, t.name"), {"b": batch_id}).mappings()
    return [dict(r) for r in rows]


def edges(*, session: Session, task_ids: list[int]) -> list[tuple[int, int]]:
    """Parent → child edges among `task_ids`."""
    if not task_ids:
        return []
    rows = session.execute(text(
        "SELECT parent_id, child_id FROM task_dependencies WHERE parent_id = ANY(CAST(:ids AS integer[]))"
        " AND child_id = ANY(CAST(:ids AS integer[])) ORDER BY parent_id, child_id"), {"ids": task_ids})
    return [(int(p), int(c)) for p, c in rows]


def batch_files(*, session: Session, batch_id: int) -> list[dict[str, Any]]:
    rows = session.execute(text(f"SELECT {_FILE_COLUMNS}{_FILE_FROM} WHERE f.batch_id = :b ORDER BY f.id"),
                           {"b": batch_id}).mappings()
    return [dict(r) for r in rows]


def runs(*, session: Session, tenant: str, status: str | None = None, kind: str | None = None,
         limit: int = 200) -> list[dict[str, Any]]:
    """Task runs newest first with their errors and remote ids (Dataform invocation, Power BI refresh),
    and their earlier tries (`try_of` set: retried or restarted since), so a failure stays listed."""
    where = ["b.tenant_id = :t"]
    if status:
        where.append("x.status = :status")
    if kind:
        where.append("t.kind = :kind")
    rows = session.execute(text(
        "SELECT x.*, t.name, t.kind FROM ("
        " SELECT l.id, l.batch_id, l.task_id, l.status, l.attempt, l.started_at, l.finished_at, l.error,"
        "  l.remote_id, l.output, l.lease_until, NULL::bigint AS try_of, NULL::int AS restart, l.updated_at AS sort_at"
        "  FROM task_log l"
        " UNION ALL SELECT y.task_log_id, y.batch_id, y.task_id, y.status, y.attempt, y.started_at, y.finished_at,"
        "  y.error, y.remote_id, y.output, NULL, y.task_log_id, y.restart, y.created_at FROM task_try y) x"
        " JOIN tasks t ON t.id = x.task_id"
        f" JOIN task_batch b ON b.id = x.batch_id WHERE {' AND '.join(where)}"
        " ORDER BY x.id DESC, x.try_of IS NOT NULL, x.sort_at DESC LIMIT :limit"),
        {"t": tenant, "status": status, "kind": kind, "limit": limit}).mappings()
    return [dict(r) for r in rows]


def batch_tries(*, session: Session, batch_id: int) -> list[dict[str, Any]]:
    """Earlier tries of a batch's runs (call after `batch` checked the tenant)."""
    from database.tries import batch_tries as tries

    return tries(session=session, batch_id=batch_id)
