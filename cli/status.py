"""`caf status`: what landed, what failed, what ran."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from cli.context import console, open_deps


def status(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Files, batches and task runs by status; exits 1 when anything is in ERROR."""
    from database.session import unit_of_work
    from database.status import summary

    deps = open_deps()
    with unit_of_work(deps.sessions) as session:
        data = summary(session=session)
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        table = Table(title="CAF status")
        for col in ("what", "NEW", "PROCESSING", "SUCCESS", "SKIPPED", "ERROR"):
            table.add_column(col, justify="left" if col == "what" else "right")
        for what in ("files", "batches", "task_runs"):
            counts = data[what]
            table.add_row(what, *(str(counts.get(s, "")) for s in ("NEW", "PROCESSING", "SUCCESS", "SKIPPED", "ERROR")))
        console.print(table)
        for err in data["recent_file_errors"]:
            console.print(f"[red]ERROR[/] {err['object']}: {err['error']}")
    if any(data[w].get("ERROR") for w in ("files", "batches", "task_runs")):
        raise typer.Exit(1)
