"""One function per page of the operator site; each reads through `queries` in the caller's tenant.

Every read runs in `tenant_session` (role caf_app, `app.tenant_id` = the caller's tenant): the
queries filter by tenant themselves, and row-level security returns nothing when one does not.
Actions (retry, restart) check the tenant the same way, then act as the system.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from database.models import BATCH_STATUSES, FILE_STATUSES, TASK_KINDS, TASK_STATUSES
from database.tenancy import tenant_session
from errors import PermanentError
from handlers.web import Caller, actions, dag, queries, redirect, render, response

if TYPE_CHECKING:
    from sqlalchemy.orm import Session
    from werkzeug.wrappers import Response

    from app.deps import Deps

log = logging.getLogger("caf.web")
OVERVIEW_HOURS = 24
MAX_QUARANTINE_BYTES = 20 << 20
MAX_REJECTED_SHOWN = 1000
RUN_STATUSES = (*TASK_STATUSES, "RETRIED")  # RETRIED: an earlier try that failed transiently
NOTICES = {"retried": "The file was delivered again; its outcome is below.",
           "restarted": "The failed and skipped tasks were queued again."}


class BadRequest(PermanentError):
    http_status = 400


@contextlib.contextmanager
def _session(deps: Deps, caller: Caller) -> Iterator[Session]:
    with tenant_session(deps.tenant_sessions, caller.tenant) as session:
        yield session


def _choice(value: str | None, allowed: tuple[str, ...], name: str) -> str | None:
    if not value:
        return None
    if value not in allowed:
        raise BadRequest(f"{name} must be one of {', '.join(allowed)}")
    return value


def _notice(request: Any) -> str | None:
    return NOTICES.get(request.args.get("done", ""))


def _with_state(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for r in runs:
        r["state"] = dag.run_state(r)
        output = r.get("output") or {}
        shown = {k: output[k] for k in ("rows_affected", "invocation", "request_id", "waiting_for") if k in output}
        r["detail"] = ", ".join(f"{k}={v}" for k, v in shown.items())
    return runs


# -- pages ---------------------------------------------------------------------------------------
def overview(request: Any, deps: Deps, caller: Caller) -> Response:
    from handlers.metrics import summary

    since = deps.clock() - timedelta(hours=OVERVIEW_HOURS)
    with _session(deps, caller) as session:
        counts = queries.counts(session=session, tenant=caller.tenant)
        errors = queries.files(session=session, tenant=caller.tenant, status="ERROR", limit=10)
        recent = queries.batches(session=session, tenant=caller.tenant, limit=10)
        metrics = summary(session=session, since=since, tenant=caller.tenant)
        stuck = _stalled(deps, session, caller)
    _mark_stalled(recent, {f["batch_id"] for f in stuck})
    return render("overview.html", caller, section="Overview", counts=counts, errors=errors, batches=recent,
                  stalled=stuck,
                  metrics=metrics, hours=OVERVIEW_HOURS, notice=_notice(request),
                  refresh="/" if _running(recent) else None)


def _stalled(deps: Deps, session: Session, caller: Caller) -> list[dict[str, Any]]:
    """The caller's files that stopped moving (pipeline.stalled), with their last transient error."""
    from database.files import stalled_files
    from pipeline.stalled import cutoffs

    return stalled_files(session=session, cutoffs=cutoffs(deps), tenant=caller.tenant)


def _mark_stalled(rows: list[dict[str, Any]], ids: set[int], key: str = "id") -> None:
    """Show rows (batches or files) that stopped moving as `stalled` instead of their stored status."""
    for r in rows:
        r["shown_status"] = "stalled" if r[key] in ids else r["status"]


def _here(path: str, **filters: str | None) -> str:
    """The page's own URL from its validated filters (what its auto-refresh reloads)."""
    from urllib.parse import urlencode

    query = urlencode({k: v for k, v in filters.items() if v})
    return f"{path}?{query}" if query else path


def _running(rows: list[dict[str, Any]]) -> bool:
    """Any batch or run on the page still moving: the page reloads itself until it ends."""
    return any(r.get("status") == "PROCESSING" for r in rows)


