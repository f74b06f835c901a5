"""The upload-job aggregate: open or reopen a job, its files, verification, artifacts, staged rows.

Functions take the session of the caller's unit of work; the API calls them inside
`database.tenancy.tenant_session`, so row-level security scopes every statement to the tenant.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from database.globs import glob_matches
from database.job_models import (
    OPEN_JOB_STATUSES,
    STAGING_FORMATS,
    Artifact,
    Job,
    JobFile,
    StagingEntity,
    StagingRow,
)
from errors import PermanentError

_HEX = {"sha256": re.compile(r"[0-9a-f]{64}"), "md5": re.compile(r"[0-9a-f]{32}")}  # used with fullmatch
STAGING_CHUNK = 500  # rows per INSERT ... ON CONFLICT statement


class InvalidDeclaration(PermanentError):
    """The declared file set is not acceptable."""

    http_status = 400


@dataclass(frozen=True)
class DeclaredFile:
    name: str
    checksum: str
    """Normalised `sha256:<hex>` or `md5:<hex>` (see `normalize_checksum`)."""
    size: int
    content_type: str


def normalize_checksum(value: str) -> str:
    """`sha256:<hex>` / `md5:<hex>`; bare hex is recognised by length, md5 may be GCS's base64."""
    raw = value.strip()
    algo, sep, digest = raw.partition(":")
    if not sep:
        algo, digest = {64: "sha256", 32: "md5"}.get(len(raw), "?"), raw
    algo = algo.lower()
    if algo == "md5" and not _HEX["md5"].fullmatch(digest.lower()):
        import base64
        import binascii

        try:
            digest = base64.b64decode(digest, validate=True).hex()
        except (binascii.Error, ValueError):
            pass
    digest = digest.lower()
    if algo not in _HEX or not _HEX[algo].fullmatch(digest):
        raise InvalidDeclaration(f"checksum {value[:100]!r} is not sha256:<64 hex> or md5:<32 hex>")
    return f"{algo}:{digest}"


def job_checksum(files: Iterable[DeclaredFile]) -> str:
    """sha256 of the sorted file checksums."""
    return hashlib.sha256("\n".join(sorted(f.checksum for f in files)).encode()).hexdigest()


def fileset_key(files: Iterable[DeclaredFile]) -> str:
    canonical = sorted((f.name, f.checksum, f.size, f.content_type) for f in files)
    return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()


# -- jobs and files ---------------------------------------------------------------------------
def open_job(*, session: Session, tenant_id: str, requested_by: str, files: Sequence[DeclaredFile],
             bucket: str) -> tuple[Job, bool]:
    """Open a job for `files`, or return the tenant's open job for the same file set.

    Returns:
        (job, created). Concurrent identical declarations meet on the partial unique index
        `uq_job_open_fileset`: one inserts, the others get its job.
    """
    key = fileset_key(files)
    stmt = (insert(Job).values(tenant_id=tenant_id, requested_by=requested_by, checksum=job_checksum(files),
                               fileset_key=key, status="open")
            .on_conflict_do_nothing(index_elements=["tenant_id", "fileset_key"],
                                    index_where=Job.status.in_(OPEN_JOB_STATUSES))
            .returning(Job.id))
    new_id = session.execute(stmt).scalar()
    if new_id is None:
        existing = session.scalars(select(Job).where(Job.tenant_id == tenant_id, Job.fileset_key == key,
                                                     Job.status.in_(OPEN_JOB_STATUSES))).one()
        return existing, False
    job = session.get_one(Job, new_id)
    add_files(session=session, job=job, files=files, bucket=bucket)
    return job, True


def storage_path(job: Job, name: str) -> str:
    """Where a job's file is uploaded: `<tenant>/<job id>/<declared name>`."""
    return f"{job.tenant_id}/{job.id}/{name}"


def add_files(*, session: Session, job: Job, files: Sequence[DeclaredFile], bucket: str) -> list[JobFile]:
    rows = [JobFile(job_id=job.id, tenant_id=job.tenant_id, name=f.name, checksum=f.checksum, size=f.size,
                    content_type=f.content_type, bucket=bucket, storage_path=storage_path(job, f.name))
            for f in files]
    session.add_all(rows)
    session.flush()
    return rows


def parse_job_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


def get_job(*, session: Session, job_id: uuid.UUID, lock: bool = False) -> Job | None:
    """The job if the session may see it (row-level security hides other tenants' jobs)."""
    query = select(Job).where(Job.id == job_id)
    return session.scalars(query.with_for_update() if lock else query).one_or_none()


def job_files(*, session: Session, job_id: uuid.UUID) -> list[JobFile]:
    return list(session.scalars(select(JobFile).where(JobFile.job_id == job_id).order_by(JobFile.id)))


def job_artifacts(*, session: Session, job_id: uuid.UUID) -> list[Artifact]:
    return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.id)))


