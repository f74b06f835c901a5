"""Building Deps for CLI commands: settings, logging, the embedded stack, migrations; output helpers."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from app.deps import Deps

console = Console()
err_console = Console(stderr=True)

# Logger names whose INFO lines are chatter on a terminal (pgserver says "exiting ... remaining pids"
# at every exit): they speak only at WARNING and above unless LOG_LEVEL=DEBUG.
THIRD_PARTY = ("pgserver", "duckdb", "alembic", "urllib3", "google", "werkzeug", "functions_framework")


def configure_logging(settings: Any, *, default: str = "ERROR") -> None:
    """Log lines a command shows: its tables already say what happened (a failed file's reason
    included), so by default only ERROR lines (`caf serve`: WARNING); LOG_LEVEL set explicitly
    wins. Third-party loggers stay at WARNING or above unless LOG_LEVEL=DEBUG."""
    import logging

    import logs
    from handlers.routes import ensure_logging

    ensure_logging()  # the handlers' own one-time setup runs now, so it cannot undo this one later
    explicit = os.environ.get("LOG_LEVEL")
    level = settings.log_level if explicit or settings.log_level != "INFO" else default
    logs.configure(settings.log_format, level)
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING)


_gc_paused = False


def pause_gc() -> None:
    """No cyclic garbage collection while a `caf` process starts; `open_deps` resumes it.

    Start-up creates the objects of ~1,000 modules and almost no garbage: the collector's passes
    over them (two full ones in a `caf ingest`) were ~0.1 s of a one-file ingest. Resumed after
    freezing what start-up made (`gc.freeze`), so no later full pass walks it again.
    """
    global _gc_paused
    import gc

    if gc.isenabled():
        gc.disable()
        _gc_paused = True


def resume_gc() -> None:
    """Undo `pause_gc` (once; a no-op otherwise), with what exists so far frozen."""
    global _gc_paused
    if _gc_paused:
        import gc

        gc.freeze()
        gc.enable()
        _gc_paused = False


def open_deps(*, migrate: bool | None = None, log_default: str = "ERROR") -> Deps:
    """Deps for a CLI command; locally the schema is brought to head first (cheap when current).

    Fails fast with one line naming the setting when the metadata database is unreachable.
    """
    from app.deps import get_deps
    from config.settings import get_settings

    settings = get_settings()
    configure_logging(settings, default=log_default)
    deps = get_deps()  # the installed Deps (tests, `caf serve`), or one built from these settings
    check_database(deps)
    if migrate if migrate is not None else settings.app_env != "prod":
        ensure_migrated(deps)
    resume_gc()  # start-up done: the command's own work runs with the collector on
    return deps


def check_database(deps: Deps) -> None:
    """Connect once; an unreachable database becomes a TransientError naming where it was looked for."""
    from database.session import probe

    probe(deps.engine, deps.settings)


def ensure_migrated(deps: Deps) -> bool:
    """Upgrade to head if needed; returns True when a migration ran."""
    from database import migrate

    if migrate.revision_of(deps.engine) == migrate.head():
        return False
    url = deps.engine.url.render_as_string(hide_password=False)
    with deps.engine.begin() as conn:
        cfg = migrate.alembic_config(url)
        cfg.attributes["connection"] = conn
        from alembic import command

        command.upgrade(cfg, "head")
    return True


def environment(settings: Any) -> dict[str, str]:
    """Which environment a command reads: APP_ENV, the metadata database, warehouse and storage."""
    from logs import redact

    if settings.cloud_sql_instance:
        database = f"Cloud SQL {settings.cloud_sql_instance}"
    elif settings.database_url:
        database = redact(settings.database_url)
    else:
        database = f"embedded PostgreSQL in {settings.local_dir}"
    return {"app_env": settings.app_env, "metadata": database, "warehouse": settings.warehouse_url,
            "storage": settings.storage_url}


def environment_line(settings: Any) -> str:
    env = environment(settings)
    return (f"APP_ENV={env['app_env']} · metadata {env['metadata']} · warehouse {env['warehouse']}"
            f" · storage {env['storage']}")


def print_json(data: Any) -> None:
    """Machine-readable output: one JSON document on stdout, nothing else."""
    typer.echo(json.dumps(data, indent=2, default=str))


def quiet_exit(code: int) -> None:
    """Exit without the interpreter's teardown chatter.

    Objects of native extensions (DuckDB's nanobind bindings) still referenced by a failed task's
    traceback make the teardown print `nanobind: leaked N instances!` dozens of times. A CLI
    process has nothing left to do: run the exit hooks (pgserver releases its handle, logging
    flushes), flush what it wrote, then end before the interpreter's teardown.
    """
    import atexit
    import threading

    for thread in threading.enumerate():  # what the interpreter would wait for, in the same order
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


@contextlib.contextmanager
def transaction(deps: Deps, *, dry_run: bool) -> Iterator[Session]:
    """One unit of work that a dry run rolls back: the plan printed is exactly what would apply."""
    from database.session import unit_of_work

    with unit_of_work(deps.sessions) as session:
        yield session
        if dry_run:
            session.rollback()


def styled(value: str, style: str | None) -> str:
    """`value` in a Rich style (markup in the value escaped); plain when there is no style."""
    from rich.markup import escape

    return f"[{style}]{escape(value)}[/]" if style else escape(value)