def files(request: Any, deps: Deps, caller: Caller) -> Response:
    args = request.args
    status = _choice(args.get("status"), FILE_STATUSES, "status")
    table = args.get("table") or None
    day = None
    if args.get("date"):
        try:
            day = date.fromisoformat(args["date"])
        except ValueError:
            raise BadRequest("date must be YYYY-MM-DD") from None
    with _session(deps, caller) as session:
        rows = queries.files(session=session, tenant=caller.tenant, status=status, table=table, day=day)
        tables = queries.table_names(session=session, tenant=caller.tenant)
        _mark_stalled(rows, {f["id"] for f in _stalled(deps, session, caller)})
    filters = {"status": status, "table": table, "date": day.isoformat() if day else None}
    return render("files.html", caller, section="Files", files=rows, tables=tables, statuses=FILE_STATUSES,
                  filters=filters)


def file(request: Any, deps: Deps, caller: Caller, id: str) -> Response:
    from values.reasons import error_reason

    row = _file(deps, caller, int(id))
    with _session(deps, caller) as session:
        _mark_stalled([row], {f["id"] for f in _stalled(deps, session, caller)})
    detail = row["detail"] or ""
    retried_as = detail.removeprefix("retried as file ") if detail.startswith("retried as file ") else None
    retried_as = retried_as or (str(row["newer_id"]) if row["newer_id"] else None)
    return render("file.html", caller, section="Files", f=row, reason=error_reason(row["error_message"]),
                  retried_as=retried_as, notice=_notice(request))


def _file(deps: Deps, caller: Caller, file_id: int) -> dict[str, Any]:
    with _session(deps, caller) as session:
        row = queries.file(session=session, tenant=caller.tenant, file_id=file_id)
    if row is None:
        raise actions.NotFound(f"no file {file_id}")
    return row


def quarantine(request: Any, deps: Deps, caller: Caller, id: str) -> Response:
    """The rejected rows of a file (NDJSON: row number, reason, raw values) from the quarantine object."""
    row = _file(deps, caller, int(id))
    where = actions.object_of(row["quarantine_uri"], deps.settings)
    if where is None:
        raise actions.NotFound(f"file {id} has no quarantine object")
    with deps.storage.open_read(*where) as fh:
        data = fh.read(MAX_QUARANTINE_BYTES + 1)
    if len(data) > MAX_QUARANTINE_BYTES:
        data = data[:MAX_QUARANTINE_BYTES] + b"\n... truncated; read the whole object from the bucket\n"
    return response(data, mimetype="text/plain",
                    headers={"Content-Disposition": content_disposition(where[1].rsplit("/", 1)[-1])})


def content_disposition(name: str) -> str:
    """`inline` with an ASCII `filename` fallback and the exact name as RFC 6266 / 5987 `filename*`.

    Header values must be Latin-1; object names are any UTF-8.
    """
    from urllib.parse import quote

    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)[:200] or "download"
    exact = quote(name.encode("utf-8", "backslashreplace"), safe="")
    return f"inline; filename=\"{fallback}\"; filename*=UTF-8''{exact}"


def rejected(request: Any, deps: Deps, caller: Caller, id: str) -> Response:
    """The rejected rows of a file as a page (row, reason, raw values), linking back to the file."""
    import json

    row = _file(deps, caller, int(id))
    where = actions.object_of(row["quarantine_uri"], deps.settings)
    if where is None:
        raise actions.NotFound(f"file {id} has no quarantine object")
    rows: list[dict[str, Any]] = []
    with deps.storage.open_read(*where) as fh:
        for line in fh:  # only the first rows are read: the file row knows how many there are
            if len(rows) >= MAX_REJECTED_SHOWN:
                break
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                item = {"raw": line.decode("utf-8", "replace")}
            raw = item.get("raw")
            rows.append({"row": item.get("row"), "reason": item.get("reason"),
                         "raw": raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False)})
    total = max(int(row["rows_rejected"] or 0), len(rows))
    return render("rejected.html", caller, section="Files", f=row, rows=rows, total=total)


