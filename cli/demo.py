"""`caf demo`: the embedded stack end to end, printing what it did."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

from rich.table import Table

from cli.context import console, ensure_migrated, open_deps

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BUCKET = "landing"


def _sample_files(workdir: Path) -> list[tuple[Path, str]]:
    """Realistic samples: orders CSV, customers NDJSON.gz, a products workbook with two sheets."""
    workdir.mkdir(parents=True, exist_ok=True)
    orders = workdir / "orders-2026-11-19.csv"
    shutil.copyfile(EXAMPLES / "files" / "orders-2026-11-19.csv", orders)
    customers = workdir / "customers-2026-11-19.ndjson.gz"
    with (EXAMPLES / "files" / "customers.ndjson").open("rb") as src, gzip.open(customers, "wb") as dst:
        shutil.copyfileobj(src, dst)
    products = workdir / "products.xlsx"
    from openpyxl import Workbook

    book = Workbook()
    notes = book.active
    notes.title = "Notes"
    notes.append(["This sheet is documentation and is not loaded."])
    sheet = book.create_sheet("Products")
    sheet.append(["sku", "title", "price", "in_stock"])
    for row in (["SKU-1", "Espresso cup", 9.5, True], ["SKU-2", "Grinder", 129.0, False],
                ["SKU-3", "Beans 1 kg", 18.25, True]):
        sheet.append(row)
    book.save(products)
    return [(orders, "sales/orders/"), (customers, "crm/customers/"), (products, "catalog/products/")]


def _print_tables(deps: Any) -> None:
    for dataset, table, cols in (("sales", "orders", "order_id, amount, order_date, note, _file_id, _source_row"),
                                 ("sales", "customers", "customer_id, name, country, tags, _source_row"),
                                 ("catalog", "products", "sku, title, price, in_stock, _source_row")):
        result = deps.warehouse.query(f"SELECT {cols} FROM {dataset}.{table} ORDER BY 1 LIMIT 10")
        console.print(_result_table(f"{dataset}.{table}", result))


def _result_table(title: str, result: Any) -> Table:
    """Query rows as a table: values without spaces (numbers, dates, ids) kept whole, text wrapped."""
    cells = [["" if v is None else str(v) for v in row] for row in result.rows]
    view = Table(title=title)
    for i, col in enumerate(result.columns):
        view.add_column(col, no_wrap=all(" " not in row[i] for row in cells), overflow="fold")
    for row in cells:
        view.add_row(*row)
    return view


def demo() -> None:
    """Start the embedded stack, migrate, load sample files (once), run the sample DAG, show status."""
    from cli.ingest import deliver_all, drain_bus, print_outcomes
    from database.registry import sync_definition
    from database.session import unit_of_work
    from values.definitions import definition_files, parse_definition

    deps = open_deps(migrate=False)
    settings = deps.settings
    console.rule("[bold]CAF demo")
    url = deps.engine.url
    console.print(f"metadata   PostgreSQL via unix socket, database {url.database} "
                  f"({'embedded pgserver' if not settings.database_url else 'DATABASE_URL'})")
    console.print(f"schema     {'migrated to head' if ensure_migrated(deps) else 'already at head'}")
    console.print(f"warehouse  {settings.warehouse_url}")
    console.print(f"storage    {settings.storage_url}")

    console.rule("registry")
    with unit_of_work(deps.sessions) as session:
        for path in definition_files(EXAMPLES / "tables"):
            d = parse_definition(path)
            name = f"{d.dataset}.{d.table}"
            outcome = sync_definition(session=session, definition=d, path=path,
                                      per_tenant_datasets=settings.jobs.per_tenant_datasets)
            console.print(f"{name:<20} {outcome}")
    _sync_tasks(deps)

    console.rule("ingest sample files")
    samples = _sample_files(settings.local_dir / "demo")
    loaded = _loaded(deps, [prefix + path.name for path, prefix in samples])
    todo = [(path, prefix) for path, prefix in samples if prefix + path.name not in loaded]
    if loaded:
        console.print(f"already loaded by an earlier demo, not sent again: {', '.join(sorted(loaded))} "
                      "(`make clean` starts over)", highlight=False)
    infos = [deps.storage.put_file(BUCKET, prefix + path.name, path) for path, prefix in todo]
    if infos:
        print_outcomes(deliver_all(infos, deps, title="ingesting"), "first delivery")
        console.print("redelivering the first event (Pub/Sub and Eventarc deliver at least once) ...")
        table = "sales.orders" if infos[0].name.startswith("sales/orders/") else None
        before = deps.warehouse.count_rows("sales", "orders") if table else None
        again = deliver_all(infos[:1], deps, title="redelivering")
        after = deps.warehouse.count_rows("sales", "orders") if table else None
        console.print(f"file {again[0]['id']} is still {again[0]['status']}: the redelivered event was skipped"
                      + (f"; sales.orders has {after} rows before and after ({before} → {after})" if table else ""))
    _print_tables(deps)
    drain_bus(deps)
    console.rule("downstream tasks")
    _show_dag_run(deps)
    _show_batches(deps)

    console.rule("status")
    from cli.status import status

    try:
        status(target=None, as_json=False, metrics=False, hours=24.0)
    except SystemExit:
        pass


def _loaded(deps: Any, names: list[str]) -> set[str]:
    """Sample object names that already have a loaded version: a second demo does not send them again."""
    from sqlalchemy import select

    from database.models import File
    from database.session import unit_of_work

    with unit_of_work(deps.sessions) as session:
        return set(session.scalars(select(File.name).where(File.bucket == BUCKET, File.name.in_(names),
                                                            File.status == "SUCCESS")))


def _sync_tasks(deps: Any) -> None:
    tasks_dir = EXAMPLES / "tasks"
    try:
        from engine.sync import sync_directory  # type: ignore[attr-defined]
    except ImportError:
        return
    if tasks_dir.is_dir():
        from database.session import unit_of_work

        with unit_of_work(deps.sessions) as session:
            report = sync_directory(session=session, directory=tasks_dir)
        console.print(f"tasks      {report}")


def _show_dag_run(deps: Any) -> None:
    """The sample DAG (wait for orders + customers → two SQL transforms → summary) as it ran."""
    from sqlalchemy import select

    from database.models import TaskBatch, TaskLog
    from database.session import unit_of_work

    with unit_of_work(deps.sessions) as session:
        batch_id = session.scalar(select(TaskBatch.id).join(TaskLog, TaskLog.batch_id == TaskBatch.id)
                                  .where(TaskLog.status == "SUCCESS").order_by(TaskBatch.id.desc()).limit(1))
    if batch_id is None:
        console.print("no task ran (sample DAG not synced?)")
        return
    try:
        from cli.tasks import print_batch
    except ImportError:
        return
    print_batch(deps, batch_id)
    if deps.warehouse.table_columns("sales", "sales_summary") is not None:
        result = deps.warehouse.query("SELECT country, customers, orders, revenue FROM sales.sales_summary ORDER BY 1")
        console.print(_result_table("sales.sales_summary (built by the DAG)", result))


def _show_batches(deps: Any) -> None:
    from sqlalchemy import select

    from database.models import TaskBatch
    from database.session import unit_of_work

    with unit_of_work(deps.sessions) as session:
        rows = session.execute(select(TaskBatch).order_by(TaskBatch.id.desc()).limit(5)).scalars().all()
        view = Table(title="recent batches")
        for col in ("batch", "trigger", "root", "status", "summary"):
            view.add_column(col, overflow="fold")
        for b in rows:
            view.add_row(str(b.id), b.trigger, b.root or "", b.status, summary_text(b.summary or {}))
    console.print(view)


def summary_text(summary: dict[str, Any]) -> str:
    """A batch summary in words (`SUCCESS 4, ERROR 0 · no task listens to sales.products`), not a dict."""
    parts = []
    if summary.get("counts"):
        parts.append(", ".join(f"{k} {v}" for k, v in summary["counts"].items()))
    if summary.get("failed"):
        names = [f["task"] if isinstance(f, dict) and "task" in f else str(f) for f in summary["failed"]]
        parts.append("failed: " + ", ".join(names))
    if summary.get("note"):
        parts.append(str(summary["note"]))
    if summary.get("parameters"):
        parts.append(", ".join(f"{k}={v}" for k, v in summary["parameters"].items()))
    if summary.get("duration_seconds") is not None:
        parts.append(f"{float(summary['duration_seconds']):.1f}s")
    return " · ".join(parts)
