"""`caf demo`: the embedded stack end to end, printing what it did."""

from __future__ import annotations

from cli.context import console, ensure_migrated, open_deps


def demo() -> None:
    """Start the embedded stack, migrate, and show the status."""
    deps = open_deps(migrate=False)
    settings = deps.settings
    console.rule("[bold]CAF demo")
    url = deps.engine.url
    console.print(f"metadata   PostgreSQL {url.host or 'unix socket'} db={url.database} (embedded: "
                  f"{settings.database_url is None and settings.cloud_sql_instance is None})")
    migrated = ensure_migrated(deps)
    console.print(f"schema     {'migrated to head' if migrated else 'already at head'}")
    console.print(f"warehouse  {settings.warehouse_url}")
    console.print(f"storage    {settings.storage_url}")
    from cli.status import status

    try:
        status(as_json=False)
    except SystemExit:
        pass
