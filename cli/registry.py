"""`caf registry sync DIR`: table definitions as files → the registry, compared with the warehouse first.

Like `terraform plan`/`apply`: each definition is compared with its existing warehouse table
(adapters.warehouse.drift) and the plan printed; `--dry-run` stops there. Otherwise the registry
is written, safe widenings are applied and new columns added; a type change that must rewrite
rows is only reported, with the command that applies it (`caf table rebuild`), and exits 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from cli.context import console, err_console, open_deps, print_json, styled, transaction

if TYPE_CHECKING:
    from adapters.warehouse.drift import TablePlan
    from app.deps import Deps
    from values.definitions import TableDefinition
    from values.tables import TableTarget

app = typer.Typer(help="Table registry (one YAML/JSON definition per table).", no_args_is_help=True)
_STYLE = {"created": "green", "updated": "cyan", "would create": "green", "would update": "cyan"}


def warehouse_target(deps: Deps, definition: TableDefinition) -> TableTarget:
    """The definition's table as the warehouse names it (`{tenant}_{dataset}` when datasets are per tenant)."""
    import dataclasses

    from database.tenancy import tenant_dataset

    target = definition.table_target()
    dataset = tenant_dataset(definition.dataset, definition.tenant, per_tenant=deps.settings.jobs.per_tenant_datasets)
    return dataclasses.replace(target, dataset=dataset)


def plan_for(deps: Deps, target: TableTarget) -> TablePlan:
    from adapters.warehouse.drift import plan_table

    return plan_table(target, deps.warehouse.table_columns(target.dataset, target.table))


def apply_safe(deps: Deps, target: TableTarget, plan: TablePlan) -> None:
    """Widen in place and add missing columns; never touches a column that needs a rebuild."""
    widen = {c.column: c.want for c in plan.of("widen")}
    if widen:
        deps.warehouse.widen_columns(target, widen)
    if plan.exists and plan.of("add") and not plan.needs_rebuild:
        deps.warehouse.ensure_table(target)


@app.command()
def sync(
    directory: Path = typer.Argument(..., help="Folder of table definitions."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (registry and warehouse); change nothing."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Load every definition in DIRECTORY after comparing each with its warehouse table.

    Safe widenings (INT64 → NUMERIC/BIGNUMERIC, NUMERIC → BIGNUMERIC) and new columns are applied;
    any other type change is reported with the `caf table rebuild` command that applies it (exit 1).
    """
    from database.registry import sync_definition
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
            err_console.print(f"[red]invalid:[/] {problem}", highlight=False)
        raise typer.Exit(2)
    deps = open_deps()
    plans: dict[str, tuple[TableTarget, TablePlan]] = {}
    for _, definition in definitions:
        if definition.target != "staging":
            target = warehouse_target(deps, definition)
            plans[f"{definition.tenant}:{definition.dataset}.{definition.table}"] = (target, plan_for(deps, target))
    rows = []
    with transaction(deps, dry_run=dry_run) as session:
        for path, definition in definitions:
            outcome = sync_definition(session=session, definition=definition, path=path,
                                      per_tenant_datasets=deps.settings.jobs.per_tenant_datasets)
            name = f"{definition.dataset}.{definition.table}"
            plan = plans.get(f"{definition.tenant}:{name}")
            registry = f"would {outcome[:-1]}" if dry_run and outcome != "unchanged" else outcome
            warehouse = plan[1].as_dict() if plan else {"summary": "Postgres staging (no warehouse table)"}
            rows.append({"table": name, "registry": registry, "source": definition.source_glob,
                         "warehouse": warehouse})
    if not dry_run:
        for target, plan in plans.values():
            apply_safe(deps, target, plan)
    rebuild = [p.name for _, p in plans.values() if p.needs_rebuild]
    if as_json:
        print_json({"directory": str(directory), "dry_run": dry_run, "tables": rows, "needs_rebuild": rebuild})
    else:
        _print(directory, rows, dry_run=dry_run, rebuild=rebuild)
    if rebuild:
        raise typer.Exit(1)


def _print(directory: Path, rows: list[dict[str, Any]], *, dry_run: bool, rebuild: list[str]) -> None:
    console.print(f"[bold]registry sync[/] {escape(str(directory))}" + (" [yellow](dry run: nothing changed)[/]"
                                                                      if dry_run else ""), highlight=False)
    table = Table()
    table.add_column("table", overflow="fold")
    table.add_column("registry")
    table.add_column("warehouse table", overflow="fold")
    for row in rows:
        wh = row["warehouse"]
        summary = wh["summary"]
        if wh.get("needs_rebuild"):
            summary = f"[red]{summary}[/]"
        elif not dry_run and wh.get("changes"):
            summary = summary.replace("widen ", "widened ").replace("add ", "added ")
        table.add_row(row["table"], styled(row["registry"], _STYLE.get(row["registry"])), summary)
    console.print(table)
    for name in rebuild:
        console.print(f"[red]{name}[/]: a column type changed in a way that rewrites existing rows; files for "
                      f"it fail until you run [bold]caf table rebuild {name}[/] (see docs/registry.md, "
                      "\"Changing a column type\")", highlight=False)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="registry")
