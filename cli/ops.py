"""`caf purge`: retention of metadata rows and archived / failed / staged / quarantine objects.

Dry-run by default: prints what would be deleted; `--yes` deletes it. Never deleted: anything a
PROCESSING batch references (its files, their objects, its task runs), the newest loaded file of
each table and the batch holding the newest successful run of each task (freshness and lineage
read them), and objects a kept file row still points to. Rows are deleted first, re-checking
those rules in the same transaction; objects after commit (an object whose delete fails is
found again next time by the sweep of the CAF prefixes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table
from sqlalchemy import text

from cli.context import console, open_deps, print_json

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from app.deps import Deps

_AGE = re.compile(r"^\s*(\d+)\s*([dhw]?)\s*$")
_UNITS = {"": "days", "d": "days", "h": "hours", "w": "weeks"}
SHOWN = 30

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
    """`90d`, `12w`, `36h` or a number of days."""
    match = _AGE.match(value or "")
    if not match or int(match.group(1)) <= 0:
        raise typer.BadParameter(f"{value!r} is not an age like 90d, 12w or 36h", param_hint="--older-than")
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


def purge(
    older_than: str = typer.Option(..., "--older-than", help="Age of what to delete: 90d, 12w, 36h."),
    yes: bool = typer.Option(False, "--yes", help="Delete; without it nothing is deleted (dry run)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (the plan, and what was deleted)."),
) -> None:
    """Delete metadata rows and archived / staged / quarantine objects older than --older-than."""
    age = parse_age(older_than)
    deps = open_deps()
    cutoff = deps.clock() - age
    todo = plan(deps, cutoff)
    if not as_json:
        _print_plan(todo, dry_run=not yes)
    if not yes:
        if as_json:
            print_json({"dry_run": True, "plan": _plan_json(todo)})
        else:
            console.print("[yellow]dry run[/]: nothing deleted; run again with --yes to delete the above")
        return
    files, batches, objects, failures = execute(deps, todo)
    if as_json:
        print_json({"dry_run": False, "plan": _plan_json(todo), "deleted": {
            "file_rows": files, "batches": batches, "outbox_rows": todo.outbox, "objects": objects},
            "failures": failures})
    else:
        console.print(f"deleted {files} file row(s), {batches} batch(es) with their task runs, {todo.outbox} "
                      f"outbox row(s) and {objects} object(s)")
        for failure in failures:
            console.print(f"[red]could not delete[/] {failure}")
    if failures:
        raise typer.Exit(1)


def _plan_json(todo: Plan) -> dict[str, Any]:
    return {"cutoff": todo.cutoff.isoformat(), "files": todo.files, "batches": todo.batches,
            "task_runs": todo.task_runs, "outbox_rows": todo.outbox, "kept_running": todo.kept_running,
            "objects": [{"bucket": o.bucket, "object": o.name, "why": o.why, "file_id": o.file_id}
                        for o in todo.objects]}


def _print_plan(todo: Plan, *, dry_run: bool) -> None:
    verb = "would delete" if dry_run else "deleting"
    summary = Table(title=f"purge: {verb} what is older than {todo.cutoff:%Y-%m-%d %H:%M} UTC")
    summary.add_column("what")
    summary.add_column("count", justify="right")
    for what, n in (("file rows", len(todo.files)), ("batches", len(todo.batches)), ("task runs", todo.task_runs),
                    ("outbox rows", todo.outbox), ("objects", len(todo.objects))):
        summary.add_row(what, f"{n:,}")
    console.print(summary)
    if todo.kept_running:
        console.print(f"kept: {todo.kept_running} old file(s) referenced by a PROCESSING batch")
    if todo.files:
        files = Table(title="file rows")
        for col in ("file", "object", "status"):
            files.add_column(col, overflow="fold")
        for f in todo.files[:SHOWN]:
            files.add_row(str(f["id"]), f"gs://{f['bucket']}/{f['name']}#{f['generation']}", f["status"])
        console.print(files)
    if todo.objects:
        objects = Table(title="objects")
        for col in ("bucket", "object", "why"):
            objects.add_column(col, overflow="fold")
        for obj in todo.objects[:SHOWN]:
            objects.add_row(obj.bucket, obj.name, obj.why)
        console.print(objects)
    hidden = max(len(todo.files), len(todo.objects)) - SHOWN
    if hidden > 0:
        console.print(f"(and more: only the first {SHOWN} of each are listed)")


def register(app: typer.Typer) -> None:
    app.command()(purge)
