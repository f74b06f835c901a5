"""`wait_for_files` tasks: the fan-in gate on loaded files.

The gate passes when every listed table has a SUCCESS file this gate has not consumed yet: the
file loaded in this batch, or one loaded since the gate last passed. Each file is consumed by
one pass only (evaluation is serialised per gate with an advisory lock and the consumed file ids
are reserved in the same transaction). When a table is still missing the gate is SKIPPED, "waiting
for files: ...", and so is everything below it; the batch of the file that completes the set runs them.

That "new files" rule is for file-triggered batches only. A batch started on purpose — `caf run`, a
schedule, `caf batch reprocess` — runs with the newest loaded file of each table (as a dbt or Airflow
re-run would) and consumes nothing, so the next file-triggered pass still waits for new files.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from database.session import unit_of_work
from engine.kinds.base import Done, Outcome, Skip, TaskContext

FILE_TRIGGERS = ("file",)
"""Batch triggers that follow the "new files" rule; any other trigger runs with the latest files."""


def start(ctx: TaskContext) -> Outcome:
    tables = [str(t) for t in ctx.task.config.get("tables") or []]
    if ctx.batch.trigger not in FILE_TRIGGERS:
        return _latest(ctx, tables)
    with unit_of_work(ctx.deps.sessions) as session:
        session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"caf-gate:{ctx.task.id}"))))
        found = {t: f for t in tables if (f := unconsumed_file(session=session, table=t, task_id=ctx.task.id,
                                                                 run_id=ctx.run.id)) is not None}
        missing = [t for t in tables if t not in found]
        if missing:
            return Skip(f"waiting for files: {', '.join(missing)}", {"waiting_for": missing, "seen": found})
        # Reserve: the next evaluation (any batch) sees these files as consumed.
        session.execute(text("UPDATE task_log SET output = output || CAST(:o AS jsonb) WHERE id = :id"),
                        {"o": json.dumps({"files": found}), "id": ctx.run.id})
    return Done({"files": found})


check = start


def _latest(ctx: TaskContext, tables: list[str]) -> Outcome:
    """A manual, scheduled or reprocess batch: the newest loaded file of each of the batch's tenant's
    tables, nothing consumed."""
    from database.batches import batch_tenant
    from engine.freshness import latest_file

    with unit_of_work(ctx.deps.sessions) as session:
        tenant = batch_tenant(session=session, batch_id=ctx.run.batch_id) or "default"
        found = {t: f for t in tables
                 if (f := latest_file(session=session, table=t, batch_id=ctx.run.batch_id, tenant=tenant))}
    missing = [t for t in tables if t not in found]
    if missing:
        return Skip(f"waiting for files: {', '.join(missing)} (no file loaded yet)",
                    {"waiting_for": missing, "seen": found})
    return Done({"files": found, "rule": "latest"})


def unconsumed_file(*, session: Session, table: str, task_id: int, run_id: int) -> dict[str, Any] | None:
    """The newest SUCCESS file of the gate's tenant's `dataset.table` newer than the ones it consumed before."""
    dataset, name = table.split(".", 1)
    row = session.execute(text(
        "SELECT f.id, f.bucket, f.name, f.generation, f.md5, f.crc32c, f.batch_id FROM files f"
        " JOIN tables tb ON tb.id = f.table_id JOIN domain d ON d.id = tb.domain_id"
        " JOIN tasks g ON g.id = :task AND g.tenant_id = tb.tenant_id AND g.tenant_id = f.tenant_id"
        " WHERE d.name = :ds AND tb.name = :tb AND f.status = 'SUCCESS' AND f.id > COALESCE(("
        "  SELECT max((l.output->'files'->CAST(:t AS text)->>'file_id')::bigint) FROM task_log l"
        "  WHERE l.task_id = :task AND l.id <> :run AND l.status IN ('SUCCESS', 'PROCESSING')"
        "  AND l.output->>'rule' IS DISTINCT FROM 'latest'), 0)"
        " ORDER BY f.id DESC LIMIT 1"), {"ds": dataset, "tb": name, "t": table, "task": task_id, "run": run_id}
    ).first()
    if row is None:
        return None
    return {"file_id": row[0], "object": f"gs://{row[1]}/{row[2]}#{row[3]}", "md5": row[4], "crc32c": row[5],
            "batch_id": row[6]}
