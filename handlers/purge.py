"""Retention: delete metadata rows and archived / failed / staged / quarantine objects past an age.

Used by `caf purge` (dry run first) and by the scheduled `purge` Pub/Sub message (deploy:
`deploy.purge.schedule`, off by default). Never deleted: anything a PROCESSING batch references
(its files, their objects, its task runs), the newest loaded file of each table and the batch
holding the newest successful run of each task (freshness and lineage read them), and objects a
kept file row still points to. Rows are deleted first, re-checking those rules in the same
transaction; objects after commit (an object whose delete fails is found again next time by the
sweep of the CAF prefixes).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from app.deps import Deps

log = logging.getLogger("caf.purge")

_AGE = re.compile(r"^\s*(\d+)\s*([dhw]?)\s*$")
_UNITS = {"": "days", "d": "days", "h": "hours", "w": "weeks"}

_OLD_FILE = (
    "f.status IN ('SUCCESS', 'ERROR') AND COALESCE(f.finished_at, f.updated_at, f.created_at) < :cutoff"
    " AND NOT EXISTS (SELECT 1 FROM task_batch b WHERE b.id = f.batch_id AND b.status = 'PROCESSING')"
    " AND f.id NOT IN (SELECT max(id) FROM files WHERE status = 'SUCCESS' AND table_id IS NOT NULL"
    "  GROUP BY table_id)"
)
_OLD_BATCH = (
    "b.status <> 'PROCESSING' AND COALESCE(b.finished_at, b.started_at) < :cutoff"
    " AND b.id NOT IN (SELECT DISTINCT ON (task_id) batch_id FROM task_log WHERE status = 'SUCCESS'"
    "  ORDER BY task_id, finished_at DESC NULLS LAST, id DESC)"
    f" AND NOT EXISTS (SELECT 1 FROM files f WHERE f.batch_id = b.id AND NOT ({_OLD_FILE}))"
)
_OLD_OUTBOX = "o.published_at IS NOT NULL AND o.published_at < :cutoff AND o.created_at < :cutoff"


def parse_age(value: str) -> timedelta:
    """`90d`, `12w`, `36h` or a number of days; ValueError otherwise."""
    match = _AGE.match(value or "")
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"{value!r} is not an age like 90d, 12w or 36h")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@dataclass(frozen=True)
class DoomedObject:
    bucket: str
    name: str
    why: str
    file_id: int | None = None
    """The purged file row that points to it; None for an old unreferenced object under a CAF prefix."""


@dataclass
class Plan:
    cutoff: datetime
    files: list[dict[str, Any]] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)
    task_runs: int = 0
    outbox: int = 0
    objects: list[DoomedObject] = field(default_factory=list)
    kept_running: int = 0


def plan(deps: Deps, cutoff: datetime) -> Plan:
    """What a purge at `cutoff` deletes (reads only)."""
    from database.session import unit_of_work

    result = Plan(cutoff=cutoff)
    with unit_of_work(deps.sessions) as session:
        params = {"cutoff": cutoff}
        result.files = [dict(r) for r in session.execute(text(
            "SELECT f.id, f.bucket, f.name, f.generation, f.status, f.archived_uri, f.staged_uri, f.quarantine_uri"
            f" FROM files f WHERE {_OLD_FILE} ORDER BY f.id"), params).mappings()]
        result.batches = list(session.execute(text(
            f"SELECT b.id FROM task_batch b WHERE {_OLD_BATCH} ORDER BY b.id"), params).scalars())
        result.task_runs = int(session.execute(text(
            "SELECT count(*) FROM task_log WHERE batch_id = ANY(CAST(:ids AS bigint[]))"),
            {"ids": result.batches}).scalar_one())
        result.outbox = int(session.execute(text(f"SELECT count(*) FROM outbox o WHERE {_OLD_OUTBOX}"),
                                            params).scalar_one())
        result.kept_running = int(session.execute(text(
            "SELECT count(*) FROM files f JOIN task_batch b ON b.id = f.batch_id WHERE b.status = 'PROCESSING'"
            " AND COALESCE(f.finished_at, f.updated_at, f.created_at) < :cutoff"), params).scalar_one())
        kept = _kept_uris(session, [f["id"] for f in result.files])
        buckets = sorted(set(session.execute(text("SELECT DISTINCT bucket FROM files")).scalars()))
    result.objects = _objects(deps, result.files, kept, buckets, cutoff)
    return result


def _kept_uris(session: Session, purged_ids: list[int]) -> set[str]:
    rows = session.execute(text(
        "SELECT archived_uri, staged_uri, quarantine_uri FROM files WHERE NOT (id = ANY(CAST(:ids AS bigint[])))"),
        {"ids": purged_ids})
    return {uri for row in rows for uri in row if uri}


def _objects(deps: Deps, files: list[dict[str, Any]], kept: set[str], buckets: list[str],
             cutoff: datetime) -> list[DoomedObject]:
    from handlers.web.actions import object_of

    found: dict[tuple[str, str], DoomedObject] = {}
    for f in files:
        for column in ("archived_uri", "staged_uri", "quarantine_uri"):
            uri = f[column]
            where = object_of(uri, deps.settings) if uri and uri not in kept else None
            if where:
                found.setdefault(where, DoomedObject(*where, f"file {f['id']} ({column.removesuffix('_uri')})",
                                                     f["id"]))
    cfg = deps.settings.ingest
    prefixes = (cfg.archive_prefix, cfg.failed_prefix, cfg.staging_prefix, cfg.quarantine_prefix)
    for bucket in buckets:
        for prefix in prefixes:
            for info in deps.storage.list(bucket, prefix):
                if info.updated is None or info.updated >= cutoff or deps.storage.uri(bucket, info.name) in kept:
                    continue
                found.setdefault((bucket, info.name), DoomedObject(bucket, info.name, "unreferenced, old"))
    return [found[key] for key in sorted(found)]


def execute(deps: Deps, todo: Plan) -> tuple[int, int, int, list[str]]:
    """Delete the planned rows (rules re-checked) then the objects; returns (files, batches, objects, failures)."""
    from database.session import unit_of_work
    from errors import CafError

    params = {"cutoff": todo.cutoff, "ids": [f["id"] for f in todo.files], "batches": todo.batches}
    with unit_of_work(deps.sessions) as session:
        deleted = list(session.execute(text(
            f"DELETE FROM files f WHERE f.id = ANY(CAST(:ids AS bigint[])) AND {_OLD_FILE} RETURNING f.id"),
            params).scalars())
        batches = list(session.execute(text(
            f"DELETE FROM task_batch b WHERE b.id = ANY(CAST(:batches AS bigint[])) AND {_OLD_BATCH} RETURNING b.id"),
            params).scalars())
        session.execute(text(f"DELETE FROM outbox o WHERE {_OLD_OUTBOX}"), params)
        kept = _kept_uris(session, deleted)
    gone = set(deleted)
    removed, failures = 0, []
    for obj in todo.objects:
        if obj.file_id is not None and obj.file_id not in gone:
            continue  # its row was kept after all (a batch started meanwhile)
        if deps.storage.uri(obj.bucket, obj.name) in kept:
            continue
        try:
            deps.storage.delete(obj.bucket, obj.name)
            removed += 1
        except CafError as exc:
            failures.append(f"{obj.bucket}/{obj.name}: {exc}")
    return len(deleted), len(batches), removed, failures


def scheduled(data: dict[str, Any], deps: Deps) -> None:
    """The `purge` message (Cloud Scheduler): `{"older_than": "90d"}`; deletes and logs the counts."""
    from values.messages import MalformedEvent

    try:
        age = parse_age(str(data.get("older_than") or ""))
    except ValueError as exc:
        raise MalformedEvent(f"purge message: {exc}") from None
    todo = plan(deps, deps.clock() - age)
    files, batches, objects, failures = execute(deps, todo)
    log.info("purge older than %s: deleted %s file row(s), %s batch(es), %s outbox row(s), %s object(s); "
             "%s object(s) could not be deleted", data.get("older_than"), files, batches, todo.outbox, objects,
             len(failures))
