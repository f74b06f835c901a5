"""Keyword-only database functions for task definitions as the engine reads them: tasks and DAG edges.

Batches are in `database.batches`, task runs (`task_log`) in `database.runs`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

from database.base import DEFAULT_TENANT
from database.models import Task

_TASK_COLUMNS = (Task.id, Task.name, Task.kind, Task.dag, Task.max_attempts, Task.timeout_seconds, Task.on_file,
                 Task.config, Task.query_id, Task.repo_id, Task.power_bi_report_id, Task.enabled)


@dataclass(frozen=True)
class TaskRow:
    id: int
    name: str
    kind: str
    dag: str | None
    max_attempts: int
    timeout_seconds: int
    on_file: list[str]
    config: dict[str, Any]
    query_id: int | None
    repo_id: int | None
    power_bi_report_id: int | None
    enabled: bool


def get_task(*, session: Session, task_id: int) -> TaskRow | None:
    row = session.execute(select(*_TASK_COLUMNS).where(Task.id == task_id)).first()
    return TaskRow(*row) if row else None


def find_task(*, session: Session, name: str, tenant: str = DEFAULT_TENANT) -> TaskRow | None:
    row = session.execute(select(*_TASK_COLUMNS).where(Task.name == name, Task.tenant_id == tenant)).first()
    return TaskRow(*row) if row else None


def dag_exists(*, session: Session, dag: str, tenant: str = DEFAULT_TENANT) -> bool:
    return session.execute(select(Task.id).where(Task.dag == dag, Task.enabled, Task.tenant_id == tenant)
                           .limit(1)).first() is not None


def dag_roots(*, session: Session, dag: str, tenant: str = DEFAULT_TENANT) -> list[int]:
    """Enabled tasks of the tenant's `dag` with no enabled parent in the same DAG."""
    rows = session.execute(text(
        "SELECT t.id FROM tasks t WHERE t.dag = :dag AND t.tenant_id = :tenant AND t.enabled AND NOT EXISTS ("
        " SELECT 1 FROM task_dependencies d JOIN tasks p ON p.id = d.parent_id"
        " WHERE d.child_id = t.id AND p.dag = :dag AND p.enabled) ORDER BY t.id"), {"dag": dag, "tenant": tenant})
    return [r[0] for r in rows]


def file_listeners(*, session: Session, table: str, tenant: str) -> list[int]:
    """The tenant's enabled tasks whose `on_file` lists `dataset.table` (as the tenant registered it)."""
    return list(session.scalars(_FILE_LISTENERS, {"tenant": tenant, "tables": json.dumps([table])}))


_FILE_LISTENERS = text("SELECT id FROM tasks WHERE enabled AND tenant_id = :tenant"
                       " AND on_file @> CAST(:tables AS jsonb) ORDER BY id")


def scope(*, session: Session, roots: list[int]) -> list[int]:
    """The roots and all their enabled descendants of the same tenant."""
    if not roots:
        return []
    stmt = text(
        "WITH RECURSIVE s(id, tenant_id) AS (SELECT id, tenant_id FROM tasks WHERE id IN :roots AND enabled"
        " UNION SELECT d.child_id, s.tenant_id FROM task_dependencies d JOIN s ON d.parent_id = s.id"
        " JOIN tasks t ON t.id = d.child_id AND t.enabled AND t.tenant_id = s.tenant_id)"
        " SELECT DISTINCT id FROM s ORDER BY id"
    ).bindparams(bindparam("roots", expanding=True))
    return [r[0] for r in session.execute(stmt, {"roots": list(roots)})]
