"""Raw-file events: hand the object version (decoded by handlers.routes) to the pipeline's flow.

The flow itself (claim → match → read/validate/stage → load → record → publish → archive) has
one owner, `pipeline.ingest`; this module only delegates, with the process's `Deps` as the
pipeline's ports.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.deps import Deps
    from values.messages import ObjectRef


def handle(ref: ObjectRef, deps: Deps, *, tenant: str | None = None) -> None:
    """Ingest one object version; PermanentError is recorded and acknowledged, the rest raises.

    `tenant`: the tenant the caller knows the object belongs to (an upload job's); None for raw
    landing objects, whose tenant is derived from the path.
    """
    from pipeline import ingest

    ingest.handle(ref, deps, tenant=tenant)


def reprocess(file_id: int, deps: Deps) -> int:
    """Re-load a file from its staged Parquet under a new batch; returns the batch id."""
    from pipeline import ingest

    return ingest.reprocess(file_id, deps, now=datetime.now(UTC))
