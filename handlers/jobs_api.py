"""Operator routes for upload jobs (`POST /jobs`, `GET /jobs/<id>`, `POST /jobs/<id>/finalize`)
and the local signed-upload endpoint (`PUT /uploads/<bucket>/<object>`).

Job routes need a bearer token (handlers.auth); the tenant comes from the verified identity and
every database statement runs in `tenant_session`, so another tenant's job is simply not there
(404). Upload URLs carry their own authority: an HMAC signature with expiry and content type.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from database import jobs
from database.tenancy import tenant_session
from errors import PermanentError
from handlers import auth
from handlers.job_finalize import finalize

if TYPE_CHECKING:
    from app.deps import Deps
    from database.job_models import Artifact, Job, JobFile

log = logging.getLogger("caf.jobs_api")
_JOB = re.compile(r"^/jobs/(?P<id>[^/]+)(?P<finalize>/finalize)?$")
MAX_FILES = 1000
MAX_NAME_BYTES = 900
"""A declared name in UTF-8 bytes: with `<tenant>/<job id>/` (≤ 101 bytes) it stays within GCS's 1024."""
UPLOAD_BUCKET = "uploads"


class _DeclaredFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    checksum: str = Field(min_length=1, max_length=100)
    size: int = Field(ge=0)
    content_type: str = Field(min_length=1, max_length=255, pattern=r"^[\w.+-]+/[\w.+-]+(\s*;.*)?$")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        problem = object_name_problem(value)
        if problem:
            raise ValueError(problem)
        return value


def object_name_problem(name: str) -> str | None:
    """Why `name` cannot be a declared file name, or None.

    Checked on the raw `/` segments (a path library would quietly drop `.` and empty segments,
    and the object could then never be found again) and in UTF-8 bytes, the unit of GCS's
    1024-byte limit: `<tenant>/<job id>/` takes up to 101 of those.
    """
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "must be valid Unicode (no lone surrogates)"
    if size > MAX_NAME_BYTES:
        return f"must be at most {MAX_NAME_BYTES} bytes of UTF-8, not {size}"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "must not contain control characters"
    if any(segment in ("", ".", "..") for segment in name.split("/")):
        return "must be a relative object name without '.', '..' or empty segments"
    if name.startswith("_artifacts/"):
        return "must not start with _artifacts/ (reserved for the job's own artifacts)"
    return None


class _JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    files: list[_DeclaredFile] = Field(min_length=1, max_length=MAX_FILES)


def upload_bucket(deps: Deps) -> str:
    """Bucket the signed URLs upload to (`jobs.upload_bucket` when settings have it)."""
    section = getattr(deps.settings, "jobs", None)
    return str(getattr(section, "upload_bucket", UPLOAD_BUCKET))


def route(request: Any, deps: Deps) -> Any:
    """The answer for a jobs or uploads path; None when the path is not ours."""
    path = (request.path or "/").rstrip("/") or "/"
    if path.startswith("/uploads/"):
        return _leave_body_unread(*(_upload_or_refusal(request, deps) if request.method == "PUT"
                                    else _error("use PUT", 405)))
    if path != "/jobs" and not path.startswith("/jobs/"):
        return None
    try:
        identity = auth.authenticate(request, deps.settings.auth)
    except auth.Unauthorized as exc:
        return {"error": str(exc)}, 401, {"WWW-Authenticate": 'Bearer realm="caf"'}
    if path == "/jobs":
        return _create(request, deps, identity) if request.method == "POST" else _error("use POST", 405)
    match = _JOB.match(path)
    job_id = jobs.parse_job_id(match["id"]) if match else None
    if job_id is None:
        return _error(f"no such job: {path.removeprefix('/jobs/')}", 404)
    if match and match["finalize"]:
        if request.method != "POST":
            return _error("use POST", 405)
        if not finalize(job_id=job_id, tenant=identity.tenant, deps=deps, upload_bucket=upload_bucket(deps)):
            return _error(f"no such job: {job_id}", 404)
    elif request.method != "GET":
        return _error("use GET", 405)
    view = _view(deps, identity.tenant, job_id)
    return view if view is not None else _error(f"no such job: {job_id}", 404)


def _error(message: str, status: int) -> tuple[dict[str, str], int]:
    return {"error": message}, status


