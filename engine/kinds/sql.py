"""`sql` tasks: a `query` row run through the warehouse port (BigQuery job / DuckDB).

`batch_id`, `run_date` and the declared parameters travel as query parameters (`@name`), never
formatted into the text, so quotes and semicolons in values stay data. The job id is derived
from the task run: a redelivered attempt reattaches to its BigQuery job instead of running twice.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from database.models import Query
from database.session import unit_of_work
from engine.kinds.base import Done, Outcome, TaskContext
from errors import PermanentError

_REFERENCE = re.compile(r"(?<![:@\w])@(\w+)")


def start(ctx: TaskContext) -> Outcome:
    if ctx.task.query_id is None:
        raise PermanentError(f"task {ctx.task.name}: no query attached (run `caf tasks sync`)")
    with unit_of_work(ctx.deps.sessions) as session:
        query = session.get(Query, ctx.task.query_id)
        if query is None:
            raise PermanentError(f"task {ctx.task.name}: query {ctx.task.query_id} does not exist")
        sql, declared = query.sql_text, dict(query.parameters or {})
    params = bind_parameters(sql, declared, ctx.parameters, batch_id=ctx.batch_id, run_date=ctx.run_date,
                             task=ctx.task.name)
    result = ctx.deps.warehouse.query(sql, params, job_id=ctx.job_id, labels=ctx.labels)
    return Done({"rows_affected": result.rows_affected, "job_id": result.job_id or ctx.job_id})


check = start


def bind_parameters(sql: str, declared: dict[str, Any], values: dict[str, Any], *, batch_id: int,
                    run_date: date, task: str) -> dict[str, Any]:
    """Typed values for the parameters the SQL references (`@name`); others are not sent.

    Declared parameters take the batch's value, else their default; a missing value or one that
    does not convert to its declared type is a PermanentError naming the parameter.
    """
    referenced = set(_REFERENCE.findall(sql))
    params: dict[str, Any] = {}
    if "batch_id" in referenced:
        params["batch_id"] = batch_id
    if "run_date" in referenced:
        params["run_date"] = run_date
    for name, spec in declared.items():
        if name not in referenced:
            continue
        kind = str(spec.get("type", "STRING")).upper()
        raw = values.get(name, spec.get("default"))
        if raw is None:
            raise PermanentError(f"task {task}: parameter {name!r} has no value and no default")
        params[name] = convert(raw, kind, name=name, task=task)
    return params


def convert(raw: Any, kind: str, *, name: str, task: str) -> Any:
    try:
        if kind == "STRING":
            return str(raw)
        if kind == "INT64":
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError(raw)
            return int(raw)
        if kind == "FLOAT64":
            return float(raw)
        if kind == "NUMERIC":
            return Decimal(str(raw))
        if kind == "BOOL":
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("true", "false", "1", "0"):
                return str(raw).lower() in ("true", "1")
            raise ValueError(raw)
        if kind == "DATE":
            return raw if isinstance(raw, date) else date.fromisoformat(str(raw))
        if kind == "TIMESTAMP":
            return raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except (ValueError, TypeError, InvalidOperation):
        raise PermanentError(f"task {task}: parameter {name!r}: {raw!r} is not a {kind}") from None
    raise PermanentError(f"task {task}: parameter {name!r} has unknown type {kind}")
