"""Building Deps for CLI commands: settings, logging, the embedded stack, migrations."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from app.deps import Deps

console = Console()
err_console = Console(stderr=True)


def open_deps(*, migrate: bool | None = None) -> Deps:
    """Deps for a CLI command; locally the schema is brought to head first (cheap when current)."""
    import logs
    from app.deps import get_deps
    from config.settings import get_settings

    settings = get_settings()
    logs.configure(settings.log_format, settings.log_level if settings.log_level != "INFO" else "WARNING")
    deps = get_deps()  # the installed Deps (tests, `caf serve`), or one built from these settings
    if migrate if migrate is not None else settings.app_env != "prod":
        ensure_migrated(deps)
    return deps


def ensure_migrated(deps: Deps) -> bool:
    """Upgrade to head if needed; returns True when a migration ran."""
    from database import migrate

    url = deps.engine.url.render_as_string(hide_password=False)
    if migrate.current(url) == migrate.head():
        return False
    with deps.engine.begin() as conn:
        cfg = migrate.alembic_config(url)
        cfg.attributes["connection"] = conn
        from alembic import command

        command.upgrade(cfg, "head")
    return True