# -- POST /jobs ---------------------------------------------------------------------------------
def _create(request: Any, deps: Deps, identity: auth.Identity) -> Any:
    body = request.get_json(silent=True)
    try:
        declared = _JobRequest.model_validate(body if body is not None else {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return _error(f"invalid job request: {problems}", 400)
    names = [f.name for f in declared.files]
    if len(set(names)) != len(names):
        return _error("invalid job request: file names must be unique", 400)
    files = [jobs.DeclaredFile(f.name, jobs.normalize_checksum(f.checksum), f.size, f.content_type)
             for f in declared.files]
    bucket = upload_bucket(deps)
    with tenant_session(deps.tenant_sessions, identity.tenant) as session:
        job, created = jobs.open_job(session=session, tenant_id=identity.tenant, requested_by=identity.subject,
                                     files=files, bucket=bucket)
        rows = jobs.job_files(session=session, job_id=job.id)
    log.info("job %s %s for tenant %s by %s", job.id, "opened" if created else "reopened", identity.tenant,
             identity.subject)
    answer = _job_json(job, rows, [], {})
    answer["reopened"] = not created
    answer["uploads"] = _upload_urls(request, deps, rows)
    return answer, 201 if created else 200


def _upload_urls(request: Any, deps: Deps, rows: list[JobFile]) -> list[dict[str, Any]]:
    from adapters.storage.signing import build_signer, expiry

    ttl = deps.settings.auth.upload_url_ttl_seconds
    signer = build_signer(deps.settings, deps.storage, clock=deps.clock)
    return [{"name": f.name, "method": "PUT", "headers": signer.upload_headers(content_type=f.content_type,
                                                                              max_bytes=f.size),
             "url": signer.sign_put(bucket=f.bucket, name=f.storage_path, content_type=f.content_type,
                                    ttl_seconds=ttl, base_url=request.host_url, max_bytes=f.size),
             "expires_at": expiry(ttl, now=deps.clock())}
            for f in rows if f.status != "verified"]


# -- GET /jobs/<id> ----------------------------------------------------------------------------
def _view(deps: Deps, tenant: str, job_id: Any) -> dict[str, Any] | None:
    with tenant_session(deps.tenant_sessions, tenant) as session:
        job = jobs.get_job(session=session, job_id=job_id)
        if job is None:
            return None
        return _job_json(job, jobs.job_files(session=session, job_id=job_id),
                         jobs.job_artifacts(session=session, job_id=job_id),
                         jobs.staging_counts(session=session, job_id=job_id))


def _job_json(job: Job, files: list[JobFile], artifacts: list[Artifact],
              counts: dict[int, dict[str, int]]) -> dict[str, Any]:
    return {
        "job_id": str(job.id), "status": job.status, "checksum": job.checksum, "requested_by": job.requested_by,
        "error": job.error, "created_at": _iso(job.created_at), "updated_at": _iso(job.updated_at),
        "finalized_at": _iso(job.finalized_at),
        "files": [{"id": f.id, "name": f.name, "status": f.status, "error": f.error, "size": f.size,
                   "checksum": f.checksum, "content_type": f.content_type,
                   "storage_path": f"{f.bucket}/{f.storage_path}",
                   "staged": counts.get(f.id, {"rows": 0, "rows_with_errors": 0})} for f in files],
        "artifacts": [{"type": a.type, "storage_path": a.storage_path, "checksum": a.checksum,
                       "metadata": a.details} for a in artifacts],
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


# -- PUT /uploads/<bucket>/<object> (local signed uploads) -----------------------------------------
def _leave_body_unread(body: dict[str, Any], status: int) -> Any:
    """The answer as a streamed response: functions-framework reads the rest of the request body
    into memory after every non-streamed response (`read_request`), which would undo the size
    limit (a refused 10 GB PUT read whole). The server then discards what was not read."""
    import json

    from werkzeug.wrappers import Response

    return Response(iter([json.dumps(body).encode()]), status=status, mimetype="application/json")


def _upload_or_refusal(request: Any, deps: Deps) -> tuple[dict[str, Any], int]:
    try:
        return _upload(request, deps)
    except PermanentError as exc:
        return {"error": str(exc)}, int(getattr(exc, "http_status", 400))


def _upload(request: Any, deps: Deps) -> tuple[dict[str, Any], int]:
    from adapters.storage.signing import LocalSigner, SignatureRefused, build_signer

    signer = build_signer(deps.settings, deps.storage, clock=deps.clock)
    if not isinstance(signer, LocalSigner):
        return _error("uploads go directly to Cloud Storage", 404)
    try:
        bucket, name = signer.verify(path=request.path, args=request.args, content_type=request.content_type)
    except SignatureRefused as exc:
        return _error(str(exc), 403)
    tenant = name.split("/", 1)[0]  # signed: `<tenant>/<job id>/<file>`
    with tenant_session(deps.tenant_sessions, tenant) as session:
        target = jobs.file_by_path(session=session, bucket=bucket, path=name)
        if target is None:
            return _error("no declared file for this upload", 404)
        job = jobs.get_job(session=session, job_id=target.job_id)
        if job is None or job.status not in ("open", "uploading", "done", "failed") or target.status == "verified":
            return _error("this file can no longer be uploaded", 409)
        declared = target.size
    if request.content_length is not None and request.content_length > declared:
        raise UploadTooLarge(f"the body ({request.content_length} bytes) is larger than the declared "
                             f"{declared} bytes")
    with signer.single_use(request.args), tempfile.TemporaryDirectory(prefix="caf-upload-") as tmp:
        local = Path(tmp) / "body"
        _receive(request.stream, local, declared)
        info = deps.storage.put_file(bucket, name, local, content_type=request.content_type)
    with tenant_session(deps.tenant_sessions, tenant) as session:
        target = jobs.file_by_path(session=session, bucket=bucket, path=name)
        if target is not None:
            jobs.mark_uploaded(session=session, job_file=target)
    return {"bucket": bucket, "name": name, "size": info.size, "md5": info.md5}, 200


class UploadTooLarge(PermanentError):
    http_status = 413


def _receive(stream: Any, path: Path, declared: int) -> None:
    """Copy the body to `path`, reading at most `declared` + 1 bytes: one byte more is a 413."""
    received = 0
    with path.open("wb") as out:
        while chunk := stream.read(min(1 << 20, declared + 1 - received)):
            received += len(chunk)
            if received > declared:
                raise UploadTooLarge(f"the body is larger than the declared {declared} bytes")
            out.write(chunk)
