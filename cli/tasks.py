"""`caf tasks sync`, `caf run`, `caf batch restart|reprocess|show`, `caf freshness`: the task engine."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from cli.context import console, open_deps, print_json, styled, transaction

if TYPE_CHECKING:
    from app.deps import Deps

tasks_app = typer.Typer(help="Task definitions (YAML) ↔ the database.", no_args_is_help=True)
batch_app = typer.Typer(help="Batches: one run of a DAG or of the tasks below some roots.", no_args_is_help=True)
_STYLE = {"SUCCESS": "green", "ERROR": "red", "SKIPPED": "yellow", "PROCESSING": "cyan"}
_CHANGE_STYLE = {"created": "green", "updated": "cyan", "disabled": "red", "missing": "yellow"}


def register(app: typer.Typer) -> None:
    app.add_typer(tasks_app, name="tasks")
    app.add_typer(batch_app, name="batch")
    app.command("run")(run)
    app.command("freshness")(freshness)


@tasks_app.command("sync")
def sync(
    directory: Path = typer.Argument(..., help="Folder of task YAML files (searched recursively)."),
    prune: bool = typer.Option(False, "--prune", help="Disable enabled tasks that are not in DIRECTORY "
                               "(without it they are listed as missing and left alone)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; change nothing."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Create or update tasks so the database matches DIRECTORY; prints the plan it applied.

    Tasks missing from DIRECTORY are only disabled with --prune (their history stays).
    """
    from engine.sync import sync_directory

    deps = open_deps()
    with transaction(deps, dry_run=dry_run) as session:
        report = sync_directory(session=session, directory=directory, prune=prune)
    if as_json:
        print_json({"directory": str(directory), "dry_run": dry_run, "prune": prune, "counts": report.counts(),
                    "changes": [{"task": name, "change": change} for change, name in report.changes]})
        return
    order = {c: i for i, c in enumerate(("disabled", "missing", "created", "updated", "unchanged"))}
    console.print(f"[bold]tasks sync[/] {escape(str(directory))}" + (" [yellow](dry run: nothing changed)[/]"
                                                                   if dry_run else ""), highlight=False)
    table = Table()
    table.add_column("task", overflow="fold")
    table.add_column("change")
    for change, name in sorted(report.changes, key=lambda c: (order[c[0]], c[1])):
        table.add_row(name, styled(change, _CHANGE_STYLE.get(change)))
    console.print(table)
    console.print(str(report))
    missing = report.names("missing")
    if missing:
        console.print(f"{len(missing)} enabled task(s) are not in {directory} and were left as they are; "
                      "run again with --prune to disable them.")


