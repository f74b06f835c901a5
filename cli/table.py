"""`caf table rebuild DATASET.TABLE`: bring a warehouse table to its registered column types.

The way forward after a type change that `caf registry sync` cannot apply in place (e.g. a
column registered INT64 by mistake and then corrected to STRING): existing rows are converted
in one atomic statement (DuckDB: one transaction; BigQuery: `CREATE OR REPLACE TABLE ... AS
SELECT` over itself), so later files load again. If any existing non-null value would not convert,
nothing changes and the command exits 1 naming the columns and counts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from cli.context import console, err_console, open_deps, print_json

if TYPE_CHECKING:
    from values.tables import TableTarget

app = typer.Typer(help="Warehouse tables of registered definitions.", no_args_is_help=True)


@app.command()
def rebuild(
    target: str = typer.Argument(..., help="DATASET.TABLE as registered (or its per-tenant warehouse name)."),
    tenant: str | None = typer.Option(None, help="The owning tenant, when several tenants register DATASET.TABLE."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the conversion plan; change nothing."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Convert DATASET.TABLE's existing rows to the registered column types, and add missing columns."""
    from adapters.warehouse.drift import plan_table
    from errors import PermanentError

    dataset, sep, name = target.partition(".")
    if not sep or not dataset or not name or "." in name:
        raise typer.BadParameter(f"{target!r} is not DATASET.TABLE", param_hint="TARGET")
    deps = open_deps()
    table = _registered_target(deps, dataset, name, tenant)
    if table is None:
        raise PermanentError(f"{target} is not a registered table (caf registry sync DIR registers it)")
    plan = plan_table(table, deps.warehouse.table_columns(table.dataset, table.table))
    convert = {c.column: c.want.removeprefix("ARRAY<").removesuffix(">") for c in plan.changes
               if c.action in ("widen", "convert")}
    result = {"table": target, "dry_run": dry_run, "plan": plan.as_dict(), "converted": [] if dry_run else
              sorted(convert)}
    if not plan.exists or not plan.changes:
        result["converted"] = []
        _report(result, as_json, "nothing to do: " + ("the table does not exist yet (created at the first load)"
                                                       if not plan.exists else "it matches the registry"))
        return
    if not dry_run:
        if convert:
            try:
                deps.warehouse.rebuild_table(table, convert)
            except PermanentError as exc:  # refused: values that would not convert; nothing changed
                err_console.print(f"[red]refused:[/] {exc}", highlight=False)
                raise typer.Exit(1) from None
        if plan.of("add"):
            deps.warehouse.ensure_table(table)
    _report(result, as_json, "dry run: nothing changed" if dry_run else
            f"{target} now matches the registry; files for it load again")


def _registered_target(deps: Any, dataset: str, name: str, tenant: str | None) -> TableTarget | None:
    """The registered table DATASET.TABLE names, by registry name or per-tenant warehouse dataset."""
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    from database.models import Table
    from database.registry import to_registered
    from database.session import unit_of_work
    from database.tenancy import tenant_dataset
    from errors import PermanentError

    per_tenant = deps.settings.jobs.per_tenant_datasets
    with unit_of_work(deps.sessions) as session:
        rows = session.scalars(select(Table).where(Table.name == name)
                               .options(selectinload(Table.columns), selectinload(Table.domain))).all()
        found = [to_registered(r, per_tenant_datasets=per_tenant) for r in rows
                 if (tenant is None or r.tenant_id == tenant)
                 and dataset in (r.domain.name, tenant_dataset(r.domain.name, r.tenant_id, per_tenant=per_tenant))]
    if len(found) > 1:
        owners = ", ".join(sorted(t.tenant_id for t in found))
        raise PermanentError(f"{dataset}.{name} is registered by several tenants ({owners}): add --tenant")
    return found[0].target if found else None


def _report(result: dict[str, object], as_json: bool, message: str) -> None:
    if as_json:
        print_json(result | {"message": message})
        return
    plan = result["plan"]
    assert isinstance(plan, dict)
    if plan["changes"]:
        view = Table(title=f"table rebuild {result['table']}")
        for col in ("column", "change", "from", "to"):
            view.add_column(col, overflow="fold")
        for c in plan["changes"]:
            view.add_row(c["column"], c["action"], c["from"] or "", c["to"])
        console.print(view)
    console.print(message, highlight=False)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="table")
