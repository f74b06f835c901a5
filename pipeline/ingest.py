"""The raw-file flow of one object version, top to bottom: the one owner of ingestion.

    claim → match → read/validate/stage → load → record → publish → archive

`handle` takes an object version (decoded by handlers/) and runs every step in that order;
the steps' mechanics (reader options, staging to storage, the load request) are in
`pipeline.steps`, the stages themselves in read / validate / stage.

Exactly-once effect: the claim makes concurrent deliveries wait (busy → redelivered later);
the warehouse load replaces the object's own rows in one transaction / DML job; the final
status, outbox event and load commit under a per-object lock. A crash anywhere before the
status commit leaves a PROCESSING claim that a redelivery takes over after the lease, and its
load replaces whatever the crashed attempt wrote. Errors: a PermanentError is recorded and
acknowledged; anything transient gives the claim back and raises, so the platform redelivers.
"""

from __future__ import annotations

import logging
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import logs
from database import files as files_db
from database import outbox
from database.registry import RegisteredTable, TableOwnedElsewhere, check_owner, match_in_tenant, object_tenant
from database.session import unit_of_work
from errors import CafError, PermanentError, TransientError

if TYPE_CHECKING:
    from pipeline.ports import IngestPorts
    from values.messages import ObjectRef

log = logging.getLogger("caf.raw_file")
MAX_UNEXPECTED_ATTEMPTS = 3  # an unexplained crash on the same version this often → recorded ERROR


class NoTableRegistered(PermanentError):
    pass


class TooManyBadRows(PermanentError):
    pass


class AllRowsRejected(PermanentError):
    """Every data row was rejected: not a success, even within `max_bad_records`."""


def handle(ref: ObjectRef, deps: IngestPorts, *, tenant: str | None = None) -> None:
    """Ingest one object version; PermanentError is recorded and acknowledged, the rest raises.

    `tenant`: the tenant the caller knows the object belongs to (an upload job's); None for raw
    landing objects, whose tenant is derived from the path (`<tenant>/...`, else default).
    """
    with logs.bind(**ref.labels()):
        if _is_internal(ref.name, deps):
            log.debug("ignored CAF-managed object %s", ref.name)
            return
        # Not durable by itself: every path after a claim ends in a durable commit (status, error,
        # release) before the event is acknowledged; a crash before that is redelivered.
        with unit_of_work(deps.sessions, durable=False) as session:
            claim = files_db.claim_file(session=session, ref=ref, lease_seconds=deps.settings.ingest.lease_seconds)
        if claim.state == "done":
            log.info("already %s: redelivered event ignored", claim.status)
            # Finish what the attempt that recorded the status may not have: its events, its move.
            _publish_stranded(deps)
            if claim.unarchived:
                from pipeline import steps

                steps.move_processed(ref, deps, success=claim.status == "SUCCESS", file_id=claim.file_id)
            return
        if claim.state == "busy":
            raise TransientError(f"{ref.bucket}/{ref.name}#{ref.generation} is being processed by another "
                                 "instance; retry later")
        assert claim.token is not None
        with logs.bind(file_id=claim.file_id):
            _run_claimed(ref, claim, deps, tenant)


def _run_claimed(ref: ObjectRef, claim: files_db.Claim, deps: IngestPorts, tenant: str | None) -> None:
    token = claim.token
    assert token is not None
    started = time.perf_counter()
    context: dict[str, Any] = {"batch_id": claim.batch_id, "tenant": tenant}
    try:
        outcome = _ingest(ref, claim, deps, context)
    except PermanentError as exc:
        _record_error(ref, claim, deps, str(exc), context)
        return
    except TransientError as exc:
        _release(claim, deps, str(exc))
        raise
    except Exception as exc:
        if claim.attempts >= MAX_UNEXPECTED_ATTEMPTS:
            log.exception("unexpected failure, attempt %s: recorded as ERROR", claim.attempts)
            _record_error(ref, claim, deps, f"internal error after {claim.attempts} attempts: "
                          f"{type(exc).__name__}: {exc}", context)
            return
        _release(claim, deps, f"{type(exc).__name__}: {exc}")
        raise
    log.info("loaded %s rows (%s rejected) into %s in %.0f ms", outcome.get("rows_loaded"),
             outcome.get("rows_rejected"), outcome.get("table"), (time.perf_counter() - started) * 1000,
             extra={"rows_loaded": outcome.get("rows_loaded"), "rows_rejected": outcome.get("rows_rejected"),
                    "rows_read": outcome.get("rows_read"), "bytes": ref.size, "metric": "file",
                    "status": "SUCCESS", "table": outcome.get("table"),
                    "duration_ms": round((time.perf_counter() - started) * 1000)})


