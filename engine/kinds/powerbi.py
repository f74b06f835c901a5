"""`powerbi` tasks: refresh a Power BI dataset (semantic model) and follow the refresh to its end.

Before starting, the refreshes already made today (UTC) are counted against the report's daily
limit (default 8, the shared-capacity limit): at the limit the task fails with a clear message
and an alert instead of failing at the remote. The refresh request id is recorded before
anything can redeliver; its status is followed by re-published check messages.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any

from database.models import PowerBiReport
from database.session import unit_of_work
from engine.kinds.base import Done, Outcome, Pending, RemoteFailure, TaskContext
from errors import PermanentError


def client(ctx: TaskContext) -> Any:
    return ctx.deps.powerbi  # ConfigError (permanent) when the service principal is not configured


def start(ctx: TaskContext) -> Outcome:
    if ctx.remote_id:
        return check(ctx)
    report = _report(ctx)
    powerbi = client(ctx)
    now = ctx.now()
    midnight = datetime.combine(now.date(), time.min, tzinfo=now.tzinfo)
    used = powerbi.refreshes_since(report["group_id"], report["dataset_id"], midnight)
    if used >= report["daily_limit"]:
        raise RemoteFailure(
            f"Power BI dataset {report['dataset_id']}: daily refresh limit of {report['daily_limit']} reached "
            f"({used} refreshes since 00:00 UTC); not refreshing until tomorrow",
            alert="limit_reached", detail={"dataset_id": report["dataset_id"], "refreshes_today": used,
                                           "daily_limit": report["daily_limit"]})
    request_id = powerbi.start_refresh(report["group_id"], report["dataset_id"], report["refresh_body"])
    ctx.record_remote_id(request_id)
    return Pending(_next_check(ctx), {"request_id": request_id, "status": "Unknown", "refreshes_today": used + 1})


def check(ctx: TaskContext) -> Outcome:
    request_id = ctx.remote_id
    if not request_id:
        raise PermanentError(f"task {ctx.task.name}: no refresh to check")
    report = _report(ctx)
    state = client(ctx).get_refresh(report["group_id"], report["dataset_id"], request_id)
    output = {"request_id": request_id, "status": state.status, "start_time": state.start_time,
              "end_time": state.end_time}
    if not state.done:
        return Pending(_next_check(ctx), output)
    if state.status == "Completed":
        return Done(output)
    raise RemoteFailure(f"Power BI refresh {request_id} of dataset {report['dataset_id']} {state.status}: "
                        f"{state.error or 'no error given'}", alert="remote_failure", detail=output)


def _next_check(ctx: TaskContext) -> Any:
    return ctx.now() + timedelta(seconds=int(ctx.task.config.get("poll_seconds") or 60))


def _report(ctx: TaskContext) -> dict[str, Any]:
    if ctx.task.power_bi_report_id is None:
        raise PermanentError(f"task {ctx.task.name}: no Power BI report attached (run `caf tasks sync`)")
    with unit_of_work(ctx.deps.sessions) as session:
        row = session.get(PowerBiReport, ctx.task.power_bi_report_id)
        if row is None:
            raise PermanentError(f"task {ctx.task.name}: report {ctx.task.power_bi_report_id} does not exist")
        return {"group_id": row.group_id, "dataset_id": row.dataset_id, "refresh_body": row.refresh_body,
                "daily_limit": row.daily_limit}
