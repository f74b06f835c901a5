"""Keyword-only database functions for task runs (`task_log`): plan, claim, finish, retry, skip.

A task run (`task_log`, unique per batch and task) moves through these states:

    planned   PROCESSING, attempt 0                 every task in the batch's scope, at batch start
    queued    PROCESSING, attempt n, no lease       its message (attempt n) is published
    running   PROCESSING, attempt n, lease_until    claimed by exactly one delivery
    finished  SUCCESS | ERROR | SKIPPED

A transient failure puts a running row back to queued with attempt n+1 and `not_before`.
Every change that decides what runs next (finish, release children, skip, close) happens while
the batch row is locked (`lock_batch`), so concurrent completions in one batch are serialised.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from database.batches import BatchRow
from database.direct import Direct, prepare_statement, sql_literal
from database.tasks import TaskRow

_RUN_COLUMNS = ("id, batch_id, task_id, status, attempt, started_at, finished_at, lease_until, not_before, "
                "error, output, remote_id, run_key")


@dataclass(frozen=True)
class RunRow:
    id: int
    batch_id: int
    task_id: int
    status: str
    attempt: int
    started_at: datetime | None
    finished_at: datetime | None
    lease_until: datetime | None
    not_before: datetime | None
    error: str | None
    output: dict[str, Any]
    remote_id: str | None
    run_key: str | None


def _run(row: Any) -> RunRow:
    values = list(row[:13])
    values[10] = values[10] or {}
    return RunRow(*values)


def plan_runs(*, session: Session, batch_id: int, task_ids: list[int], now: datetime) -> None:
    """Planned rows (attempt 0) for every task in scope; existing rows are left alone."""
    if task_ids:
        session.execute(text(
            "INSERT INTO task_log (task_id, batch_id, status, attempt, started_at, tenant_id)"
            " SELECT t.id, :b, 'PROCESSING', 0, :now, t.tenant_id FROM tasks t"
            " WHERE t.id = ANY(CAST(:ids AS integer[]))"
            " ON CONFLICT (batch_id, task_id) DO NOTHING"), {"b": batch_id, "ids": task_ids, "now": now})


def release_ready(*, session: Session, batch_id: int, parent_id: int | None = None) -> list[int]:
    """Planned rows whose parents in this batch all succeeded become queued (attempt 1).

    Call with the batch locked: the lock is what makes two parents finishing at once release a
    child exactly once (the second transaction waits, then sees the first one's SUCCESS).
    """
    children = " AND c.task_id IN (SELECT child_id FROM task_dependencies WHERE parent_id = :p)" if parent_id else ""
    rows = session.execute(text(
        "UPDATE task_log c SET attempt = 1, updated_at = now()"
        " WHERE c.batch_id = :b AND c.status = 'PROCESSING' AND c.attempt = 0" + children +
        " AND NOT EXISTS (SELECT 1 FROM task_dependencies d JOIN task_log p"
        "  ON p.task_id = d.parent_id AND p.batch_id = c.batch_id"
        "  WHERE d.child_id = c.task_id AND p.status <> 'SUCCESS')"
        " RETURNING c.task_id"), {"b": batch_id, "p": parent_id})
    return sorted(r[0] for r in rows)


@dataclass(frozen=True)
class Claim:
    run: RunRow
    task: TaskRow
    batch: BatchRow
    upstream: list[dict[str, Any]]
    """The parents' SUCCESS runs (this batch's first): task, task_log_id, run_key, batch_id."""


_UPSTREAM = (
    "SELECT COALESCE(jsonb_agg(jsonb_build_object('task', p.name, 'task_log_id', l.id, 'run_key', l.run_key,"
    " 'batch_id', l.batch_id) ORDER BY p.name), '[]') FROM task_dependencies d JOIN tasks p ON p.id = d.parent_id"
    " LEFT JOIN LATERAL (SELECT id, run_key, batch_id FROM task_log WHERE task_id = d.parent_id"
    " AND status = 'SUCCESS' ORDER BY (batch_id = {b}) DESC, finished_at DESC LIMIT 1) l ON true"
    " WHERE d.child_id = {t}")
# One statement inserts the run, or takes its queued row if due, and reads back the run, its
# task, its batch and its parents' runs. {placeholders}: bound parameters or inlined literals.
_CLAIM = (
    "WITH c AS (INSERT INTO task_log (task_id,batch_id,status,attempt,started_at,lease_until,tenant_id)"
    " SELECT t.id,{b},'PROCESSING',{a},{now},CAST({now} AS timestamptz)+t.timeout_seconds*interval '1 second',"
    "t.tenant_id FROM tasks t WHERE t.id={t} AND EXISTS (SELECT 1 FROM task_batch WHERE id={b} AND status='PROCESSING'"
    " AND tenant_id=t.tenant_id)"
    " ON CONFLICT (batch_id,task_id) DO UPDATE SET lease_until=EXCLUDED.lease_until,not_before=NULL,"
    " started_at=CASE WHEN task_log.attempt<=1 THEN EXCLUDED.started_at ELSE task_log.started_at END"
    " WHERE task_log.status='PROCESSING' AND task_log.attempt=EXCLUDED.attempt AND task_log.lease_until IS NULL"
    " AND (task_log.not_before IS NULL OR task_log.not_before<=EXCLUDED.started_at)"
    f" RETURNING {_RUN_COLUMNS})"
    " SELECT c.*,t.name,t.kind,t.dag,t.max_attempts,t.timeout_seconds,t.on_file,t.config,t.query_id,t.repo_id,"
    "t.power_bi_report_id,t.enabled,b.status,b.trigger,b.root,b.roots,b.summary,b.started_at,b.finished_at,"
    f"b.tenant_id,({_UPSTREAM}) FROM c JOIN tasks t ON t.id=c.task_id JOIN task_batch b ON b.id=c.batch_id")
_BOUND = {"b": ":b", "t": ":t", "a": ":a", "now": ":now"}


def claim_run(*, session: Session, batch_id: int, task_id: int, attempt: int, now: datetime) -> Claim | None:
    """Claim attempt `attempt` of a run (lease: now + the task's timeout); None = not claimed.

    Nothing is claimed in a batch that is no longer PROCESSING, nor a row that is running,
    finished, at another attempt, or not due yet. `claim_run_direct` is the same statement.
    """
    row = session.execute(text(_CLAIM.format(**_BOUND)),
                          {"t": task_id, "b": batch_id, "a": attempt, "now": now}).first()
    return _claim(row)


def claim_run_direct(conn: Direct, *, batch_id: int, task_id: int, attempt: int, now: datetime) -> Claim | None:
    """`claim_run` in one round trip that is also its transaction (the message handler's hot path)."""
    rows = conn.script(conn.execute(_CLAIM_PREPARED, b=batch_id, t=task_id, a=attempt, now=now))
    return _claim(rows[0] if rows else None)


def _claim(row: Any) -> Claim | None:
    if row is None:
        return None
    return Claim(_run(row[:13]), TaskRow(row[2], *row[13:24]), BatchRow(row[1], *row[24:32]), list(row[32]))


def upstream_runs(*, session: Session, batch_id: int, task_id: int) -> list[dict[str, Any]]:
    """The parents' SUCCESS runs, as `Claim.upstream`."""
    return list(session.execute(text(_UPSTREAM.format(**_BOUND)), {"b": batch_id, "t": task_id}).scalar_one())


def get_run(*, session: Session, batch_id: int, task_id: int) -> RunRow | None:
    row = session.execute(text(f"SELECT {_RUN_COLUMNS} FROM task_log WHERE batch_id = :b AND task_id = :t"),
                          {"b": batch_id, "t": task_id}).first()
    return _run(row) if row else None


def finish_run(*, session: Session, run_id: int, attempt: int, status: str, now: datetime,
               output: dict[str, Any] | None = None, error: str | None = None, run_key: str | None = None,
               children_published: bool = False) -> bool:
    """Running → SUCCESS / ERROR / SKIPPED, lease released; False if the run is no longer ours."""
    result = session.execute(text(
        "UPDATE task_log SET status = :s, finished_at = :now, lease_until = NULL, not_before = NULL,"
        " error = :e, output = output || CAST(:o AS jsonb), run_key = :k, children_published = :cp,"
        " updated_at = now()"
        " WHERE id = :id AND status = 'PROCESSING' AND attempt = :a AND lease_until IS NOT NULL"),
        {"s": status, "now": now, "e": error, "o": json.dumps(output or {}, default=str), "k": run_key,
         "cp": children_published, "id": run_id, "a": attempt})
    return bool(result.rowcount)  # type: ignore[attr-defined]


def schedule_retry(*, session: Session, run_id: int, attempt: int, not_before: datetime, error: str,
                   output: dict[str, Any] | None = None) -> bool:
    """Running attempt n → queued attempt n+1, due at `not_before`; a remote id is forgotten."""
    result = session.execute(text(
        "UPDATE task_log SET attempt = attempt + 1, lease_until = NULL, not_before = :nb, error = :e,"
        " remote_id = NULL, output = output || CAST(:o AS jsonb), updated_at = now()"
        " WHERE id = :id AND status = 'PROCESSING' AND attempt = :a AND lease_until IS NOT NULL"),
        {"nb": not_before, "e": error, "o": json.dumps(output or {}, default=str), "id": run_id, "a": attempt})
    return bool(result.rowcount)  # type: ignore[attr-defined]


def set_remote_id(*, session: Session, run_id: int, attempt: int, remote_id: str) -> bool:
    result = session.execute(text(
        "UPDATE task_log SET remote_id = :r, updated_at = now()"
        " WHERE id = :id AND status = 'PROCESSING' AND attempt = :a"), {"r": remote_id, "id": run_id, "a": attempt})
    return bool(result.rowcount)  # type: ignore[attr-defined]


def advance_check(*, session: Session, run_id: int, attempt: int, seq: int, output: dict[str, Any]) -> bool:
    """Record a pending run's progress and move its check sequence from `seq` to `seq + 1`.

    Only the holder of the current sequence number may schedule the next check, so a
    redelivered check message never forks a second polling chain.
    """
    result = session.execute(text(
        "UPDATE task_log SET output = output || CAST(:o AS jsonb), updated_at = now()"
        " WHERE id = :id AND status = 'PROCESSING' AND attempt = :a"
        " AND COALESCE((output->>'check_seq')::int, 0) = :seq"),
        {"o": json.dumps({**output, "check_seq": seq + 1}, default=str), "id": run_id, "a": attempt, "seq": seq})
    return bool(result.rowcount)  # type: ignore[attr-defined]


def skip_descendants(*, session: Session, batch_id: int, task_id: int, reason: str, now: datetime) -> list[int]:
    """Not-yet-running descendants of `task_id` in the batch → SKIPPED with `reason`."""
    rows = session.execute(text(
        "WITH RECURSIVE d(id) AS (SELECT child_id FROM task_dependencies WHERE parent_id = :t"
        " UNION SELECT x.child_id FROM task_dependencies x JOIN d ON x.parent_id = d.id)"
        " UPDATE task_log SET status = 'SKIPPED', error = :reason, finished_at = :now, updated_at = now()"
        " WHERE batch_id = :b AND task_id IN (SELECT id FROM d) AND status = 'PROCESSING'"
        " AND lease_until IS NULL RETURNING task_id"), {"t": task_id, "b": batch_id, "reason": reason, "now": now})
    return sorted(r[0] for r in rows)


def reset_unfinished(*, session: Session, batch_id: int) -> list[int]:
    """ERROR and SKIPPED runs of a batch → planned again (attempt 0), keeping what happened before."""
    rows = session.execute(text(
        "UPDATE task_log SET status = 'PROCESSING', attempt = 0, lease_until = NULL, not_before = NULL,"
        " finished_at = NULL, remote_id = NULL, error = NULL, children_published = false,"
        " output = jsonb_build_object('previous', jsonb_build_object('status', status, 'error', error,"
        "   'attempt', attempt)), updated_at = now()"
        " WHERE batch_id = :b AND status IN ('ERROR', 'SKIPPED') RETURNING task_id"), {"b": batch_id})
    return sorted(r[0] for r in rows)


def expired_runs(*, session: Session, now: datetime, batch_id: int | None = None) -> list[RunRow]:
    """Running rows whose lease (start + timeout) has passed."""
    where = " AND batch_id = :b" if batch_id is not None else ""
    rows = session.execute(text(
        f"SELECT {_RUN_COLUMNS} FROM task_log WHERE status = 'PROCESSING' AND lease_until < :now{where}"
        " ORDER BY id"), {"now": now, "b": batch_id})
    return [_run(r) for r in rows]


@dataclass(frozen=True)
class Success:
    finished: bool
    """False when the run was no longer ours (ended by its timeout): nothing else happened."""
    released: list[int]
    """Children whose parents in the batch have now all succeeded (attempt 1, queued)."""
    outbox_ids: list[int]
    """Their task messages, written to the outbox; publish them after this returns."""
    closed: dict[str, Any] | None
    """The batch's status and counts when this success closed it."""


_SUCCEED = prepare_statement(
    "succeed",
    "WITH fin AS (UPDATE task_log SET status = 'SUCCESS', finished_at = {now}, lease_until = NULL,"
    "  not_before = NULL, error = NULL, output = output || CAST({o} AS jsonb), run_key = {k},"
    "  children_published = true, updated_at = now()"
    "  WHERE id = {id} AND status = 'PROCESSING' AND attempt = {a} AND lease_until IS NOT NULL RETURNING id),"
    " rel AS (UPDATE task_log c SET attempt = 1, updated_at = now() FROM fin"
    "  WHERE c.batch_id = {b} AND c.status = 'PROCESSING' AND c.attempt = 0"
    "  AND c.task_id IN (SELECT child_id FROM task_dependencies WHERE parent_id = {t})"
    "  AND NOT EXISTS (SELECT 1 FROM task_dependencies d JOIN task_log p"
    "   ON p.task_id = d.parent_id AND p.batch_id = c.batch_id"
    "   WHERE d.child_id = c.task_id AND p.status <> 'SUCCESS' AND p.task_id <> {t})"  # {t} is SUCCESS now
    "  RETURNING c.task_id),"
    # The children's messages, as scheduler.enqueue_run writes them (route task, attempt 1).
    " msg AS (INSERT INTO outbox (event_type, payload)"
    "  SELECT 'task', jsonb_build_object('batch_id', {b}, 'task_id', task_id, 'attempt', 1) FROM rel"
    "  ORDER BY task_id RETURNING id)"
    " SELECT 'fin', (SELECT count(*) FROM fin), (SELECT array_agg(task_id ORDER BY task_id) FROM rel),"
    "  (SELECT array_agg(id ORDER BY id) FROM msg)",
    b="int8", t="int4", id="int8", a="int4", now="timestamptz", o="text", k="text")
# Close the batch when nothing is pending (scheduler._close_if_done, in SQL so that it stays in
# the success's transaction); the NOT EXISTS is evaluated once and skips the summary otherwise.
_CLOSE = prepare_statement(
    "close",
    "UPDATE task_batch b SET status = CASE WHEN s.failed_n > 0 THEN 'ERROR' ELSE 'SUCCESS' END,"
    "  finished_at = {now}, summary = b.summary || jsonb_build_object('counts', s.counts, 'failed', s.failed,"
    "  'duration_seconds', EXTRACT(EPOCH FROM {now} - b.started_at)::float8)"
    " FROM (SELECT jsonb_build_object('SUCCESS', count(*) FILTER (WHERE l.status = 'SUCCESS'),"
    "  'ERROR', count(*) FILTER (WHERE l.status = 'ERROR'), 'SKIPPED', count(*) FILTER (WHERE l.status = 'SKIPPED'))"
    "  AS counts, COALESCE(jsonb_agg(jsonb_build_object('task', t.name, 'error', left(COALESCE(l.error, ''), 500))"
    "  ORDER BY l.started_at, t.name) FILTER (WHERE l.status = 'ERROR'), '[]') AS failed,"
    "  count(*) FILTER (WHERE l.status = 'ERROR') AS failed_n"
    "  FROM task_log l JOIN tasks t ON t.id = l.task_id WHERE l.batch_id = {b}) s"
    " WHERE b.id = {b} AND b.status = 'PROCESSING'"
    "  AND NOT EXISTS (SELECT 1 FROM task_log WHERE batch_id = {b} AND status = 'PROCESSING')"
    "  AND EXISTS (SELECT 1 FROM task_log WHERE id = {id} AND status = 'SUCCESS' AND finished_at = {now})"
    " RETURNING 'closed', b.status, s.counts",
    b="int8", id="int8", now="timestamptz")
_CLAIM_PREPARED = prepare_statement("claim", _CLAIM, b="int8", t="int4", a="int4", now="timestamptz")


def succeed_run_direct(conn: Direct, *, run: RunRow, now: datetime, output: dict[str, Any],
                       run_key: str | None) -> Success:
    """Running → SUCCESS under the batch lock, release the ready children, enqueue their messages
    and close the batch if nothing is pending: one transaction, one round trip."""
    b, ident = run.batch_id, run.id
    rows = conn.script(
        # The lock is a statement of its own: the next statement's snapshot sees every other
        # completion of the batch, so of two parents finishing at once exactly one releases their child.
        f"SELECT 'lock' FROM task_batch WHERE id = {sql_literal(b)} FOR NO KEY UPDATE; "
        + conn.execute(_SUCCEED, b=b, t=run.task_id, id=ident, a=run.attempt, now=now,
                       o=json.dumps(output, default=str), k=run_key) + "; "
        + conn.execute(_CLOSE, b=b, id=ident, now=now))
    fin = next((r for r in rows if r[0] == "fin"), None)
    if fin is None:
        raise RuntimeError("succeed_run_direct: the script returned no result")
    closed = next(({"status": r[1], "counts": r[2]} for r in rows if r[0] == "closed"), None)
    return Success(bool(fin[1]), list(fin[2] or []), list(fin[3] or []), closed)
