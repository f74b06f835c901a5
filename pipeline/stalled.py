"""Files that stopped moving: a claim given back after a transient failure that no redelivery
retook (the platform gave up, the event aged out, the object was deleted), or a crashed claim
never taken over. Nothing may stall silently: `caf status` and the page show these as *stalled*
with their last transient error, their batch is closed instead of staying PROCESSING, and the
sweep (or `caf backfill`) delivers them again.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from database import files as files_db
from database.models import File
from database.session import unit_of_work
from errors import CafError
from values.messages import ObjectRef

if TYPE_CHECKING:
    from pipeline.ports import IngestPorts

log = logging.getLogger("caf.raw_file")
SWEEP_LIMIT = 20
"""Stalled files delivered again per sweep (the rest wait for the next one)."""


def cutoffs(deps: IngestPorts, now: datetime | None = None) -> tuple[datetime, datetime]:
    """The stall rule's cutoffs at `now` (default: the deps' clock), from `ingest.stall_seconds`."""
    cfg = deps.settings.ingest
    return files_db.stall_cutoffs(now or deps.clock(), stall_seconds=cfg.stall_seconds,
                                  lease_seconds=cfg.lease_seconds)


def give_up(deps: IngestPorts, file_ids: list[int]) -> list[int]:
    """No redelivery will come for these files (the local command gave up): close their batches
    and raise a `file_stalled` alert for each; returns the files newly stalled."""
    with unit_of_work(deps.sessions) as session:
        newly = files_db.close_stalled_batches(session=session, file_ids=file_ids, now=deps.clock())
    for file_id in newly:
        deps.alert("file_stalled", file_id)  # best effort: never raises
    return newly


def sweep(deps: IngestPorts, *, limit: int = SWEEP_LIMIT) -> tuple[int, int]:
    """Close the batches of stalled files (alerting `file_stalled`) and deliver those files again;
    returns (stalled, loaded).

    Each file goes through the normal flow (`pipeline.ingest.handle`): a file that loads now is
    SUCCESS, a deleted object or bad file ends as a recorded ERROR, and a transient failure gives
    the claim back again (the next sweep retries it). One file's failure never stops the sweep.
    """
    from pipeline import ingest

    with unit_of_work(deps.sessions) as session:
        stalled = files_db.stalled_files(session=session, cutoffs=cutoffs(deps), limit=limit)
        newly = files_db.close_stalled_batches(session=session, file_ids=[f["id"] for f in stalled],
                                               now=deps.clock())
    for file_id in newly:
        deps.alert("file_stalled", file_id)  # once per object version (the alert is de-duplicated)
    loaded = 0
    for row in stalled:
        ref = object_ref(row)
        log.warning("file %s stalled since %s (%s attempt(s), last error: %s); delivering it again", row["id"],
                    row["since"], row["attempts"], row["last_error"] or "none")
        try:
            ingest.handle(ref, deps)
        except CafError as exc:
            log.warning("stalled file %s still not loaded: %s", row["id"], exc)
            continue
        except Exception:  # the sweep goes on with the next file
            log.exception("stalled file %s: unexpected failure", row["id"])
            continue
        with unit_of_work(deps.sessions) as session:
            status = session.scalar(select(File.status).where(File.id == row["id"]))
        loaded += status == "SUCCESS"
    return len(stalled), loaded


def object_ref(row: dict[str, Any]) -> ObjectRef:
    """The object version of a `files` row, as its finalize event described it."""
    return ObjectRef(bucket=row["bucket"], name=row["name"], generation=row["generation"], size=row["size"],
                     md5=row["md5"], crc32c=row["crc32c"], content_type=row["content_type"],
                     content_encoding=row["content_encoding"], event_id=f"sweep-{row['id']}")
