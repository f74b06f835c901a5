"""The `files` aggregate: claim an object version once, record how it ended."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Boolean, bindparam, exists, func, literal_column, select, text, true, union_all, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from database.models import File, TaskBatch

if TYPE_CHECKING:
    from database.direct import Direct
    from values.messages import ObjectRef

ClaimState = Literal["claimed", "done", "busy"]


@dataclass(frozen=True)
class Claim:
    state: ClaimState
    file_id: int
    token: str | None = None
    attempts: int = 0
    status: str | None = None
    batch_id: int | None = None
    unarchived: bool = False
    """Done, but the raw object was never moved to archive/ or failed/ (the attempt that finished
    it died or failed right after its commit): a redelivery moves it."""


def claim_file(*, session: Session, ref: ObjectRef, lease_seconds: int) -> Claim:
    """Atomically claim `(bucket, name, generation)` with INSERT ... ON CONFLICT.

    A NEW row, or a PROCESSING row whose lease expired, is (re)claimed with a fresh token.
    SUCCESS / ERROR rows are done (a redelivered event is a no-op); a PROCESSING row within its
    lease is busy (another instance is on it).
    """
    token = str(uuid.uuid4())
    version = {"bucket": ref.bucket, "name": ref.name, "generation": ref.generation}
    # One statement (one round trip) whether the version is claimed or already recorded: a
    # redelivered event costs a single query. The second branch reads the statement's snapshot.
    row = session.execute(_claim_statement(), {
        **version, "md5": ref.md5, "crc32c": ref.crc32c, "size": ref.size, "content_type": ref.content_type,
        "content_encoding": ref.content_encoding, "event_id": ref.event_id, "token": token,
        "lease": lease_seconds}).first()
    if row is not None and row.claimed:
        return Claim("claimed", row.id, token, row.attempts, "PROCESSING", row.batch_id)
    existing = row if row is not None else session.execute(_recorded_statement(), version).one()
    # (None only when another instance inserted the row after this statement's snapshot.)
    state: ClaimState = "busy" if existing.status == "PROCESSING" else "done"
    # A superseded version (SUCCESS, nothing loaded) is left where it is, as when it finished.
    unarchived = existing.archived_uri is None and (
        existing.status == "ERROR" or (existing.status == "SUCCESS" and existing.rows_loaded is not None))
    return Claim(state, existing.id, None, existing.attempts, existing.status, existing.batch_id, unarchived)


@functools.cache
def _recorded_statement() -> Any:
    files = File.__table__
    return (select(files.c.id, files.c.status, files.c.attempts, files.c.batch_id, files.c.archived_uri,
                   files.c.rows_loaded, literal_column("false", Boolean).label("claimed"))
            .where(files.c.bucket == bindparam("bucket"), files.c.name == bindparam("name"),
                   files.c.generation == bindparam("generation")))


@functools.cache
def _claim_statement() -> Any:
    """The claim, built once per process (Core table, bound values): only its execution is paid per file."""
    files: Any = File.__table__
    fields = ("bucket", "name", "generation", "md5", "crc32c", "size", "content_type", "content_encoding",
              "event_id")
    base = insert(files).values(status="PROCESSING", claim_token=bindparam("token"), claimed_at=func.now(),
                                attempts=1, **{f: bindparam(f) for f in fields})
    lease_expired = (files.c.status == "PROCESSING") & (
        files.c.claimed_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, bindparam("lease"))
    )
    claimed = base.on_conflict_do_update(
        index_elements=[files.c.bucket, files.c.name, files.c.generation],
        set_={"status": "PROCESSING", "claim_token": bindparam("token"), "claimed_at": func.now(),
              "attempts": files.c.attempts + 1, "updated_at": func.now()},
        where=(files.c.status == "NEW") | lease_expired,
    ).returning(files.c.id, files.c.status, files.c.attempts, files.c.batch_id, files.c.archived_uri,
                files.c.rows_loaded, literal_column("true", Boolean).label("claimed")).cte("claimed")
    return union_all(select(claimed), _recorded_statement().where(~exists(select(claimed.c.id))))


def release_claim(*, session: Session, file_id: int, token: str, error: str | None = None) -> None:
    """Give a claim back after a transient failure so the redelivered event can retake it at once.

    The failure is kept (`last_error`, `released_at`): if no redelivery comes, the file is stalled.
    """
    session.execute(update(File).where(File.id == file_id, File.claim_token == token,
                                       File.status == "PROCESSING")
                    .values(status="NEW", claim_token=None, claimed_at=None, released_at=func.now(),
                            last_error=error[:4000] if error else File.last_error))


# -- stalled files: given back (or crashed) and never redelivered ----------------------------------
def stall_cutoffs(now: datetime, *, stall_seconds: int, lease_seconds: int) -> tuple[datetime, datetime]:
    """(released before, claimed before): a NEW file released before the first, or a PROCESSING
    file claimed before the second (its lease long expired), has stopped moving."""
    released_before = now - timedelta(seconds=stall_seconds)
    return released_before, released_before - timedelta(seconds=lease_seconds)


def stalled_files(*, session: Session, cutoffs: tuple[datetime, datetime], limit: int = 100,
                  tenant: str | None = None) -> list[dict[str, Any]]:
    """Files that stopped moving, oldest first, with their last transient error.

    Stalled: given back (NEW) before the first cutoff, claimed (PROCESSING) before the second, or
    NEW with its batch closed because the deliverer gave up (`close_stalled_batches`).
    """
    released_before, claimed_before = cutoffs
    given_up = select(TaskBatch.id).where(TaskBatch.id == File.batch_id, TaskBatch.status == "ERROR",
                                          TaskBatch.summary.has_key("stalled")).exists()
    rows = session.execute(
        select(File.id, File.bucket, File.name, File.generation, File.status, File.attempts, File.last_error,
               File.released_at, File.claimed_at, File.batch_id, File.size, File.md5, File.crc32c,
               File.content_type, File.content_encoding, File.tenant_id)
        .where(((File.status == "NEW") & ((File.released_at < released_before) | given_up))
               | ((File.status == "PROCESSING") & (File.claimed_at < claimed_before)),
               File.tenant_id == tenant if tenant is not None else true())
        .order_by(File.id).limit(limit)).mappings()
    return [dict(r) | {"since": r["released_at"] or r["claimed_at"]} for r in rows]


def close_stalled_batches(*, session: Session, file_ids: list[int], now: datetime) -> list[int]:
    """Close (ERROR) the batches of these files while they are still not loaded and ran no task;
    returns the files whose batch this closed (newly stalled).

    A batch whose file never loaded must not stay PROCESSING; `attach` reopens it when the file is
    picked up again (the sweep, `caf backfill`, a late redelivery).
    """
    if not file_ids:
        return []
    rows = session.execute(text(
        "UPDATE task_batch b SET status = 'ERROR', finished_at = :now, updated_at = now(),"
        " summary = b.summary || jsonb_build_object('stalled', f.id, 'file', f.id, 'error',"
        "  'file ' || f.id || ' (' || f.name || ') was not loaded: ' || COALESCE(f.last_error, 'no redelivery came')"
        "  || '; the sweep or caf backfill retries it')"
        " FROM files f WHERE f.batch_id = b.id AND f.id = ANY(CAST(:ids AS bigint[]))"
        " AND f.status IN ('NEW', 'PROCESSING') AND b.status = 'PROCESSING'"
        " AND NOT EXISTS (SELECT 1 FROM task_log l WHERE l.batch_id = b.id) RETURNING f.id"),
        {"ids": list(file_ids), "now": now})
    return sorted(r[0] for r in rows)


def lock_object_name(*, session: Session, bucket: str, name: str) -> None:
    """Serialise loads of one object name (all generations) for the rest of the transaction."""
    session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                    {"key": f"caf-object:{bucket}/{name}"})


def newer_generation_loaded(*, session: Session, bucket: str, name: str, generation: int) -> int | None:
    """The newest SUCCESS generation above `generation` of the same object name, if any."""
    return newer_and_generation_ids(session=session, bucket=bucket, name=name, generation=generation)[0]


def newer_and_generation_ids(*, session: Session, bucket: str, name: str,
                             generation: int) -> tuple[int | None, list[int]]:
    """`newer_generation_loaded` and `generation_ids` in one query (one round trip)."""
    row = session.execute(_NEWER_AND_IDS, {"bucket": bucket, "name": name, "generation": generation}).one()
    return row[0], sorted(row[1] or [])


_NEWER_AND_IDS = text(
    "SELECT max(generation) FILTER (WHERE generation > :generation AND status = 'SUCCESS'"
    " AND rows_loaded IS NOT NULL), array_agg(id) FROM files WHERE bucket = :bucket AND name = :name")


def generation_ids(*, session: Session, bucket: str, name: str) -> list[int]:
    """Ids of every recorded generation of an object name: their rows are replaced by a new load."""
    return list(session.scalars(select(File.id).where(File.bucket == bucket, File.name == name)))


def attach(*, session: Session, file_id: int, table_id: int | None, tenant_id: str | None,
           root: str | None) -> int:
    """Record the matched table and give the file its batch (created once, reused on takeover).

    One statement: the file row is locked, the batch inserted only when the file has none yet.
    """
    batch_id = session.execute(text(
        "WITH f AS (SELECT id, batch_id, tenant_id FROM files WHERE id = :file_id FOR UPDATE), "
        "b AS (INSERT INTO task_batch (trigger, root, tenant_id) "
        "      SELECT 'file', :root, coalesce(:tenant_id, f.tenant_id) FROM f WHERE f.batch_id IS NULL "
        "      RETURNING id) "
        "UPDATE files SET table_id = :table_id, tenant_id = coalesce(:tenant_id, files.tenant_id), "
        "       batch_id = coalesce(files.batch_id, (SELECT id FROM b)), updated_at = now() "
        "WHERE files.id = :file_id RETURNING files.batch_id"),
        {"file_id": file_id, "root": root, "tenant_id": tenant_id or None, "table_id": table_id}).scalar_one()
    return int(batch_id)


def reopen_stalled_batch(*, session: Session, batch_id: int) -> bool:
    """A file picked up again after it stalled: its batch (closed by `close_stalled_batches`) goes on."""
    result = session.execute(text(
        "UPDATE task_batch SET status = 'PROCESSING', finished_at = NULL, updated_at = now(),"
        " summary = summary - ARRAY['stalled', 'error', 'file']"
        " WHERE id = :b AND status = 'ERROR' AND summary->'stalled' IS NOT NULL"), {"b": batch_id})
    return bool(getattr(result, "rowcount", 0))


def finish(*, session: Session, file_id: int, token: str, status: str, **fields: Any) -> bool:
    """Set the final status if this claim still owns the row; False if another instance took over."""
    result = session.execute(_finish_statement(tuple(sorted(fields))), {
        "file_id_": file_id, "token_": token, "status_": status, **{f"{k}_": v for k, v in fields.items()}})
    return bool(getattr(result, "rowcount", 0))


@functools.lru_cache(maxsize=32)
def _finish_statement(fields: tuple[str, ...]) -> Any:
    """`finish`'s UPDATE for one set of recorded fields, built once (Core table, bound values)."""
    files: Any = File.__table__
    return (update(files)
            .where(files.c.id == bindparam("file_id_"), files.c.claim_token == bindparam("token_"),
                   files.c.status == "PROCESSING")
            .values(status=bindparam("status_"), finished_at=func.now(), updated_at=func.now(),
                    **{f: bindparam(f"{f}_") for f in fields}))


def close_batch(*, session: Session, batch_id: int | None, status: str, summary: dict[str, Any]) -> None:
    if batch_id is None:
        return
    session.execute(update(TaskBatch).where(TaskBatch.id == batch_id, TaskBatch.status == "PROCESSING")
                    .values(status=status, summary=summary, finished_at=func.now()))


def record_archived(connection: Direct, *, file_id: int, uri: str) -> None:
    """Record where the raw object was moved: one round trip, its own transaction.

    `uri` holds the object's name: written by `sql_literal` (escaped E'' text, NUL refused).
    The commit does not wait for its WAL flush: the object is already in archive/ and its status
    durable, so a crash in that fraction of a second loses only this note (a redelivery then
    finds nothing left to move).
    """
    from database.direct import NOT_DURABLE, sql_literal

    connection.script(f"BEGIN; {NOT_DURABLE}; UPDATE files SET archived_uri = "
                      f"{sql_literal(uri)}, updated_at = now() WHERE id = {sql_literal(int(file_id))}; COMMIT")
