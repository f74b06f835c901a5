"""Keyword-only database functions for task definitions as the engine reads them: tasks and DAG edges.

Batches are in `database.batches`, task runs (`task_log`) in `database.runs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

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


def find_task(*, session: Session, name: str) -> TaskRow | None:
    row = session.execute(select(*_TASK_COLUMNS).where(Task.name == name)).first()
    return TaskRow(*row) if row else None


def dag_exists(*, session: Session, dag: str) -> bool:
    return session.execute(select(Task.id).where(Task.dag == dag, Task.enabled).limit(1)).first() is not None


def dag_roots(*, session: Session, dag: str) -> list[int]:
    """Enabled tasks of `dag` with no enabled parent in the same DAG."""
    rows = session.execute(text(
        "SELECT t.id FROM tasks t WHERE t.dag = :dag AND t.enabled AND NOT EXISTS ("
        " SELECT 1 FROM task_dependencies d JOIN tasks p ON p.id = d.parent_id"
        " WHERE d.child_id = t.id AND p.dag = :dag AND p.enabled) ORDER BY t.id"), {"dag": dag})
    return [r[0] for r in rows]


def file_listeners(*, session: Session, table: str) -> list[int]:
    """Enabled tasks whose `on_file` lists `dataset.table`."""
    query = select(Task.id).where(Task.enabled, Task.on_file.contains([table])).order_by(Task.id)
    return list(session.scalars(query))


def scope(*, session: Session, roots: list[int]) -> list[int]:
    """The roots and all their enabled descendants."""
    if not roots:
        return []
    stmt = text(
        "WITH RECURSIVE s(id) AS (SELECT id FROM tasks WHERE id IN :roots AND enabled"
        " UNION SELECT d.child_id FROM task_dependencies d JOIN s ON d.parent_id = s.id"
        " JOIN tasks t ON t.id = d.child_id AND t.enabled) SELECT id FROM s ORDER BY id"
    ).bindparams(bindparam("roots", expanding=True))
    return [r[0] for r in session.execute(stmt, {"roots": list(roots)})]
