"""The `caf` command: local stack, ingestion, tasks and status."""

from __future__ import annotations

import sys

import typer

from errors import CafError

app = typer.Typer(help="CAF: files in Cloud Storage → BigQuery, with a task DAG in Postgres.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


def _register() -> None:
    from cli import db, demo, serve, status

    app.add_typer(db.app, name="db")
    app.command()(demo.demo)
    app.command()(serve.serve)
    app.command()(status.status)
    for optional in ("cli.ingest", "cli.registry", "cli.tasks", "cli.ops"):
        try:
            module = __import__(optional, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != optional:
                raise
            continue
        module.register(app)


def main() -> None:
    _register()
    try:
        app()
    except CafError as exc:
        from cli.context import err_console

        err_console.print(f"[red]error:[/] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