def file_by_path(*, session: Session, bucket: str, path: str) -> JobFile | None:
    return session.scalars(select(JobFile).where(JobFile.bucket == bucket, JobFile.storage_path == path)
                           ).one_or_none()


def mark_uploaded(*, session: Session, job_file: JobFile) -> None:
    """An object arrived through the local upload endpoint: file `uploaded`, job `uploading`."""
    if job_file.status in ("pending", "failed"):
        job_file.status, job_file.error = "uploaded", None
    session.execute(update(Job).where(Job.id == job_file.job_id, Job.status == "open").values(status="uploading"))
    session.flush()


def record_verification(*, session: Session, job_file: JobFile, error: str | None, now: datetime) -> None:
    """`verified` when `error` is None, else `failed` with the reason."""
    job_file.status = "failed" if error else "verified"
    job_file.error = error
    job_file.verified_at = now
    session.flush()


def set_status(*, session: Session, job: Job, status: str, error: str | None = None,
               now: datetime | None = None) -> None:
    job.status = status
    job.error = error
    if now is not None:
        job.finalized_at = now
    session.flush()


def upsert_artifact(*, session: Session, job: Job, type: str, storage_path: str, checksum: str | None,
                    details: dict[str, Any]) -> None:
    """One artifact per (job, storage path): a re-finalize refreshes it instead of adding another."""
    values = {"job_id": job.id, "tenant_id": job.tenant_id, "type": type, "storage_path": storage_path,
              "checksum": checksum, "metadata": details}
    stmt = insert(cast(Table, Artifact.__table__)).values(**values)
    session.execute(stmt.on_conflict_do_update(
        index_elements=["job_id", "storage_path"],
        set_={"type": stmt.excluded.type, "checksum": stmt.excluded.checksum,
              "metadata": stmt.excluded.metadata, "updated_at": func.now()}))


# -- staging ------------------------------------------------------------------------------------
def sync_staging_entity(*, session: Session, tenant_id: str, name: str, source_glob: str, format: str,
                        column_map: dict[str, str] | None = None, required: Sequence[str] = (),
                        options: dict[str, Any] | None = None) -> StagingEntity:
    """Create or update a staging entity (a `target: staging` definition); runs as the system role."""
    if format not in STAGING_FORMATS:
        raise InvalidDeclaration(f"staging entity {name}: format must be one of {', '.join(STAGING_FORMATS)}")
    entity = session.scalars(select(StagingEntity).where(StagingEntity.tenant_id == tenant_id,
                                                         StagingEntity.name == name)).one_or_none()
    if entity is None:
        entity = StagingEntity(tenant_id=tenant_id, name=name)
        session.add(entity)
    entity.source_glob, entity.format = source_glob, format
    entity.column_map, entity.required, entity.options = dict(column_map or {}), list(required), dict(options or {})
    session.flush()
    return entity


def match_staging_entity(*, session: Session, tenant_id: str, name: str) -> StagingEntity | None:
    """The tenant's staging entity whose glob matches the file name; the longest literal prefix wins."""
    candidates = [e for e in session.scalars(select(StagingEntity).where(StagingEntity.tenant_id == tenant_id))
                  if glob_matches(e.source_glob, name)]
    candidates.sort(key=lambda e: (len(re.split(r"[*?\[]", e.source_glob, maxsplit=1)[0]), e.name), reverse=True)
    return candidates[0] if candidates else None


def upsert_staging_rows(*, session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Insert staged rows, idempotent on (job_id, source_row_id): a re-finalize never duplicates.

    Each row is a dict of `staging` columns. Returns the number of rows written or refreshed.
    """
    table = cast(Table, StagingRow.__table__)
    written = 0
    for start in range(0, len(rows), STAGING_CHUNK):
        stmt = insert(table).values(list(rows[start:start + STAGING_CHUNK]))
        changed = (table.c.row_checksum != stmt.excluded.row_checksum) | (
            table.c.provenance != stmt.excluded.provenance) | (
            table.c.validation_errors != stmt.excluded.validation_errors)
        stmt = stmt.on_conflict_do_update(
            index_elements=["job_id", "source_row_id"],
            set_={name: stmt.excluded[name] for name in ("job_file_id", "entity_id", "source_row_num",
                                                          "row_checksum", "payload", "provenance",
                                                          "validation_errors")} | {"updated_at": func.now()},
            where=changed)
        written += session.execute(stmt).rowcount or 0  # type: ignore[attr-defined]
    return written


def staging_counts(*, session: Session, job_id: uuid.UUID) -> dict[int, dict[str, int]]:
    """Per job file: staged rows and rows with validation errors."""
    query = (select(StagingRow.job_file_id, func.count(),
                    func.count().filter(text("jsonb_array_length(validation_errors) > 0")))
             .where(StagingRow.job_id == job_id).group_by(StagingRow.job_file_id))
    return {fid: {"rows": n, "rows_with_errors": bad} for fid, n, bad in session.execute(query)}
