"""The `caf` command: local stack, ingestion, tasks and status."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from errors import CafError, ConfigError, TransientError

EXIT_FAILED = 1
"""Something is in ERROR (a file, task, batch or a stale table) or the requested change was refused."""
EXIT_USAGE = 2
"""Bad usage or configuration: an unknown option, an invalid setting or definition, a missing object."""
EXIT_UNREACHABLE = 3
"""Infrastructure unreachable: the metadata database, warehouse, storage or a cloud API."""

HELP = ("CAF: files in Cloud Storage → BigQuery, with a task DAG in Postgres.\n\n"
        "Exit codes: 0 ok · 1 something is in ERROR (or a change was refused) · 2 bad usage or "
        "configuration · 3 infrastructure unreachable (database, warehouse, storage, cloud API).")

app = typer.Typer(help=HELP, no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  context_settings={"max_content_width": 100})


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"caf {version('caf')}")
        except PackageNotFoundError:  # running from a checkout that was never installed
            typer.echo("caf (not installed)")
        raise typer.Exit()


@app.callback()
def _root(
    _: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """CAF: files in Cloud Storage → BigQuery, with a task DAG in Postgres."""


# The module that registers each top-level command, in the order `caf --help` lists them. `caf CMD`
# imports only CMD's module (the others import what they use: `caf ops` SQLAlchemy, `caf serve`
# the HTTP server...); `caf`, `caf --help` or an unknown name registers them all.
COMMANDS = {"db": "cli.db", "demo": "cli.demo", "serve": "cli.serve", "status": "cli.status",
            "ingest": "cli.ingest", "backfill": "cli.ingest", "registry": "cli.registry", "tasks": "cli.tasks",
            "batch": "cli.tasks", "run": "cli.tasks", "freshness": "cli.tasks", "purge": "cli.ops",
            "table": "cli.table", "local": "cli.local"}
_registered: list[str] = []


def _register(command: str | None = None) -> None:
    """Register the module of top-level `command` (every command when it is None or unknown)."""
    wanted = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    if all(module in _registered for module in wanted):
        return
    if _registered:  # a second command in this process (tests): all of them, in the documented order
        app.registered_commands.clear()
        app.registered_groups.clear()
        _registered.clear()
        wanted = list(dict.fromkeys(COMMANDS.values()))
    for module in wanted:
        _add(module)
        _registered.append(module)


def _add(module_name: str) -> None:
    if module_name == "cli.db":
        from cli import db

        app.add_typer(db.app, name="db")
    elif module_name in ("cli.demo", "cli.serve", "cli.status"):
        name = module_name.removeprefix("cli.")
        app.command()(getattr(__import__(module_name, fromlist=[name]), name))
    else:
        try:
            module = __import__(module_name, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            return
        module.register(app)


def _command(argv: Sequence[str]) -> str | None:
    """The top-level command named in argv (the root takes only flags, so the first non-flag)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def exit_code(exc: CafError) -> int:
    """The documented exit code for an error that reached the top of a command."""
    if isinstance(exc, TransientError):
        return EXIT_UNREACHABLE
    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    return EXIT_USAGE


def run(argv: Sequence[str] | None = None) -> int:
    """Run `caf ARGV`; errors become one or two lines; returns the documented exit code."""
    from rich.markup import escape

    from cli.context import err_console

    args = list(argv) if argv is not None else sys.argv[1:]
    _register(_command(args))
    try:
        app(args=args, prog_name="caf")
    except CafError as exc:
        code = exit_code(exc)
        label = "unreachable" if code == EXIT_UNREACHABLE else "error"
        err_console.print(f"[red]{label}:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def main() -> None:
    """Entry point of the `caf` script."""
    from cli.context import pause_gc, quiet_exit

    pause_gc()
    quiet_exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