def _ingest(ref: ObjectRef, claim: files_db.Claim, deps: IngestPorts, context: dict[str, Any]) -> dict[str, Any]:
    per_tenant = deps.settings.jobs.per_tenant_datasets
    with unit_of_work(deps.sessions, durable=False) as session:  # made durable by the final status
        context["tenant"], relative = object_tenant(session=session, name=ref.name, tenant_id=context["tenant"])
        table = match_in_tenant(session=session, tenant_id=context["tenant"], relative_name=relative,
                                per_tenant_datasets=per_tenant)
        if table is None:
            raise NoTableRegistered(f"no table registered for {ref.name}")
        check_owner(session=session, table=table, tenant_id=context["tenant"], per_tenant_datasets=per_tenant)
        batch_id = files_db.attach(session=session, file_id=claim.file_id, table_id=table.id,
                                   tenant_id=table.tenant_id, root=table.qualified)
        if claim.batch_id is not None:  # claimed again (redelivery, takeover, sweep): a stalled batch reopens
            files_db.reopen_stalled_batch(session=session, batch_id=batch_id)
        newer = files_db.newer_generation_loaded(session=session, bucket=ref.bucket, name=ref.name,
                                                 generation=ref.generation)
    context.update(batch_id=batch_id, table=table)
    if newer is not None:  # an older version delivered late: loading it would undo the newer one
        return _finish_superseded(claim, deps, batch_id, newer, table)
    from pipeline import steps

    with tempfile.TemporaryDirectory(prefix="caf-stage-") as tmp:
        staged = steps.read_and_stage(ref, table, deps, file_id=claim.file_id, batch_id=batch_id,
                                       workdir=Path(tmp), now=deps.clock())
        context["staged"] = staged
        if staged.quarantine_uri:
            context["quarantine_uri"] = staged.quarantine_uri
        if staged.rows_rejected > table.max_bad_records:
            raise TooManyBadRows(
                f"{staged.rows_rejected} row(s) rejected, more than max_bad_records={table.max_bad_records}; "
                f"nothing loaded. {staged.describe()} — see {staged.quarantine_uri}"
            )
        if staged.rows_rejected and not staged.rows_staged:
            raise AllRowsRejected(
                f"all {staged.rows_rejected} row(s) rejected; nothing loaded (max_bad_records="
                f"{table.max_bad_records} tolerates some bad rows, not a file without a good one). "
                f"{staged.describe()} — see {staged.quarantine_uri}"
            )
        return _load_and_record(ref, claim, table, staged, deps, batch_id, context["tenant"])


