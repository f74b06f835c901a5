"""`caf status`: what landed, what failed, what ran; one table's freshness; the last hours' metrics.

    caf status                    files / batches / task runs / tables; exit 1 on an unresolved ERROR
                                  or a stalled file (not loaded, no redelivery coming)
    caf status DATASET.TABLE      is that table up to date (exit 1 when stale or unknown)
    caf status --metrics [--hours N]   rows, bytes, durations and errors by reason since N hours ago

An ERROR is resolved when what failed has succeeded since: a newer version of the same object
loaded (e.g. after a retry), or a later run of the same task succeeded (e.g. after a restart).
"""

from __future__ import annotations

import json
import textwrap
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from cli.context import console, environment, environment_line, open_deps

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

STATUSES = ("NEW", "PROCESSING", "SUCCESS", "SKIPPED", "ERROR")
_STYLE = {"SUCCESS": "green", "ERROR": "red", "SKIPPED": "yellow", "PROCESSING": "cyan", "fresh": "green",
          "stale": "red", "stalled": "dark_orange"}
_NEWER_SUCCESS = ("EXISTS (SELECT 1 FROM files g WHERE g.bucket = f.bucket AND g.name = f.name"
                  " AND g.generation > f.generation AND g.status = 'SUCCESS')")
_LATER_SUCCESS = ("EXISTS (SELECT 1 FROM task_log s WHERE s.task_id = l.task_id AND s.status = 'SUCCESS'"
                  " AND s.finished_at > COALESCE(l.finished_at, l.started_at))")
_OPEN_RUN = f"l.status = 'ERROR' AND NOT {_LATER_SUCCESS}"
_OPEN_FILE = f"f.status = 'ERROR' AND NOT {_NEWER_SUCCESS}"
UNRESOLVED = {
    "files": f"SELECT count(*) FROM files f WHERE {_OPEN_FILE}",
    "task_runs": f"SELECT count(*) FROM task_log l WHERE {_OPEN_RUN}",
    "batches": "SELECT count(*) FROM task_batch b WHERE b.status = 'ERROR' AND ("
               f" EXISTS (SELECT 1 FROM task_log l WHERE l.batch_id = b.id AND {_OPEN_RUN})"
               f" OR EXISTS (SELECT 1 FROM files f WHERE f.batch_id = b.id AND {_OPEN_FILE})"
               " OR NOT EXISTS (SELECT 1 FROM files f WHERE f.batch_id = b.id UNION ALL"
               "  SELECT 1 FROM task_log l WHERE l.batch_id = b.id AND l.status = 'ERROR'))",
}


