"""Freshness and lineage: what produced a table's current content, and whether it is stale.

Each SUCCESS task run records its inputs — the source files (with checksums) of the tables it
listens to, the run keys of its parents' runs, and a key of its own logic (query text,
callable, remote target) — and a `run_key` digest of them. A table's freshness is computed by
rebuilding, from the newest loaded files and upstream runs, the key its producer *would* record
now: a different key means a newer source or upstream run exists, i.e. the table is stale.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from database.base import DEFAULT_TENANT
from database.models import Query, Task, TaskDependency

if TYPE_CHECKING:
    from adapters.warehouse.base import Warehouse
    from database.tasks import TaskRow


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def input_tables(task: Any) -> list[str]:
    config = task.config or {}
    return sorted(set(task.on_file or []) | set(config.get("tables") or []))


def logic_key(*, session: Session, task: Any) -> str:
    """What the task does, independent of when it runs: its kind's payload (query text, callable, target).

    `caf tasks sync` stores it as `config["logic"]`; computed here for tasks synced before that.
    """
    if (task.config or {}).get("logic"):
        return str(task.config["logic"])
    payload: Any = {k: v for k, v in (task.config or {}).items() if k not in ("description", "poll_seconds")}
    if task.query_id is not None:
        query = session.get(Query, task.query_id)
        payload = {"query": query.sql_text, "parameters": query.parameters} if query else None
    return payload_key(task.kind, payload)


def payload_key(kind: str, payload: Any) -> str:
    return digest({"kind": kind, "payload": payload})


def _file_key(f: dict[str, Any] | None) -> Any:
    # Content identity: checksum (and object name); the file id only when no checksum is known.
    if f is None:
        return None
    checksum = f.get("md5") or f.get("crc32c")
    return [f.get("object", "").split("#")[0], checksum] if checksum else ["file", f.get("file_id")]


def run_key(inputs: dict[str, Any]) -> str:
    files = {t: _file_key(f) for t, f in inputs["files"].items()}
    upstream = {u["task"]: u["run_key"] for u in inputs["upstream"]}
    return digest({"files": files, "upstream": upstream, "logic": inputs["logic"]})


def static_inputs(*, task: TaskRow, output: dict[str, Any],
                  upstream: list[dict[str, Any]] | None) -> tuple[dict[str, Any], str] | None:
    """`run_inputs` when it needs no database read (no input tables, known upstream, synced logic), else None."""
    files = dict(output.get("files") or {})
    logic = (task.config or {}).get("logic")
    if upstream is None or not logic or any(t not in files for t in input_tables(task)):
        return None
    inputs = {"files": files, "upstream": upstream, "logic": logic}
    return inputs, run_key(inputs)


def run_inputs(*, session: Session, task: TaskRow, batch_id: int, output: dict[str, Any],
               upstream: list[dict[str, Any]] | None = None) -> tuple[dict[str, Any], str]:
    """The inputs of a run that is finishing, and their run key (called inside its transaction)."""
    from database.batches import batch_tenant
    from database.runs import upstream_runs

    files = dict(output.get("files") or {})
    tenant = None
    for table in input_tables(task):
        if table not in files:
            tenant = tenant or batch_tenant(session=session, batch_id=batch_id) or DEFAULT_TENANT
            files[table] = latest_file(session=session, table=table, batch_id=batch_id, tenant=tenant)
    if upstream is None:
        upstream = upstream_runs(session=session, batch_id=batch_id, task_id=task.id)
    logic = (task.config or {}).get("logic") or logic_key(session=session, task=task)
    inputs = {"files": files, "upstream": upstream, "logic": logic}
    return inputs, run_key(inputs)


def latest_file(*, session: Session, table: str, tenant: str, batch_id: int | None = None) -> dict[str, Any] | None:
    """The tenant's SUCCESS file of `dataset.table` (as the tenant registered it) in the batch, else the newest."""
    dataset, name = table.split(".", 1)
    row = session.execute(text(
        "SELECT f.id, f.bucket, f.name, f.generation, f.md5, f.crc32c, f.batch_id, f.finished_at FROM files f"
        " JOIN tables tb ON tb.id = f.table_id JOIN domain d ON d.id = tb.domain_id"
        " WHERE d.name = :ds AND tb.name = :tb AND tb.tenant_id = :tenant AND f.tenant_id = :tenant"
        " AND f.status = 'SUCCESS'"
        " ORDER BY (f.batch_id IS NOT DISTINCT FROM :b) DESC, f.id DESC LIMIT 1"),
        {"ds": dataset, "tb": name, "b": batch_id, "tenant": tenant}).first()
    return None if row is None else _file(row)


