"""`caf ingest` and `caf backfill`: deliver finalize events through the real handler."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.context import console, open_deps

DEFAULT_BUCKET = "landing"
REDELIVERIES = 3  # like the platform: a transient failure (HTTP 500) is retried with backoff


def deliver_all(infos: list[Any], deps: Any, *, title: str) -> list[dict[str, Any]]:
    """Deliver each object's finalize event, retrying transient failures; returns outcome rows."""
    from cli import local_delivery

    outcomes = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(title, total=len(infos))
        for info in infos:
            code = 0
            for attempt in range(REDELIVERIES):
                code = local_delivery.deliver_object(info)
                if code < 300:
                    break
                time.sleep(0.2 * 2**attempt)
            outcomes.append({"info": info, "http": code})
            progress.advance(task)
    drain_bus(deps)
    return [dict(o, **file_row(deps, o["info"])) for o in outcomes]


def drain_bus(deps: Any) -> None:
    """Locally, run what the loads triggered (the local bus delivers through handle_pubsub)."""
    from adapters.publisher.local import LocalBus
    from cli import local_delivery

    bus = deps.publisher
    if isinstance(bus, LocalBus):
        if bus.deliver is None:
            local_delivery.attach(bus)
        while bus.drain():
            pass


def file_row(deps: Any, info: Any) -> dict[str, Any]:
    from sqlalchemy import select

    from database.models import File
    from database.session import unit_of_work

    with unit_of_work(deps.sessions) as session:
        row = session.execute(select(File).where(File.bucket == info.bucket, File.name == info.name,
                                                 File.generation == info.generation)).scalar_one_or_none()
        if row is None:
            return {"status": "IGNORED", "rows_loaded": None, "rows_rejected": None, "message": "", "id": None}
        return {"status": row.status, "rows_loaded": row.rows_loaded, "rows_rejected": row.rows_rejected,
                "message": row.error_message or row.detail or "", "id": row.id}


def print_outcomes(rows: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title)
    for col in ("file id", "object", "status", "loaded", "rejected", "message"):
        table.add_column(col, overflow="fold")
    colours = {"SUCCESS": "green", "ERROR": "red", "PROCESSING": "yellow"}
    for r in rows:
        status = r["status"] if r["http"] < 300 else f"{r['status']} (HTTP {r['http']})"
        colour = colours.get(r["status"], "white")
        table.add_row(str(r["id"] or ""), f"{r['info'].bucket}/{r['info'].name}", f"[{colour}]{status}[/]",
                      _n(r["rows_loaded"]), _n(r["rows_rejected"]), r["message"][:300])
    console.print(table)


def _n(value: Any) -> str:
    return "" if value is None else f"{value:,}"


def ingest(
    files: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="Local files to ingest."),
    bucket: str = typer.Option(DEFAULT_BUCKET, help="Bucket to put them in."),
    prefix: str = typer.Option("", help="Object name prefix, e.g. sales/orders/."),
) -> None:
    """Put local files into the (local or emulated) bucket and deliver their finalize events."""
    deps = open_deps()
    infos = [deps.storage.put_file(bucket, f"{prefix}{path.name}", path) for path in files]
    rows = deliver_all(infos, deps, title="ingesting")
    print_outcomes(rows, f"ingested {len(rows)} file(s)")
    if any(r["status"] == "ERROR" or r["http"] >= 300 for r in rows):
        raise typer.Exit(1)


def backfill(target: str = typer.Argument(..., help="BUCKET or BUCKET/PREFIX")) -> None:
    """Deliver events for objects already in a bucket; versions already loaded are skipped."""
    from sqlalchemy import select

    from database.models import File
    from database.session import unit_of_work

    bucket, _, prefix = target.partition("/")
    deps = open_deps()
    cfg = deps.settings.ingest
    internal = (cfg.archive_prefix, cfg.failed_prefix, cfg.quarantine_prefix, cfg.staging_prefix)
    candidates = [o for o in deps.storage.list(bucket, prefix) if not o.name.startswith(internal)]
    with unit_of_work(deps.sessions) as session:
        done = {tuple(r) for r in session.execute(select(File.name, File.generation).where(
            File.bucket == bucket, File.status.in_(("SUCCESS", "ERROR")))).all()}
    todo = [o for o in candidates if (o.name, o.generation) not in done]
    console.print(f"{len(candidates)} object(s) under {target}; {len(candidates) - len(todo)} already "
                  f"processed, {len(todo)} to deliver")
    rows = deliver_all(todo, deps, title="backfilling")
    if rows:
        print_outcomes(rows, f"backfilled {len(rows)} file(s)")


def register(app: typer.Typer) -> None:
    app.command()(ingest)
    app.command()(backfill)