def retry(request: Any, deps: Deps, caller: Caller, id: str) -> Response:
    file_id = int(id)
    row = _file(deps, caller, file_id)
    if request.method == "POST":
        _check_form(request, caller)
        new_id = actions.retry_file(file_id, deps, tenant=caller.tenant)
        return redirect(f"/files/{new_id}?done=retried")
    if row["status"] != "ERROR":
        raise actions.Conflict(f"file {file_id} is {row['status']}; only a file in ERROR can be retried")
    facts = [("object", f"gs://{row['bucket']}/{row['name']}#{row['generation']}"), ("table", row["tbl"] or "–"),
             ("error", row["error_message"] or "")]
    return _confirm(request, caller, heading=f"Retry file {file_id}?", button="Retry the file", facts=facts,
                    question="The raw object goes back under its name as a new version and is ingested again "
                             "with the current table definition.", back=f"/files/{file_id}")


def batches(request: Any, deps: Deps, caller: Caller) -> Response:
    status = _choice(request.args.get("status"), BATCH_STATUSES, "status")
    with _session(deps, caller) as session:
        rows = queries.batches(session=session, tenant=caller.tenant, status=status)
        _mark_stalled(rows, {f["batch_id"] for f in _stalled(deps, session, caller)})
    return render("batches.html", caller, section="Batches", batches=rows, statuses=BATCH_STATUSES,
                  filters={"status": status}, refresh=_here("/batches", status=status) if _running(rows) else None)


def _batch(deps: Deps, caller: Caller, batch_id: int) -> tuple[dict[str, Any], list[dict[str, Any]], str,
                                                             list[dict[str, Any]]]:
    with _session(deps, caller) as session:
        row = queries.batch(session=session, tenant=caller.tenant, batch_id=batch_id)
        if row is None:
            raise actions.NotFound(f"no batch {batch_id}")
        runs = _with_state(queries.batch_runs(session=session, batch_id=batch_id))
        edges = queries.edges(session=session, task_ids=[int(r["task_id"]) for r in runs])
        files = queries.batch_files(session=session, batch_id=batch_id)
    return row, runs, dag.svg(runs, edges), files


def batch(request: Any, deps: Deps, caller: Caller, id: str) -> Response:
    row, runs, svg, files = _batch(deps, caller, int(id))
    with _session(deps, caller) as session:
        earlier = queries.batch_tries(session=session, batch_id=row["id"])
        stuck = [f for f in _stalled(deps, session, caller) if f["batch_id"] == row["id"]]
    _mark_stalled(files, {f["id"] for f in stuck})
    _mark_stalled([row], {row["id"]} if stuck else set())
    can_restart = row["status"] != "PROCESSING" and any(r["status"] in ("ERROR", "SKIPPED") for r in runs)
    return render("batch.html", caller, section="Batches", b=row, runs=runs, svg=svg, files=files, tries=earlier,
                  stalled=stuck, can_restart=can_restart, show_batch=False, notice=_notice(request),
                  refresh=f"/batches/{row['id']}" if row["status"] == "PROCESSING" else None)


def dag_svg(request: Any, deps: Deps, caller: Caller, id: str) -> Response:
    _, _, svg, _ = _batch(deps, caller, int(id))
    return response(svg, mimetype="image/svg+xml")


def restart(request: Any, deps: Deps, caller: Caller, id: str) -> Response:
    batch_id = int(id)
    row, runs, _, _ = _batch(deps, caller, batch_id)
    if request.method == "POST":
        _check_form(request, caller)
        actions.restart_batch(batch_id, deps, tenant=caller.tenant)
        return redirect(f"/batches/{batch_id}?done=restarted")
    again = sorted(r["name"] for r in runs if r["status"] in ("ERROR", "SKIPPED"))
    if not again or row["status"] == "PROCESSING":
        raise actions.Conflict(f"batch {batch_id} has nothing to restart (status {row['status']})")
    return _confirm(request, caller, heading=f"Restart batch {batch_id}?", button="Restart the batch",
                    question="The failed and skipped task runs run again under the same batch id; the runs that "
                             "succeeded are kept.", facts=[("tasks to run again", ", ".join(again))],
                    back=f"/batches/{batch_id}")


