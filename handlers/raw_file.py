"""Raw-file events: hand the object version (decoded by handlers.routes) to the pipeline's flow.

The flow itself (claim → match → read/validate/stage → load → record → publish → archive) has
one owner, `pipeline.ingest`; this module only delegates, with the process's `Deps` as the
pipeline's ports.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.deps import Deps
    from values.messages import ObjectRef

log = logging.getLogger("caf.raw_file")


def handle(ref: ObjectRef, deps: Deps, *, tenant: str | None = None) -> None:
    """Ingest one object version; PermanentError is recorded and acknowledged, the rest raises.

    `tenant`: the tenant the caller knows the object belongs to (an upload job's); None for raw
    landing objects, whose tenant is derived from the path. An event for a bucket that is not a
    landing bucket is acknowledged with a warning only.
    """
    if not is_landing_bucket(ref.bucket, deps.settings):
        log.warning("ignored event for bucket %s: not a landing bucket (ingest.landing_buckets)", ref.bucket)
        return
    from pipeline import ingest

    ingest.handle(ref, deps, tenant=tenant)


def is_landing_bucket(bucket: str, settings: Any) -> bool:
    """Whether finalize events of `bucket` are ingested (see `ingest.landing_buckets`).

    The upload bucket never is (unless it is also the landing bucket): its objects are a tenant's
    unverified uploads, handed on only by the job finalize.
    """
    if bucket == settings.jobs.landing_bucket:
        return True
    configured = settings.ingest.landing_buckets
    if configured is not None:
        return bucket in configured
    return bool(bucket != settings.jobs.upload_bucket)


def reprocess(file_id: int, deps: Deps) -> int:
    """Re-load a file from its staged Parquet under a new batch; returns the batch id."""
    from pipeline import ingest

    return ingest.reprocess(file_id, deps, now=datetime.now(UTC))