def _file(row: Any) -> dict[str, Any]:
    return {"file_id": row[0], "object": f"gs://{row[1]}/{row[2]}#{row[3]}", "md5": row[4], "crc32c": row[5],
            "batch_id": row[6], "loaded_at": row[7].isoformat() if row[7] else None}


class _Expected:
    """The run key each task would record if it ran now (memoised across the upstream graph)."""

    def __init__(self, session: Session, tenant: str) -> None:
        self.session = session
        self.tenant = tenant
        self.keys: dict[int, str | None] = {}

    def key(self, task: Task, depth: int = 0) -> str | None:
        if task.id not in self.keys:
            self.keys[task.id] = None  # guards against cycles left in the database by hand
            if depth < 100:
                self.keys[task.id] = self._compute(task, depth)
        return self.keys[task.id]

    def _compute(self, task: Task, depth: int) -> str | None:
        ran = self.session.execute(text("SELECT 1 FROM task_log WHERE task_id = :t AND status = 'SUCCESS' LIMIT 1"),
                                   {"t": task.id}).first()
        if ran is None:
            return None  # as recorded by a child whose parent never succeeded
        files = {t: latest_file(session=self.session, table=t, tenant=self.tenant) for t in input_tables(task)}
        parents = self.session.scalars(select(Task).join(TaskDependency, TaskDependency.parent_id == Task.id)
                                       .where(TaskDependency.child_id == task.id)).all()
        upstream = [{"task": p.name, "run_key": self.key(p, depth + 1)} for p in sorted(parents, key=lambda p: p.name)]
        return run_key({"files": files, "upstream": upstream, "logic": logic_key(session=self.session, task=task)})


def table_freshness(*, session: Session, warehouse: Warehouse | None, dataset: str, table: str,
                    tenant: str = DEFAULT_TENANT, warehouse_dataset: str | None = None) -> dict[str, Any]:
    """Where the tenant's `dataset.table` content comes from and whether it is stale.

    Only the tenant's files, tasks and runs are considered. `dataset.table` is the name as the
    tenant registered (or produces) it; the row count of a registered table is read from
    `warehouse_dataset` (its physical dataset, `{tenant}_{dataset}` with per-tenant datasets).

    Returns a dict: `table`, `status` (fresh | stale | unknown), `reasons`, `files` (source files
    with checksums), `producer` (the task run that wrote it, with its run key) and `upstream`
    (the runs that run consumed), and `rows` when the warehouse has the table.
    """
    qualified = f"{dataset}.{table}"
    result: dict[str, Any] = {"table": qualified, "status": "unknown", "reasons": [], "files": [],
                              "producer": None, "upstream": [], "rows": None}
    producers = session.scalars(select(Task).where(Task.enabled, Task.tenant_id == tenant,
                                                   Task.config["produces"].contains([qualified]))
                                .order_by(Task.id)).all()
    if producers:
        result["rows"] = _rows(warehouse, dataset, table)
        _derived(session, result, producers[0], tenant)
    else:
        result["rows"] = _rows(warehouse, warehouse_dataset or dataset, table)
        _source(session, result, dataset, table, tenant)
    return result


def _source(session: Session, result: dict[str, Any], dataset: str, table: str, tenant: str) -> None:
    rows = session.execute(text(
        "SELECT f.id, f.bucket, f.name, f.generation, f.md5, f.crc32c, f.batch_id, f.finished_at, f.status"
        " FROM files f JOIN tables tb ON tb.id = f.table_id JOIN domain d ON d.id = tb.domain_id"
        " WHERE d.name = :ds AND tb.name = :tb AND tb.tenant_id = :tenant AND f.tenant_id = :tenant"
        " ORDER BY f.id DESC LIMIT 50"), {"ds": dataset, "tb": table, "tenant": tenant}).all()
    loaded = [r for r in rows if r[8] == "SUCCESS"]
    result["files"] = [_file(r) for r in loaded[:20]]
    if not rows:
        result["reasons"].append("no file of this table is known and no task produces it")
        return
    newest_loaded = loaded[0][0] if loaded else 0
    newer = [r for r in rows if r[0] > newest_loaded and r[8] != "SUCCESS"]
    for r in newer:
        result["reasons"].append(f"newer source gs://{r[1]}/{r[2]}#{r[3]} is {r[8]}, not loaded")
    result["status"] = "stale" if newer or not loaded else "fresh"