def _load_and_record(ref: ObjectRef, claim: files_db.Claim, table: RegisteredTable, staged: Any,
                     deps: IngestPorts, batch_id: int, tenant: str) -> dict[str, Any]:
    from pipeline import steps

    assert claim.token is not None
    deps.warehouse.ensure_table(steps.target_with_new_columns(table, staged.new_columns))
    with unit_of_work(deps.sessions) as session:
        files_db.lock_object_name(session=session, bucket=ref.bucket, name=ref.name)
        newer, ids = files_db.newer_and_generation_ids(session=session, bucket=ref.bucket, name=ref.name,
                                                       generation=ref.generation)
        fields: dict[str, Any] = {"rows_read": staged.rows_read, "rows_rejected": staged.rows_rejected,
                                  "staged_uri": staged.staged_uri, "quarantine_uri": staged.quarantine_uri,
                                  "error_message": None}
        if staged.rows_rejected:  # within max_bad_records: loaded, but say so (the page and CLI show it)
            fields["detail"] = (f"{staged.rows_rejected} row(s) rejected, within max_bad_records="
                                f"{table.max_bad_records}; see the quarantine rows")
        if newer is not None:
            fields.update(rows_loaded=None, detail=f"superseded by generation {newer}; not loaded")
            loaded = 0
        else:
            # The object's only generation ever recorded: nothing of it can be in the table yet.
            if table.tenant_id != tenant:  # the table written is the one matched for the object's tenant
                raise TableOwnedElsewhere(f"{table.qualified} belongs to tenant {table.tenant_id}, not {tenant}")
            result = steps.load(staged, table, deps, file_id=claim.file_id, batch_id=batch_id,
                                replace_file_ids=ids, generation=ref.generation,
                                first_load=ids == [claim.file_id])
            loaded = result.rows_loaded
            fields["rows_loaded"] = loaded
        if not files_db.finish(session=session, file_id=claim.file_id, token=claim.token, status="SUCCESS",
                               **fields):
            log.warning("claim was taken over by another instance; its result stands")
            return {"rows_loaded": loaded, "rows_rejected": staged.rows_rejected, "rows_read": staged.rows_read,
                    "table": table.qualified}
        event_ids = []
        if newer is None:
            event_ids.append(outbox.enqueue(session=session, event_type="file_loaded", tenant_id=table.tenant_id,
                                            payload=steps.file_loaded_payload(ref, claim.file_id, batch_id, table)))
        else:
            files_db.close_batch(session=session, batch_id=batch_id, status="SUCCESS",
                                 summary={"file": claim.file_id, "detail": fields["detail"]})
    _publish(deps, event_ids)
    steps.move_processed(ref, deps, success=True, file_id=claim.file_id)
    return {"rows_loaded": loaded, "rows_rejected": staged.rows_rejected, "rows_read": staged.rows_read,
            "table": table.qualified}


def _finish_superseded(claim: files_db.Claim, deps: IngestPorts, batch_id: int, newer: int,
                       table: RegisteredTable) -> dict[str, Any]:
    assert claim.token is not None
    detail = f"superseded by generation {newer}; not loaded"
    with unit_of_work(deps.sessions) as session:
        files_db.finish(session=session, file_id=claim.file_id, token=claim.token, status="SUCCESS",
                        detail=detail, rows_loaded=None)
        files_db.close_batch(session=session, batch_id=batch_id, status="SUCCESS",
                             summary={"file": claim.file_id, "detail": detail})
    return {"rows_loaded": 0, "rows_rejected": 0, "table": table.qualified}


def _publish(deps: IngestPorts, ids: list[int]) -> None:
    """Publish this file's committed outbox rows: two round trips (database.direct), not a few per row."""
    if ids:
        from database.direct import direct

        with direct(deps.sessions) as conn:
            outbox.publish_ids(connection=conn, publisher=deps.publisher, ids=ids)


def _publish_stranded(deps: IngestPorts) -> None:
    """Publish outbox rows a crashed attempt left behind; usually there are none: one round trip."""
    from database.direct import direct

    with direct(deps.sessions) as conn:
        ids = [int(r[0]) for r in conn.script(
            "SELECT id FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT 500")]
        if ids:
            try:
                outbox.publish_ids(connection=conn, publisher=deps.publisher, ids=ids)
            except TransientError:
                log.warning("publishing stranded outbox events failed; left for the next sweep")


def _record_error(ref: ObjectRef, claim: files_db.Claim, deps: IngestPorts, message: str,
                  context: dict[str, Any]) -> None:
    from pipeline import steps
    from values.reasons import error_reason

    assert claim.token is not None
    staged = context.get("staged")
    table: RegisteredTable | None = context.get("table")
    log.warning("file failed: %s", message, extra={
        "status": "ERROR", "error_kind": "permanent", "reason": error_reason(message), "metric": "file",
        "table": table.qualified if table else None, "bytes": ref.size})
    with unit_of_work(deps.sessions) as session:
        owned = files_db.finish(
            session=session, file_id=claim.file_id, token=claim.token, status="ERROR",
            error_message=message[:4000], rows_loaded=0,
            rows_read=getattr(staged, "rows_read", None), rows_rejected=getattr(staged, "rows_rejected", None),
            quarantine_uri=context.get("quarantine_uri"),
            table_id=table.id if table else None,
            **({"tenant_id": context["tenant"]} if context.get("tenant") else {}),
        )
        if owned:
            files_db.close_batch(session=session, batch_id=context.get("batch_id"), status="ERROR",
                                 summary={"file": claim.file_id, "error": message[:500]})
    if owned:
        steps.move_processed(ref, deps, success=False, file_id=claim.file_id)
        deps.alert("file_error", claim.file_id)  # best effort: never raises


