"""Keyword-only database functions for task batches (`task_batch`): one DAG or file run and its outcome.

Every change that decides what runs next happens while the batch row is locked (`lock_batch`),
so concurrent completions in one batch are serialised (see `database.runs`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.orm import Session

from database.base import DEFAULT_TENANT
from database.models import TaskBatch


@dataclass(frozen=True)
class BatchRow:
    id: int
    status: str
    trigger: str
    root: str | None
    roots: list[int]
    summary: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None
    tenant_id: str


@functools.cache
def _get_batch_statement(lock: bool) -> Any:
    """`get_batch`'s query, built once (Core table, bound id): the engine runs it for every message."""
    batches: Any = TaskBatch.__table__
    c = batches.c
    query = (select(c.id, c.status, c.trigger, c.root, c.roots, c.summary, c.started_at, c.finished_at,
                    c.tenant_id).where(c.id == bindparam("batch_id")))
    return query.with_for_update(key_share=True) if lock else query  # FOR NO KEY UPDATE


def create_batch(*, session: Session, trigger: str, root: str | None, summary: dict[str, Any] | None = None,
                 started_at: datetime | None = None, tenant: str = DEFAULT_TENANT) -> int:
    batch = TaskBatch(trigger=trigger, root=root, summary=summary or {}, tenant_id=tenant)
    if started_at is not None:
        batch.started_at = started_at
    session.add(batch)
    session.flush()
    return batch.id


def get_batch(*, session: Session, batch_id: int, lock: bool = False) -> BatchRow | None:
    """The batch; `lock`: and lock its row until commit in the same statement, as `lock_batch` does."""
    row = session.execute(_get_batch_statement(lock), {"batch_id": batch_id}).first()
    return BatchRow(*row) if row else None


def batch_tenant(*, session: Session, batch_id: int) -> str | None:
    """The tenant a batch runs for: only that tenant's tasks run in it."""
    return session.scalar(select(TaskBatch.tenant_id).where(TaskBatch.id == batch_id))


def lock_batch(*, session: Session, batch_id: int) -> bool:
    """Lock the batch row until commit (NO KEY UPDATE: task_log inserts still pass); False if missing."""
    row = session.execute(text("SELECT id FROM task_batch WHERE id = :b FOR NO KEY UPDATE"), {"b": batch_id})
    return row.first() is not None


def batch_for_message(*, session: Session, message_id: str) -> int | None:
    """The batch a trigger message already started (Pub/Sub delivers at least once)."""
    row = session.execute(select(TaskBatch.id).where(TaskBatch.summary["message_id"].astext == message_id)).first()
    return row[0] if row else None


def set_batch(*, session: Session, batch_id: int, roots: list[int] | None = None, **summary: Any) -> None:
    values: dict[str, Any] = {"summary": TaskBatch.summary.op("||")(_jsonb(summary))}
    if roots is not None:
        values["roots"] = roots
    session.execute(update(TaskBatch).where(TaskBatch.id == batch_id).values(**values))


def reopen_batch(*, session: Session, batch_id: int, **summary: Any) -> None:
    session.execute(update(TaskBatch).where(TaskBatch.id == batch_id).values(
        status="PROCESSING", finished_at=None, summary=TaskBatch.summary.op("||")(_jsonb(summary))))


def close_batch(*, session: Session, batch_id: int, status: str, now: datetime, summary: dict[str, Any]) -> bool:
    result = session.execute(_CLOSE_BATCH, {"b": batch_id, "status": status, "now": now,
                                            "summary": json.dumps(summary, default=str)})
    return bool(result.rowcount)  # type: ignore[attr-defined]


_CLOSE_BATCH = text(
    "UPDATE task_batch SET status = :status, finished_at = :now, updated_at = now(),"
    " summary = summary || CAST(:summary AS jsonb) WHERE id = :b AND status = 'PROCESSING'")


def has_pending(*, session: Session, batch_id: int) -> bool:
    row = session.execute(text("SELECT EXISTS (SELECT 1 FROM task_log WHERE batch_id = :b AND status = 'PROCESSING')"),
                          {"b": batch_id}).first()
    return bool(row and row[0])


def batch_runs(*, session: Session, batch_id: int) -> list[dict[str, Any]]:
    """Every task run of a batch with its task's name and kind, in start order."""
    rows = session.execute(text(
        "SELECT l.task_id, t.name, t.kind, l.status, l.attempt, l.started_at, l.finished_at, l.error, l.output,"
        " l.remote_id, l.run_key, l.lease_until FROM task_log l JOIN tasks t ON t.id = l.task_id"
        " WHERE l.batch_id = :b ORDER BY l.started_at, t.name"), {"b": batch_id}).mappings()
    return [dict(r) for r in rows]


def _jsonb(value: dict[str, Any]) -> Any:
    from sqlalchemy import cast, literal
    from sqlalchemy.dialects.postgresql import JSONB

    return cast(literal(json.dumps(value, default=str)), JSONB)