def runs(request: Any, deps: Deps, caller: Caller) -> Response:
    status = _choice(request.args.get("status"), RUN_STATUSES, "status")
    kind = _choice(request.args.get("kind"), TASK_KINDS, "kind")
    with _session(deps, caller) as session:
        rows = _with_state(queries.runs(session=session, tenant=caller.tenant, status=status, kind=kind))
    return render("runs.html", caller, section="Task runs", runs=rows, statuses=RUN_STATUSES, kinds=TASK_KINDS,
                  filters={"status": status, "kind": kind}, show_batch=True,
                  refresh=_here("/runs", status=status, kind=kind) if _running(rows) else None)


def tables(request: Any, deps: Deps, caller: Caller) -> Response:
    with _session(deps, caller) as session:
        names = sorted(set(queries.table_names(session=session, tenant=caller.tenant))
                       | set(queries.produced_tables(session=session, tenant=caller.tenant)))
        rows = [_freshness(session, None, name, caller.tenant) for name in names]
    return render("tables.html", caller, section="Tables", tables=rows, available=_freshness_fn() is not None)


def table(request: Any, deps: Deps, caller: Caller, dataset: str, table: str) -> Response:
    name = f"{dataset}.{table}"
    with _session(deps, caller) as session:
        known = name in queries.table_names(session=session, tenant=caller.tenant) or name in \
            queries.produced_tables(session=session, tenant=caller.tenant)
        if not known:
            raise actions.NotFound(f"no table {name}")
        data = _freshness(session, deps.warehouse, name, caller.tenant, _physical(session, deps, name, caller.tenant))
    return render("table.html", caller, section="Tables", t=data)


def _freshness_fn() -> Any:
    try:
        from engine.freshness import table_freshness
    except ImportError:
        return None
    return table_freshness


def _physical(session: Session, deps: Deps, name: str, tenant: str) -> str | None:
    """The warehouse dataset the tenant's registered table `name` loads into (None: not registered)."""
    from database.registry import find_registered

    dataset, _, table_name = name.partition(".")
    found = find_registered(session=session, dataset=dataset, table=table_name, tenant_id=tenant,
                            per_tenant_datasets=deps.settings.jobs.per_tenant_datasets)
    return found.target.dataset if found else None


def _freshness(session: Session, warehouse: Any, name: str, tenant: str,
               warehouse_dataset: str | None = None) -> dict[str, Any]:
    fn = _freshness_fn()
    dataset, _, table_name = name.partition(".")
    empty: dict[str, Any] = {"table": name, "status": "unknown", "reasons": [], "files": [], "producer": None,
                             "upstream": [], "rows": None}
    if fn is None:
        return empty
    try:
        with session.begin_nested():
            return dict(fn(session=session, warehouse=warehouse, dataset=dataset, table=table_name, tenant=tenant,
                           warehouse_dataset=warehouse_dataset))
    except Exception as exc:  # noqa: BLE001 - one table's problem must not hide the others
        log.warning("freshness of %s failed: %s", name, exc)
        return empty | {"reasons": [f"freshness could not be computed: {type(exc).__name__}"]}


# -- actions ---------------------------------------------------------------------------------------
def _confirm(request: Any, caller: Caller, *, heading: str, question: str, button: str,
             facts: list[tuple[str, str]], back: str) -> Response:
    from handlers.web.auth import csrf_token

    return render("confirm.html", caller, heading=heading, question=question, button=button, facts=facts,
                  back=back, action=request.path, csrf=csrf_token(caller.token, request.path))


def _check_form(request: Any, caller: Caller) -> None:
    from handlers.web.auth import csrf_ok

    if request.form.get("confirm") != "yes":
        raise BadRequest("the action was not confirmed")
    if caller.from_cookie and not csrf_ok(caller.token, request.path, request.form.get("csrf")):
        raise BadRequest("the form has expired or did not come from this page; open it again")
