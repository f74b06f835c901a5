"""Finalize an upload job: verify every object against its declaration, then hand verified files on.

verify (outside any transaction: objects may be large) → record under the job's row lock →
stage (staging entities: rows as JSONB, idempotent) or load (registered warehouse tables:
through the raw-file handler) → summary and validation-report artifacts → job status.
Everything tenant-owned is read and written in `tenant_session`; only the warehouse hand-off,
a system step, runs as the system role with the tenant passed explicitly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.storage.base import ObjectNotFound
from database import jobs
from database.tenancy import tenant_session
from errors import PermanentError, TransientError

if TYPE_CHECKING:
    from app.deps import Deps
    from database.job_models import JobFile, StagingEntity

log = logging.getLogger("caf.jobs")
MAX_REPORTED_ERRORS = 10_000  # validation-report lines per file
LANDING_BUCKET = "landing"


class JobConflict(PermanentError):
    http_status = 409


@dataclass
class Outcome:
    """What became of one file in this finalize."""

    name: str
    status: str
    error: str | None = None
    target: str | None = None
    rows: int = 0
    rows_with_errors: int = 0
    report: list[dict[str, Any]] = field(default_factory=list)


def finalize(*, job_id: uuid.UUID, tenant: str, deps: Deps, upload_bucket: str) -> bool:
    """Run the finalize of `job_id` as `tenant`; False when the tenant cannot see that job."""
    with tenant_session(deps.tenant_sessions, tenant) as session:
        job = jobs.get_job(session=session, job_id=job_id)
        if job is None:
            return False
        if job.status == "canceled":
            raise JobConflict(f"job {job_id} is canceled")
        pending = [f for f in jobs.job_files(session=session, job_id=job_id) if f.status != "verified"]
    checks = {f.id: verify_object(deps, f) for f in pending}  # no transaction open while reading objects
    with tenant_session(deps.tenant_sessions, tenant) as session:
        job = jobs.get_job(session=session, job_id=job_id, lock=True)  # serialises concurrent finalizes
        assert job is not None
        files = jobs.job_files(session=session, job_id=job_id)
        for f in files:
            if f.id in checks and f.status != "verified":
                jobs.record_verification(session=session, job_file=f, error=checks[f.id], now=deps.clock())
        jobs.set_status(session=session, job=job, status="ingesting")
    outcomes = [_hand_on(f, deps) if f.status == "verified" else Outcome(f.name, "failed", f.error) for f in files]
    with tenant_session(deps.tenant_sessions, tenant) as session:
        job = jobs.get_job(session=session, job_id=job_id, lock=True)
        assert job is not None
        by_name = {f.name: f for f in jobs.job_files(session=session, job_id=job_id)}
        for o in outcomes:
            if o.status == "failed" and by_name[o.name].status == "verified":  # ingestion refused it
                jobs.record_verification(session=session, job_file=by_name[o.name], error=o.error, now=deps.clock())
            if o.report:
                _write_artifact(deps, session, job, upload_bucket, "validation_report",
                                f"_artifacts/{o.name}.validation.ndjson", o.report, {"file": o.name})
        failed = [o for o in outcomes if o.status == "failed"]
        status = "failed" if len(failed) == len(outcomes) else "done"
        error = f"{len(failed)} of {len(outcomes)} file(s) failed" if failed else None
        summary = {"job_id": str(job_id), "status": status, "files": [
            {k: v for k, v in o.__dict__.items() if k != "report"} for o in outcomes]}
        _write_artifact(deps, session, job, upload_bucket, "summary", "_artifacts/summary.json", summary,
                        {"files": len(outcomes), "failed": len(failed)})
        jobs.set_status(session=session, job=job, status=status, error=error, now=deps.clock())
    log.info("job %s finalized: %s (%s of %s files failed)", job_id, status, len(failed), len(outcomes))
    return True


# -- verification -------------------------------------------------------------------------------
def verify_object(deps: Deps, f: JobFile) -> str | None:
    """None when the uploaded object matches the declaration, else the reason it does not."""
    try:
        info = deps.storage.stat(f.bucket, f.storage_path)
    except ObjectNotFound:
        return "not uploaded"
    if info.size != f.size:
        return f"size mismatch: declared {f.size} bytes, uploaded {info.size}"
    if info.content_type and info.content_type.split(";")[0].strip() != f.content_type.split(";")[0].strip():
        return f"content type mismatch: declared {f.content_type}, uploaded {info.content_type}"
    algo, declared = f.checksum.split(":", 1)
    digest = hashlib.new(algo, usedforsecurity=False)
    with deps.storage.open_read(f.bucket, f.storage_path, info.generation) as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != declared:
        return f"{algo} mismatch: declared {declared}, uploaded {digest.hexdigest()}"
    return None


# -- hand-off ---------------------------------------------------------------------------------
def _hand_on(f: JobFile, deps: Deps) -> Outcome:
    try:
        with tenant_session(deps.tenant_sessions, f.tenant_id) as session:
            entity = jobs.match_staging_entity(session=session, tenant_id=f.tenant_id, name=f.name)
        if entity is not None:
            return _stage(f, entity, deps)
        return _load(f, deps)
    except PermanentError as exc:
        log.warning("job file %s (%s) not ingested: %s", f.id, f.name, exc)
        return Outcome(f.name, "failed", f"ingestion: {exc}")
    except TransientError:
        raise  # database or store away: the finalize answers 500 and can simply be repeated
    except Exception as exc:  # noqa: BLE001 - a bug or a refused row must end this file, not the job
        # The message of a database error quotes the offending row (PostgreSQL's CONTEXT): only its
        # type and the stack are logged. Staging a file is one transaction: none of its rows stay.
        log.error("job file %s (%s) failed unexpectedly: %s (message withheld: it may quote row data)\n%s",
                  f.id, f.name, type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)))
        return Outcome(f.name, "failed", f"ingestion failed unexpectedly ({type(exc).__name__}); "
                                         "nothing of this file was kept")


def _stage(f: JobFile, entity: StagingEntity, deps: Deps) -> Outcome:
    from pipeline.staging_rows import read_records

    outcome = Outcome(f.name, "staged", target=f"staging:{entity.name}")
    provenance = {"entity": entity.name, "column_map": dict(entity.column_map),
                  "file": {"id": f.id, "name": f.name, "checksum": f.checksum, "bucket": f.bucket,
                           "storage_path": f.storage_path}}
    batch: list[dict[str, Any]] = []
    with deps.storage.open_read(f.bucket, f.storage_path) as stream, \
            tenant_session(deps.tenant_sessions, f.tenant_id) as session:
        for rec in read_records(stream, format=entity.format, name=f.name, column_map=entity.column_map,
                                required=entity.required, options=entity.options):
            batch.append({"job_id": f.job_id, "job_file_id": f.id, "entity_id": entity.id, "tenant_id": f.tenant_id,
                          "source_row_num": rec.row, "source_row_id": f"{f.name}#{rec.row}",
                          "row_checksum": rec.checksum, "payload": rec.payload, "provenance": provenance,
                          "validation_errors": rec.errors})
            outcome.rows += 1
            if rec.errors:
                outcome.rows_with_errors += 1
                if len(outcome.report) < MAX_REPORTED_ERRORS:
                    outcome.report.append({"row": rec.row, "errors": rec.errors})
            if len(batch) >= jobs.STAGING_CHUNK:
                jobs.upsert_staging_rows(session=session, rows=batch)
                batch.clear()
        jobs.upsert_staging_rows(session=session, rows=batch)
    return outcome


def _load(f: JobFile, deps: Deps) -> Outcome:
    """Copy to the landing bucket and ingest through the raw-file handler (system role)."""
    from sqlalchemy import select

    from database.models import File
    from database.registry import match_table
    from database.session import unit_of_work
    from handlers import raw_file
    from values.messages import ObjectRef

    landing = str(getattr(getattr(deps.settings, "jobs", None), "landing_bucket", LANDING_BUCKET))
    landing_name = f.name if f.tenant_id == "default" else f"{f.tenant_id}/{f.name}"
    with unit_of_work(deps.sessions) as session:  # refuses a name under another tenant's prefix
        table = match_table(session=session, bucket=landing, name=landing_name, tenant_id=f.tenant_id,
                            per_tenant_datasets=deps.settings.jobs.per_tenant_datasets)
    if table is None:
        return Outcome(f.name, "failed", f"no staging entity or table registered for {landing_name}")
    with tempfile.TemporaryDirectory(prefix="caf-job-") as tmp:
        local = Path(tmp) / "object"
        with deps.storage.open_read(f.bucket, f.storage_path) as src, local.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        info = deps.storage.put_file(landing, landing_name, local, content_type=f.content_type)
    raw_file.handle(ObjectRef.build(bucket=info.bucket, name=info.name, generation=info.generation,
                                    size=info.size, md5=info.md5, content_type=f.content_type), deps,
                    tenant=f.tenant_id)
    with unit_of_work(deps.sessions) as session:
        row = session.scalars(select(File).where(File.bucket == info.bucket, File.name == info.name,
                                                 File.generation == info.generation)).one()
        status, error, rows = row.status, row.error_message, row.rows_loaded or 0
    if status != "SUCCESS":
        return Outcome(f.name, "failed", f"load into {table.qualified}: {error}", target=table.qualified)
    return Outcome(f.name, "loaded", target=table.qualified, rows=rows)


def _write_artifact(deps: Deps, session: Any, job: Any, bucket: str, type_: str, suffix: str, content: Any,
                    details: dict[str, Any]) -> None:
    if isinstance(content, list):
        data = "".join(json.dumps(line, default=str) + "\n" for line in content).encode()
    else:
        data = json.dumps(content, indent=2, default=str).encode()
    path = f"{jobs.storage_path(job, suffix)}"
    deps.storage.put_bytes(bucket, path, data, content_type="application/json")
    jobs.upsert_artifact(session=session, job=job, type=type_, storage_path=f"{bucket}/{path}",
                         checksum="sha256:" + hashlib.sha256(data).hexdigest(), details=details)