def _release(claim: files_db.Claim, deps: IngestPorts, error: str) -> None:
    assert claim.token is not None
    try:
        with unit_of_work(deps.sessions) as session:
            files_db.release_claim(session=session, file_id=claim.file_id, token=claim.token, error=error)
    except CafError:
        log.warning("could not release claim on file %s; the lease will expire", claim.file_id)


def _is_internal(name: str, deps: IngestPorts) -> bool:
    cfg = deps.settings.ingest
    return name.startswith((cfg.archive_prefix, cfg.failed_prefix, cfg.quarantine_prefix, cfg.staging_prefix))


def reprocess(file_id: int, deps: IngestPorts, *, now: datetime) -> int:
    """Re-load a SUCCESS file from its staged Parquet under a new batch (same rows, new `_batch_id`)."""
    from sqlalchemy import update as sa_update

    from database.models import File, TaskBatch
    from database.registry import get_registered
    from pipeline import scratch, steps

    with unit_of_work(deps.sessions) as session:
        file = session.get(File, file_id)
        if file is None or file.table_id is None or not file.staged_uri:
            raise PermanentError(f"file {file_id} has no staged Parquet to reprocess (status "
                                 f"{getattr(file, 'status', 'unknown')})")
        table = get_registered(session=session, table_id=file.table_id,
                               per_tenant_datasets=deps.settings.jobs.per_tenant_datasets)
        bucket, name, generation = file.bucket, file.name, file.generation
        staged_name = steps.staging_name(deps.settings.ingest.staging_prefix, table, file_id, generation)
        batch = TaskBatch(trigger="reprocess", root=table.qualified, tenant_id=file.tenant_id)
        session.add(batch)
        session.flush()
        batch_id = batch.id
    with tempfile.TemporaryDirectory(prefix="caf-reprocess-") as tmp:
        source, path = Path(tmp) / "in.parquet", Path(tmp) / "staged.parquet"
        with deps.storage.open_read(bucket, staged_name) as stream, source.open("wb") as out:
            out.write(stream.read())
        with scratch.cursor() as conn:
            conn.execute(f"COPY (SELECT * REPLACE ({batch_id}::BIGINT AS _batch_id) FROM read_parquet('{source}')) "
                         f"TO '{path}' (FORMAT parquet)")
        staged_uri = deps.storage.uri(bucket, staged_name)
        deps.storage.put_file(bucket, staged_name, path, "application/vnd.apache.parquet")
        staged = steps.Staged(local_path=path, staged_uri=staged_uri, rows_read=0, rows_staged=0)
        with unit_of_work(deps.sessions) as session:
            files_db.lock_object_name(session=session, bucket=bucket, name=name)
            if files_db.newer_generation_loaded(session=session, bucket=bucket, name=name, generation=generation):
                raise PermanentError(f"file {file_id} was superseded by a newer generation; reprocess that one")
            ids = files_db.generation_ids(session=session, bucket=bucket, name=name)
            deps.warehouse.ensure_table(table.target)
            result = steps.load(staged, table, deps, file_id=file_id, batch_id=batch_id, replace_file_ids=ids,
                          generation=generation)
            session.execute(sa_update(File).where(File.id == file_id)
                            .values(batch_id=batch_id, rows_loaded=result.rows_loaded))
            ev = outbox.enqueue(session=session, event_type="file_loaded", tenant_id=table.tenant_id,
                                payload=steps.file_loaded_payload(file, file_id, batch_id, table))
    outbox.publish_pending(session_factory=deps.sessions, publisher=deps.publisher, ids=[ev])
    return batch_id