def _derived(session: Session, result: dict[str, Any], producer: Task, tenant: str) -> None:
    last = session.execute(text(
        "SELECT id, batch_id, run_key, finished_at, output FROM task_log WHERE task_id = :t AND status = 'SUCCESS'"
        " ORDER BY finished_at DESC, id DESC LIMIT 1"), {"t": producer.id}).first()
    result["producer"] = {"task": producer.name, "task_log_id": last[0] if last else None,
                          "batch_id": last[1] if last else None, "run_key": last[2] if last else None,
                          "finished_at": last[3].isoformat() if last and last[3] else None}
    if last is None:
        result["status"] = "stale"
        result["reasons"].append(f"task {producer.name} has never succeeded")
        return
    recorded = (last[4] or {}).get("inputs") or {"files": {}, "upstream": [], "logic": None}
    result["files"] = [{"table": t, **f} for t, f in recorded["files"].items() if f]
    expected = _Expected(session, tenant)
    now_key = expected.key(producer)
    upstream = []
    for u in recorded["upstream"]:
        parent = session.scalars(select(Task).where(Task.name == u["task"], Task.tenant_id == tenant)).first()
        current = expected.key(parent) if parent else None
        upstream.append({**u, "current_run_key": current, "stale": current != u["run_key"]})
        if current != u["run_key"]:
            result["reasons"].append(f"upstream task {u['task']} has newer input than run {u['task_log_id']} used")
    result["upstream"] = upstream
    for t, f in recorded["files"].items():
        newest = latest_file(session=session, table=t, tenant=tenant)
        if _file_key(newest) != _file_key(f):
            where = newest["object"] if newest else "none"
            result["reasons"].append(f"newer source file for {t}: {where} (md5 {newest and newest['md5']})")
    if recorded.get("logic") != logic_key(session=session, task=producer):
        result["reasons"].append(f"the definition of task {producer.name} changed since it ran")
    fresh = now_key == last[2]
    if not fresh and not result["reasons"]:
        result["reasons"].append("its inputs changed since it ran")
    result["status"] = "fresh" if fresh else "stale"


def _rows(warehouse: Warehouse | None, dataset: str, table: str) -> int | None:
    if warehouse is None:
        return None
    try:
        if warehouse.table_columns(dataset, table) is None:
            return None
        return warehouse.count_rows(dataset, table)
    except Exception:  # noqa: BLE001 - freshness is reported even when the warehouse is unreachable
        return None


# -- files (reprocess) ---------------------------------------------------------------------------
def file_table(*, session: Session, file_id: int) -> str | None:
    """`dataset.table` of a registered file."""
    row = session.execute(text(
        "SELECT d.name || '.' || tb.name FROM files f JOIN tables tb ON tb.id = f.table_id"
        " JOIN domain d ON d.id = tb.domain_id WHERE f.id = :f"), {"f": file_id}).first()
    return row[0] if row else None


def latest_loaded_file(*, session: Session, table: str, tenant: str = DEFAULT_TENANT) -> int | None:
    """Id of the newest SUCCESS file of the tenant's `dataset.table`."""
    dataset, _, name = table.partition(".")
    row = session.execute(text(
        "SELECT f.id FROM files f JOIN tables tb ON tb.id = f.table_id JOIN domain d ON d.id = tb.domain_id"
        " WHERE d.name = :ds AND tb.name = :tb AND tb.tenant_id = :tenant AND f.status = 'SUCCESS'"
        " ORDER BY f.id DESC LIMIT 1"), {"ds": dataset, "tb": name, "tenant": tenant}).first()
    return row[0] if row else None