def status(
    target: str | None = typer.Argument(None, help="DATASET.TABLE: is that table up to date?"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    metrics: bool = typer.Option(False, "--metrics", help="Summarise rows, bytes, durations and errors."),
    hours: float = typer.Option(24.0, "--hours", min=0.01, help="Window of --metrics, in hours."),
) -> None:
    """Files, batches, task runs and tables by status; exits 1 when anything is in ERROR (unresolved)
    or stalled (a file not loaded after a transient failure, with no redelivery coming).

    The first line names the environment read (APP_ENV, metadata database, warehouse, storage).
    """
    deps = open_deps()
    if not as_json:
        console.print(f"[dim]{escape(environment_line(deps.settings))}[/]", highlight=False, overflow="fold")
    if target:
        _table_status(deps, target, as_json=as_json)
    elif metrics:
        _metrics(deps, hours, as_json=as_json)
    else:
        _overview(deps, as_json=as_json)


def collect(session: Session, *, recent: int = 10, stall: tuple[datetime, datetime] | None = None) -> dict[str, Any]:
    """The overview: counts by status, recent errors, unresolved ERROR counts, batches, failed runs, tables;
    with `stall` (the cutoffs of `pipeline.stalled.cutoffs`), the files and batches that stopped moving."""
    from sqlalchemy import text

    from database.files import stalled_files
    from database.status import summary

    data = summary(session=session, recent=recent)
    stuck = stalled_files(session=session, cutoffs=stall) if stall else []
    data["stalled_files"] = [{"id": f["id"], "object": f"gs://{f['bucket']}/{f['name']}#{f['generation']}",
                              "status": f["status"], "attempts": f["attempts"], "last_error": f["last_error"],
                              "since": f["since"], "batch_id": f["batch_id"]} for f in stuck]
    stalled_batches = {f["batch_id"] for f in stuck if f["batch_id"] is not None}
    data["stalled"] = {"files": len(stuck), "batches": len(stalled_batches)}
    data["unresolved"] = {what: int(session.execute(text(sql)).scalar_one()) for what, sql in UNRESOLVED.items()}
    data["recent_batches"] = [dict(r) for r in session.execute(text(
        "SELECT b.id, b.status, b.trigger, b.root, b.started_at, b.finished_at,"
        " (SELECT count(*) FROM task_log l WHERE l.batch_id = b.id) AS runs,"
        " (SELECT count(*) FROM task_log l WHERE l.batch_id = b.id AND l.status = 'ERROR') AS errors"
        " FROM task_batch b ORDER BY b.id DESC LIMIT :n"), {"n": recent}).mappings()]
    for b in data["recent_batches"]:
        b["stalled"] = b["id"] in stalled_batches
    data["recent_failed_runs"] = [dict(r) for r in session.execute(text(
        "SELECT l.id, l.batch_id, t.name AS task, t.kind, l.attempt, l.finished_at, l.error, l.remote_id"
        f" FROM task_log l JOIN tasks t ON t.id = l.task_id WHERE {_OPEN_RUN}"
        " ORDER BY l.id DESC LIMIT :n"), {"n": recent}).mappings()]
    names = session.execute(text(  # registered tables and the tables tasks produce
        "SELECT d.name || '.' || tb.name FROM tables tb JOIN domain d ON d.id = tb.domain_id UNION"
        " SELECT jsonb_array_elements_text(config->'produces') FROM tasks"
        "  WHERE enabled AND jsonb_typeof(config->'produces') = 'array' ORDER BY 1")).scalars()
    data["tables"] = [_freshness(session, name, None) for name in names]
    return data


def _overview(deps: Any, *, as_json: bool) -> None:
    from database.session import unit_of_work
    from pipeline.stalled import cutoffs

    with unit_of_work(deps.sessions) as session:
        data = collect(session, stall=cutoffs(deps))
    data["environment"] = environment(deps.settings)
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        _print_overview(data)
    if any(data["unresolved"].values()) or data["stalled"]["files"]:
        raise typer.Exit(1)


def _print_overview(data: dict[str, Any]) -> None:
    counts = Table(title="CAF status")
    for col in ("what", *STATUSES, "unresolved ERROR"):
        counts.add_column(col, justify="left" if col == "what" else "right")
    for what in ("files", "batches", "task_runs"):
        by = data[what]
        counts.add_row(what, *(str(by.get(s, "")) for s in STATUSES), str(data["unresolved"][what] or ""))
    console.print(counts)
    if data["stalled_files"]:
        stalled = Table(title="stalled files: not loaded, no redelivery coming (caf backfill or the sweep retries)")
        for col in ("file", "object", "attempts", "batch", "since", "last error"):
            stalled.add_column(col, overflow="fold", no_wrap=col in ("file", "attempts", "batch", "since"))
        for f in data["stalled_files"]:
            stalled.add_row(str(f["id"]), f["object"], str(f["attempts"]), str(f["batch_id"] or ""), _when(f["since"]),
                            f"[dark_orange]{escape(str(f['last_error'] or 'no error recorded'))}[/]")
        console.print(stalled)
    if data["recent_file_errors"]:
        files = Table(title="recent file errors")
        for col in ("file", "object", "error", "at"):
            files.add_column(col, overflow="fold", no_wrap=col in ("file", "at"))
        for err in data["recent_file_errors"]:
            files.add_row(str(err["id"]), err["object"], f"[red]{escape(str(err['error']))}[/]", _when(err["at"]))
        console.print(files)
    if data["recent_batches"]:
        batches = Table(title="recent batches")
        for col in ("batch", "status", "trigger", "root", "runs", "started"):
            batches.add_column(col, no_wrap=col != "root", overflow="fold")
        for b in data["recent_batches"]:
            runs_text = f"{b['runs']}" + (f" ({b['errors']} ERROR)" if b["errors"] else "")
            shown = "stalled" if b["stalled"] else b["status"]
            batches.add_row(str(b["id"]), _styled(shown), b["trigger"], escape(b["root"] or ""), runs_text,
                            _when(b["started_at"]))
        console.print(batches)
    if data["recent_failed_runs"]:
        runs = Table(title="failed task runs")
        for col in ("run", "batch", "task", "kind", "attempts", "remote id"):
            runs.add_column(col, overflow="fold", no_wrap=col != "remote id")
        for r in data["recent_failed_runs"]:
            runs.add_row(str(r["id"]), str(r["batch_id"]), r["task"], r["kind"], str(r["attempt"]),
                         r["remote_id"] or "")
        console.print(runs)
        for r in data["recent_failed_runs"]:  # the errors as paragraphs: wrapped at words, never cut
            error = textwrap.shorten(r["error"] or "", width=300, placeholder=" …")
            console.print(f"run {r['id']} ({escape(r['task'])}): [red]{escape(error)}[/]", highlight=False)
    if data["tables"]:
        tables = Table(title="tables")
        for col in ("table", "freshness", "why"):
            tables.add_column(col, overflow="fold")
        for t in data["tables"]:
            tables.add_row(t["table"], _styled(t["status"]), "; ".join(t["reasons"]))
        console.print(tables)


def _freshness(session: Session, name: str, warehouse: Any) -> dict[str, Any]:
    dataset, _, table = name.partition(".")
    try:
        from engine.freshness import table_freshness
    except ImportError:
        return {"table": name, "status": "unknown", "reasons": ["freshness is not available"], "files": [],
                "producer": None, "upstream": [], "rows": None}
    return dict(table_freshness(session=session, warehouse=warehouse, dataset=dataset, table=table))


def _table_status(deps: Any, target: str, *, as_json: bool) -> None:
    from database.session import unit_of_work

    dataset, sep, table = target.partition(".")
    if not sep or not dataset or not table or "." in table:
        raise typer.BadParameter(f"{target!r} is not DATASET.TABLE", param_hint="TARGET")
    with unit_of_work(deps.sessions) as session:
        data = _freshness(session, target, deps.warehouse)
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        try:
            from cli.tasks import print_freshness
        except ImportError:
            console.print(f"{data['table']} is {_styled(data['status'])}: {'; '.join(data['reasons'])}")
        else:
            print_freshness(data)
    if data["status"] != "fresh":
        raise typer.Exit(1)


def _metrics(deps: Any, hours: float, *, as_json: bool) -> None:
    from database.session import unit_of_work
    from handlers.metrics import summary

    since = deps.clock() - timedelta(hours=hours)
    with unit_of_work(deps.sessions) as session:
        data = summary(session=session, since=since)
    data["hours"] = hours
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    files = Table(title=f"files since {since:%Y-%m-%d %H:%M} UTC (last {hours:g} h)")
    for col in ("status", "files", "rows read", "rows loaded", "rows rejected", "bytes", "avg ms", "p95 ms", "max ms"):
        files.add_column(col, justify="left" if col == "status" else "right")
    for status_name, m in data["files"]["by_status"].items():
        files.add_row(_styled(status_name), *(_n(m[k]) for k in ("count", "rows_read", "rows_loaded",
                                                                  "rows_rejected", "bytes", "avg_ms", "p95_ms",
                                                                  "max_ms")))
    console.print(files)
    runs = Table(title="task runs")
    for col in ("kind", "status", "runs", "avg ms", "p95 ms"):
        runs.add_column(col, justify="right" if col in ("runs", "avg ms", "p95 ms") else "left")
    for r in data["task_runs"]["by_kind"]:
        runs.add_row(r["kind"], _styled(r["status"]), _n(r["count"]), _n(r["avg_ms"]), _n(r["p95_ms"]))
    console.print(runs)
    errors = Table(title="errors by reason")
    for col in ("what", "reason", "count"):
        errors.add_column(col, justify="right" if col == "count" else "left")
    for what in ("files", "task_runs"):
        for reason, n in data[what]["errors_by_reason"].items():
            errors.add_row(what, reason, _n(n))
    console.print(errors)
    batches = ", ".join(f"{s} {m['count']}" for s, m in data["batches"].items())
    console.print(f"batches: {batches or 'none'}")


def _when(value: Any) -> str:
    """A timestamp in 16 characters (UTC, to the minute): fits an 80-column table unbroken."""
    from datetime import datetime

    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    return f"{value:%Y-%m-%d %H:%M}" if value else ""


def _styled(value: str) -> str:
    style = _STYLE.get(value)
    return f"[{style}]{value}[/]" if style else value


def _n(value: Any) -> str:
    return "" if value is None else f"{value:,}"
