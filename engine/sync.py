"""`caf tasks sync DIR`: make `tasks`, `task_dependencies`, `query`, `repo`, `power_bi_report` match the files.

Idempotent: a second sync of the same files changes nothing and reports every task unchanged.
A task whose file disappeared is reported `missing` and left as it is, unless the sync prunes:
then it is `disabled` (its run history stays) and its edges are removed. Everything happens in
the caller's transaction: a sync applies completely or not at all (a dry run rolls it back).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from database.models import PowerBiReport, Query, Repo, Task, TaskDependency
from engine.definitions import TaskDefinition, load_dir
from engine.freshness import payload_key


@dataclass
class SyncReport:
    changes: list[tuple[str, str]] = field(default_factory=list)
    """(change, task name): change is one of CHANGES."""

    CHANGES = ("created", "updated", "unchanged", "disabled", "missing")
    """missing: enabled in the database, absent from the files, kept (a sync without prune)."""

    def names(self, change: str) -> list[str]:
        return [name for what, name in self.changes if what == change]

    def counts(self) -> dict[str, int]:
        return {what: len(self.names(what)) for what in self.CHANGES}

    def __str__(self) -> str:
        return ", ".join(f"{n} {what}" for what, n in self.counts().items())


def sync_directory(*, session: Session, directory: Path, prune: bool = False) -> SyncReport:
    """Load and validate every definition under `directory`, then apply them."""
    return sync(session=session, definitions=[d for _, d in load_dir(directory)], prune=prune)


def sync(*, session: Session, definitions: list[TaskDefinition], prune: bool) -> SyncReport:
    """Upsert `definitions` (already validated as a whole); with `prune`, disable enabled tasks not
    among them, otherwise report them as missing and leave them alone. Tasks are keyed by tenant and name."""
    from database.tenancy import validate_tenant

    report = SyncReport()
    existing = {(t.tenant_id, t.name): t for t in session.scalars(select(Task))}
    tasks: dict[str, Task] = {}
    for definition in definitions:
        validate_tenant(definition.tenant)
        task = existing.get((definition.tenant, definition.name))
        if task is None:
            change = "created"
            task = Task(name=definition.name, tenant_id=definition.tenant)
        elif task.definition_checksum != definition.checksum or not task.enabled:
            change = "updated"
        else:
            change = "unchanged"
        _apply(session, task, definition)
        session.add(task)  # after _apply: its queries would otherwise autoflush a half-filled row
        tasks[definition.name] = task
        report.changes.append((change, definition.name))
    session.flush()
    kept = {(t.tenant_id, t.name) for t in tasks.values()}
    absent = [t for key, t in existing.items() if key not in kept and t.enabled]
    removed = absent if prune else []
    for task in absent:
        if prune:
            task.enabled = False
        report.changes.append(("disabled" if prune else "missing", task.name))
    _sync_edges(session, tasks, definitions, [t.id for t in removed])
    session.flush()
    return report


def _apply(session: Session, task: Task, d: TaskDefinition) -> None:
    config: dict[str, Any] = {"produces": d.outputs}
    if d.description:
        config["description"] = d.description
    query_id = repo_id = report_id = None
    logic: Any = d.payload
    if d.sql is not None:
        params = {k: v.model_dump(mode="json") for k, v in d.sql.parameters.items()}
        query_id = _upsert(session, Query, d.name, d.tenant, sql_text=d.sql.query, parameters=params).id
        logic = {"query": d.sql.query, "parameters": params}
    elif d.dataform is not None:
        logic = d.dataform.repo.model_dump(mode="json", exclude={"name"})
        repo_id = _upsert(session, Repo, d.dataform.repo.name or d.name, d.tenant, **logic).id
        config["poll_seconds"] = d.dataform.poll_seconds
    elif d.powerbi is not None:
        logic = d.powerbi.report.model_dump(mode="json", exclude={"name"})
        report_id = _upsert(session, PowerBiReport, d.powerbi.report.name or d.name, d.tenant, **logic).id
        config["poll_seconds"] = d.powerbi.poll_seconds
    else:
        config.update(d.payload)
    # What the task does, for run keys: a changed query text makes the tables it wrote stale.
    config["logic"] = payload_key(d.kind, logic)
    _set(task, kind=d.kind, dag=d.dag, schedule=d.schedule, max_attempts=d.max_attempts,
         timeout_seconds=d.timeout, on_file=list(d.on_file), config=config, query_id=query_id, repo_id=repo_id,
         power_bi_report_id=report_id, enabled=True, definition_checksum=d.checksum)


def _upsert(session: Session, model: Any, name: str, tenant: str, **fields: Any) -> Any:
    row = session.scalars(select(model).where(model.name == name, model.tenant_id == tenant)).first()
    if row is None:
        row = model(name=name, tenant_id=tenant)
        session.add(row)
    _set(row, **fields)
    session.flush()
    return row


def _set(row: Any, **values: Any) -> None:
    # Assign only what differs, so an unchanged row issues no UPDATE (and keeps its updated_at).
    for key, value in values.items():
        if getattr(row, key) != value:
            setattr(row, key, value)


def _sync_edges(session: Session, tasks: dict[str, Task], definitions: list[TaskDefinition],
                removed: list[int]) -> None:
    wanted = {(tasks[p].id, tasks[d.name].id) for d in definitions for p in d.depends_on}
    tenant_of = {t.id: t.tenant_id for t in tasks.values()}
    if removed:
        session.execute(delete(TaskDependency).where(
            TaskDependency.parent_id.in_(removed) | TaskDependency.child_id.in_(removed)))
    ids = [t.id for t in tasks.values()]
    have = {(e.parent_id, e.child_id): e for e in session.scalars(
        select(TaskDependency).where(TaskDependency.child_id.in_(ids)))}
    for key, edge in have.items():
        if key not in wanted:
            session.delete(edge)
    for parent_id, child_id in sorted(wanted - set(have)):
        session.add(TaskDependency(parent_id=parent_id, child_id=child_id, tenant_id=tenant_of[child_id]))
