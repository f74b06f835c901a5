"""`caf registry sync DIR`: table definitions as files → the registry."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from cli.context import console, err_console, open_deps

app = typer.Typer(help="Table registry (one YAML/JSON definition per table).", no_args_is_help=True)


@app.command()
def sync(directory: Path = typer.Argument(..., help="Folder of table definitions.")) -> None:
    """Load every definition in DIRECTORY; idempotent, prints what changed."""
    from database.registry import sync_definition
    from database.session import unit_of_work
    from values.definitions import DefinitionError, definition_files, parse_definition

    paths = definition_files(directory)
    definitions, problems = [], []
    for path in paths:
        try:
            definitions.append((path, parse_definition(path)))
        except DefinitionError as exc:
            problems.append(str(exc))
    if problems:
        for problem in problems:
            err_console.print(f"[red]invalid:[/] {problem}")
        raise typer.Exit(2)
    deps = open_deps()
    table = Table(title=f"registry sync {directory}")
    table.add_column("table")
    table.add_column("change")
    table.add_column("source")
    with unit_of_work(deps.sessions) as session:
        for path, definition in definitions:
            outcome = sync_definition(session=session, definition=definition, path=path)
            table.add_row(f"{definition.dataset}.{definition.table}", outcome, definition.source_glob)
    console.print(table)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="registry")
