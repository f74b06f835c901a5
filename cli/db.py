"""`caf db ...`: schema migrations."""

from __future__ import annotations

import typer

from cli.context import console, open_deps

app = typer.Typer(help="Metadata database schema (Alembic).", no_args_is_help=True)


@app.command()
def upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Migrate the metadata database to REVISION (default: head)."""
    from alembic import command

    from database import migrate

    deps = open_deps(migrate=False)
    with deps.engine.begin() as conn:
        cfg = migrate.alembic_config(str(deps.engine.url))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    console.print(f"metadata schema at [bold]{migrate.head() if revision == 'head' else revision}[/]")


@app.command()
def current() -> None:
    """Print the current and head revisions."""
    from database import migrate

    deps = open_deps(migrate=False)
    url = deps.engine.url.render_as_string(hide_password=False)
    console.print(f"current: {migrate.current(url)}  head: {migrate.head()}")
