"""`caf purge`: retention of metadata rows and archived / failed / staged / quarantine objects.

Dry-run by default: prints what would be deleted; `--yes` deletes it. What may be deleted, and
what never is, is decided by handlers/purge.py (shared with the scheduled `purge` message).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import typer
from rich.table import Table

from cli.context import console, open_deps, print_json
from handlers.purge import Plan, execute, plan
from handlers.purge import parse_age as _parse_age

SHOWN = 30


def parse_age(value: str) -> timedelta:
    """`90d`, `12w`, `36h` or a number of days."""
    try:
        return _parse_age(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--older-than") from None


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
