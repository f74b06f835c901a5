"""Operator actions: retry a failed file, restart a batch; and mapping stored URIs back to objects.

Retrying a file re-delivers its raw object as a new object version, exactly as the platform would:
the object moves from `failed/NAME` back to `NAME` (a new generation), then raw-file ingestion
handles it. In production the move also fires the bucket's finalize event; that second delivery
finds the version already claimed and is a no-op.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, select, update

from database.models import File, TaskLog
from database.session import unit_of_work
from errors import PermanentError

if TYPE_CHECKING:
    from adapters.storage.base import ObjectInfo
    from app.deps import Deps
    from config.settings import Settings

log = logging.getLogger("caf.web")


class NotFound(PermanentError):
    http_status = 404


class Conflict(PermanentError):
    http_status = 409


def object_of(uri: str | None, settings: Settings) -> tuple[str, str] | None:
    """(bucket, name) of a `gs://` or local `file://` URI written by the storage adapter, else None."""
    if not uri:
        return None
    if uri.startswith("gs://"):
        bucket, _, name = uri.removeprefix("gs://").partition("/")
        return (bucket, name) if bucket and name else None
    root = settings.storage_root
    if uri.startswith("file://") and root is not None:
        try:
            parts = Path(uri.removeprefix("file://")).relative_to(root).parts
        except ValueError:
            return None
        return (parts[0], "/".join(parts[1:])) if len(parts) >= 2 else None
    return None


def retry_file(file_id: int, deps: Deps, *, tenant: str | None = None) -> int:
    """Re-deliver a file in ERROR as a new version of its object; returns the new file's id."""
    from handlers import raw_file
    from values.messages import ObjectRef

    cfg = deps.settings.ingest
    with unit_of_work(deps.sessions) as session:
        row = session.get(File, file_id)
        if row is None or (tenant is not None and row.tenant_id != tenant):
            raise NotFound(f"no file {file_id}")
        if row.status != "ERROR":
            raise Conflict(f"file {file_id} is {row.status}; only a file in ERROR can be retried")
        newer = session.execute(select(File.id, File.status).where(
            File.bucket == row.bucket, File.name == row.name, File.generation > row.generation)
            .order_by(File.generation.desc()).limit(1)).first()
        if newer is not None:
            raise Conflict(f"a newer version of {row.name} arrived since (file {newer.id}, {newer.status}); "
                           "retry that one if it failed")
        bucket, name, generation = row.bucket, row.name, row.generation
        content_type, content_encoding, archived = row.content_type, row.content_encoding, row.archived_uri
    source = object_of(archived, deps.settings)
    if source is None:  # never moved (ingest.move_processed off, or the move failed): still under its name?
        source = (bucket, name) if _generation(deps, bucket, name) == generation else (
            bucket, f"{cfg.failed_prefix}{name}")
    info = _restore(deps, source, bucket, name, generation)
    ref = ObjectRef(bucket=bucket, name=name, generation=info.generation, size=info.size, md5=info.md5,
                    crc32c=info.crc32c, content_type=content_type or info.content_type,
                    content_encoding=content_encoding or info.content_encoding, event_id=f"retry-of-{file_id}")
    log.info("retrying file %s as generation %s of %s", file_id, info.generation, name)
    raw_file.handle(ref, deps)
    with unit_of_work(deps.sessions) as session:
        new_id = session.scalar(select(File.id).where(File.bucket == bucket, File.name == name,
                                                      File.generation == info.generation))
        if new_id is None:
            raise PermanentError(f"retry of file {file_id}: the new version was not recorded")
        session.execute(update(File).where(File.id == file_id).values(
            detail=f"retried as file {new_id}", updated_at=func.now()))
    return int(new_id)


def _generation(deps: Deps, bucket: str, name: str) -> int | None:
    try:
        return deps.storage.stat(bucket, name).generation
    except PermanentError:
        return None


def _restore(deps: Deps, source: tuple[str, str], bucket: str, name: str, generation: int) -> ObjectInfo:
    """Put the failed object back under its name as a new generation."""
    storage = deps.storage
    src_bucket, src_name = source
    if src_name != name or src_bucket != bucket:
        current = _generation(deps, bucket, name)
        if current is not None:
            raise Conflict(f"{bucket}/{name} exists again (generation {current}); it is ingested by its own event")
        if storage.move(src_bucket, src_name, name) is None:
            raise Conflict(f"the raw object of {name} is gone from {src_bucket}/{src_name}; upload the file again")
    info = storage.stat(bucket, name)
    if info.generation == generation:
        # Same version still (the object never moved, or the local adapter, whose generation is
        # the file's mtime, kept it through the rename): write a copy, which is a new version.
        with tempfile.TemporaryDirectory(prefix="caf-retry-") as tmp:
            copy = Path(tmp) / "object"
            with storage.open_read(bucket, name) as src, copy.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            info = storage.put_file(bucket, name, copy, content_type=info.content_type)
    return info


def restart_batch(batch_id: int, deps: Deps, *, tenant: str | None = None) -> list[int]:
    """Re-run the failed and skipped task runs of a finished batch (engine.scheduler.restart_batch)."""
    from database.models import TaskBatch
    from engine import scheduler

    with unit_of_work(deps.sessions) as session:
        batch = session.get(TaskBatch, batch_id)
        if batch is None or (tenant is not None and batch.tenant_id != tenant):
            raise NotFound(f"no batch {batch_id}")
        if batch.status == "PROCESSING":
            raise Conflict(f"batch {batch_id} is still running; restart it once it has ended")
        failed = session.scalar(select(func.count()).select_from(TaskLog).where(
            TaskLog.batch_id == batch_id, TaskLog.status.in_(("ERROR", "SKIPPED"))))
        if not failed:
            file_id = session.scalar(select(File.id).where(File.batch_id == batch_id, File.status == "ERROR"))
            hint = f"; its file failed: retry file {file_id}" if file_id else ""
            raise Conflict(f"batch {batch_id} has no failed or skipped task run to restart{hint}")
    again = scheduler.restart_batch(deps, batch_id)
    log.info("batch %s restarted from the operator page: %s task(s)", batch_id, len(again))
    return again