def run(
    target: str = typer.Argument(..., help="A task name or a DAG name."),
    param: list[str] = typer.Option([], "--param", "-p", help="NAME=VALUE for SQL parameters (repeatable)."),
    wait: bool = typer.Option(True, help="Locally, drive the bus until the batch ends."),
    timeout: float = typer.Option(3600.0, help="Seconds to wait for the batch locally."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (the batch and its runs)."),
    tenant: str = typer.Option("default", "--tenant", help="The tenant whose task, DAG or table it is."),
) -> None:
    """Start a batch for TASK (and everything below it) or for a whole DAG, and print it (exit 1 on ERROR)."""
    from engine import scheduler

    parameters = {}
    for item in param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--param")
        parameters[name] = value
    deps = open_deps()
    _local_bus(deps)
    batch_id = scheduler.start_batch(deps, name=target, trigger="cli", parameters=parameters, tenant=tenant)
    _finish(deps, batch_id, wait=wait, timeout=timeout, as_json=as_json)


@batch_app.command("restart")
def restart(batch_id: int = typer.Argument(...),
            wait: bool = typer.Option(True, help="Locally, drive the bus until the batch ends."),
            timeout: float = typer.Option(3600.0, help="Seconds to wait for the batch locally."),
            as_json: bool = typer.Option(False, "--json", help="Machine-readable output (the batch and its runs)."),
) -> None:
    """Re-run the failed and skipped tasks of BATCH_ID under the same batch id."""
    from engine import scheduler

    deps = open_deps()
    _local_bus(deps)
    again = scheduler.restart_batch(deps, batch_id)
    if not again:
        if as_json:
            print_json({"batch_id": batch_id, "restarted": 0, "message": "nothing failed or skipped"})
        else:
            console.print(f"batch {batch_id}: nothing failed or skipped; nothing to restart")
        return
    if not as_json:
        console.print(f"batch {batch_id}: running {len(again)} task(s) again")
    _finish(deps, batch_id, wait=wait, timeout=timeout, as_json=as_json)


@batch_app.command("reprocess")
def reprocess(target: str = typer.Argument(..., help="FILE_ID, or DATASET.TABLE for its newest loaded file."),
              wait: bool = typer.Option(True, help="Locally, drive the bus until the batch ends."),
              timeout: float = typer.Option(3600.0, help="Seconds to wait for the batch locally."),
              as_json: bool = typer.Option(False, "--json", help="Machine-readable output (the batch and its runs)."),
              tenant: str = typer.Option("default", "--tenant", help="Whose DATASET.TABLE (a FILE_ID is unique)."),
) -> None:
    """Reload a file from its staged Parquet (no duplicate rows) and re-run the tasks downstream of it."""
    from database.session import unit_of_work
    from engine import scheduler
    from engine.freshness import file_table, latest_loaded_file
    from errors import PermanentError
    from handlers import raw_file

    deps = open_deps()
    _local_bus(deps)
    with unit_of_work(deps.sessions) as session:
        file_id = int(target) if target.isdigit() else latest_loaded_file(session=session, table=target,
                                                                          tenant=tenant)
        table = file_table(session=session, file_id=file_id) if file_id is not None else None
    if file_id is None or table is None:
        raise PermanentError(f"{target}: no loaded file of a registered table found")
    batch_id = raw_file.reprocess(file_id, deps)
    scheduler.start_file_batch(deps, batch_id=batch_id, table=table)  # idempotent with its file_loaded event
    if not as_json:
        console.print(f"file {file_id} ({table}) reloaded in batch {batch_id}")
    _finish(deps, batch_id, wait=wait, timeout=timeout, as_json=as_json)


@batch_app.command("show")
def show(batch_id: int = typer.Argument(...),
         as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """A batch and its task runs."""
    deps = open_deps()
    if as_json:
        print_json(batch_data(deps, batch_id))
    else:
        print_batch(deps, batch_id)


def freshness(target: str = typer.Argument(..., help="DATASET.TABLE"),
              as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
              tenant: str = typer.Option("default", "--tenant", help="Whose DATASET.TABLE.")) -> None:
    """Is DATASET.TABLE up to date? Its source files, the task runs that wrote it, what is newer."""
    from database.registry import find_registered
    from database.session import unit_of_work
    from engine.freshness import table_freshness

    dataset, sep, table = target.partition(".")
    if not sep or not dataset or not table:
        raise typer.BadParameter(f"{target!r} is not DATASET.TABLE")
    deps = open_deps()
    with unit_of_work(deps.sessions) as session:
        found = find_registered(session=session, dataset=dataset, table=table, tenant_id=tenant,
                                per_tenant_datasets=deps.settings.jobs.per_tenant_datasets)
        data = table_freshness(session=session, warehouse=deps.warehouse, dataset=dataset, table=table,
                               tenant=tenant, warehouse_dataset=found.target.dataset if found else None)
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        print_freshness(data)
    if data["status"] != "fresh":
        raise typer.Exit(1)


# -- output ----------------------------------------------------------------------------------
def batch_data(deps: Deps, batch_id: int) -> dict[str, Any]:
    from database import batches as batch_db
    from database import tries
    from database.session import unit_of_work
    from errors import PermanentError

    with unit_of_work(deps.sessions) as session:
        batch = batch_db.get_batch(session=session, batch_id=batch_id)
        if batch is None:
            raise PermanentError(f"batch {batch_id} does not exist")
        runs = batch_db.batch_runs(session=session, batch_id=batch_id)
        earlier = tries.batch_tries(session=session, batch_id=batch_id)
    return {"batch": dataclasses.asdict(batch), "runs": runs, "tries": earlier}


def print_batch(deps: Deps, batch_id: int) -> None:
    """The batch summary table (also used by `caf demo`)."""
    data = batch_data(deps, batch_id)
    batch = data["batch"]
    took = (batch["finished_at"] - batch["started_at"]).total_seconds() if batch["finished_at"] else None
    style = _STYLE.get(batch["status"], "")
    title = (f"[bold]batch {batch_id}[/] [{style}]{batch['status']}[/] · {batch['trigger']} "
             f"{escape(batch['root'] or '')}" + (f" · {took:.1f}s" if took is not None else ""))
    console.print(title, highlight=False)
    table = Table()
    for column in ("task", "kind", "status", "try", "secs", "state"):
        table.add_column(column, justify="right" if column in ("try", "secs") else "left", no_wrap=True)
    for r in data["runs"]:
        seconds = (r["finished_at"] - r["started_at"]).total_seconds() if r["finished_at"] else None
        state = "running" if r["lease_until"] else ("queued" if r["attempt"] else "planned")
        table.add_row(r["name"], r["kind"], f"[{_STYLE.get(r['status'], '')}]{r['status']}[/]", str(r["attempt"]),
                      "" if seconds is None else f"{seconds:.2f}", "" if r["finished_at"] else state)
    console.print(table)
    for r in data["runs"]:  # details, errors and skip reasons as paragraphs: wrapped at words, never cut
        detail = _detail(r)
        if detail:
            style = _STYLE.get(r["status"], "dim") if r["status"] in ("ERROR", "SKIPPED") else "dim"
            console.print(f"[{style}]{escape(r['name'])}[/]: {escape(detail)}", highlight=False)
    if data["tries"]:
        earlier = Table(title="earlier tries (retried or restarted)")
        for column in ("task", "restart", "attempt", "status", "ended", "error"):
            earlier.add_column(column, justify="right" if column in ("restart", "attempt") else "left",
                               overflow="fold", no_wrap=column in ("task", "ended"))
        for t in data["tries"]:
            ended = f"{t['finished_at']:%Y-%m-%d %H:%M:%S}" if t["finished_at"] else ""
            state = f"[{_STYLE.get(t['status'], 'yellow')}]{t['status']}[/]"
            error = textwrap.shorten(str(t["error"] or ""), width=200, placeholder=" …")  # cut at a word
            earlier.add_row(t["name"], str(t["restart"]), str(t["attempt"]), state, ended, escape(error))
        console.print(earlier)
    counts = batch["summary"].get("counts")
    if counts:
        console.print("  ".join(f"{k} {v}" for k, v in counts.items()))


def _detail(run: dict[str, Any]) -> str:
    """What a run said, in words: its error or skip reason, else the notable part of its output."""
    if run["status"] in ("ERROR", "SKIPPED"):
        return textwrap.shorten(str(run["error"] or ""), width=600, placeholder=" …")
    output = run["output"] or {}
    for key in ("rows_affected", "invocation", "request_id", "files", "waiting_for"):
        if output.get(key) is not None:
            value = output[key]
            text = ", ".join(map(str, value)) if isinstance(value, dict | list) else str(value)
            return textwrap.shorten(f"{key}={text}", width=300, placeholder=" …")
    return ""


def print_freshness(data: dict[str, Any]) -> None:
    style = {"fresh": "green", "stale": "red"}.get(data["status"], "yellow")
    rows = "" if data.get("rows") is None else f" · {data['rows']} rows"
    console.print(f"[bold]{data['table']}[/] is [{style}]{data['status']}[/]{rows}")
    for reason in data["reasons"]:
        console.print(f"  - {reason}")
    producer = data.get("producer")
    if producer:
        console.print(f"written by task {producer['task']} (run {producer['task_log_id']}, batch "
                      f"{producer['batch_id']}, key {str(producer['run_key'])[:12]}, at {producer['finished_at']})")
    if data["upstream"]:
        table = Table(title="upstream runs")
        for column in ("task", "run", "batch", "run key", "current"):
            table.add_column(column)
        for u in data["upstream"]:
            table.add_row(u["task"], str(u["task_log_id"]), str(u["batch_id"]), str(u["run_key"])[:12],
                          "[red]newer input[/]" if u.get("stale") else "same")
        console.print(table)
    if data["files"]:
        table = Table(title="source files")
        for column in ("table", "file", "object", "md5", "crc32c", "batch"):
            table.add_column(column)
        for f in data["files"]:
            table.add_row(f.get("table", data["table"]), str(f["file_id"]), f["object"], str(f.get("md5")),
                          str(f.get("crc32c")), str(f.get("batch_id")))
        console.print(table)


# -- local bus -------------------------------------------------------------------------------
def _local_bus(deps: Deps) -> None:
    from cli.serve import attach_local_bus

    attach_local_bus(deps)


def _finish(deps: Deps, batch_id: int, *, wait: bool, timeout: float, as_json: bool = False) -> None:
    from adapters.publisher.local import LocalBus
    from engine import scheduler

    if not (wait and isinstance(deps.publisher, LocalBus)):
        if as_json:
            print_json(batch_data(deps, batch_id))
        else:
            console.print(f"batch {batch_id} started; follow it with `caf batch show {batch_id}`")
        return
    batch = scheduler.wait_local(deps, batch_id, timeout=timeout)
    if as_json:
        print_json(batch_data(deps, batch_id))
    else:
        print_batch(deps, batch_id)
    if batch.status == "ERROR":
        raise typer.Exit(1)
