"""`powerbi` tasks: refresh a Power BI dataset (semantic model) and follow the refresh to its end.

Before starting, a slot of the dataset's daily limit (default 8, the shared-capacity limit) is
taken in Postgres, atomically per dataset and UTC day (`power_bi_refresh_day`, which also counts
what the remote's history shows): at the limit the task fails with a clear message and an alert
instead of failing at the remote, and two tasks starting at once cannot both pass. The intent
(request time) is committed with the slot, before the refresh is requested; a redelivery that
finds the intent but no request id (the reply was lost) adopts the API refresh the history shows
started after the intent and not recorded by another run, instead of refreshing again. The
request id is recorded the moment it is known; its status is followed by check messages.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any

from database.models import PowerBiReport
from database.session import unit_of_work
from engine.kinds.base import Done, Outcome, Pending, RemoteFailure, TaskContext
from errors import PermanentError

INTENT = "powerbi_intent"
"""Key in the run's output: when the refresh was requested (and the daily slot it took)."""
CLOCK_SKEW = timedelta(seconds=60)
"""How far Power BI's clock may lag ours when matching history entries to an intent."""


def client(ctx: TaskContext) -> Any:
    return ctx.deps.powerbi  # ConfigError (permanent) when the service principal is not configured


def start(ctx: TaskContext) -> Outcome:
    if ctx.remote_id:
        return check(ctx)
    report = _report(ctx)
    powerbi = client(ctx)
    intent = ctx.intent(INTENT)
    if intent:
        # An earlier delivery took a slot and asked for a refresh, and never learnt the answer.
        adopted = _adopt(ctx, report, intent)
        if adopted:
            return adopted
        used = int(intent.get("refreshes_today") or 0)
    else:
        used = _take_slot(ctx, report, powerbi)
    request_id = powerbi.start_refresh(report["group_id"], report["dataset_id"], report["refresh_body"])
    ctx.record_remote_id(request_id)
    return Pending(_next_check(ctx), {"request_id": request_id, "status": "Unknown", "refreshes_today": used})


def _take_slot(ctx: TaskContext, report: dict[str, Any], powerbi: Any) -> int:
    """Count today's refreshes and take one under the limit, atomically with recording the intent."""
    from database import remote_calls

    now = ctx.now()
    midnight = datetime.combine(now.date(), time.min, tzinfo=now.tzinfo)
    remote_used = powerbi.refreshes_since(report["group_id"], report["dataset_id"], midnight)
    with unit_of_work(ctx.deps.sessions) as session:
        used = remote_calls.take_refresh_slot(session=session, dataset_id=report["dataset_id"], day=now.date(),
                                              remote_used=remote_used, limit=report["daily_limit"])
        if used is not None:
            ctx.record_intent(INTENT, {"requested_at": now.isoformat(), "refreshes_today": used}, session=session)
    if used is None:
        raise RemoteFailure(
            f"Power BI dataset {report['dataset_id']}: daily refresh limit of {report['daily_limit']} reached "
            f"({max(remote_used, report['daily_limit'])} refreshes since 00:00 UTC); not refreshing until tomorrow",
            alert="limit_reached", detail={"dataset_id": report["dataset_id"], "refreshes_today": remote_used,
                                           "daily_limit": report["daily_limit"]})
    return used


def _adopt(ctx: TaskContext, report: dict[str, Any], intent: dict[str, Any]) -> Outcome | None:
    """The refresh an earlier delivery started (history entry requested after the intent, not some
    other run's), recorded and followed; None when the remote shows none."""
    from database import remote_calls

    since = datetime.fromisoformat(str(intent["requested_at"])) - CLOCK_SKEW
    candidates = client(ctx).refreshes_requested_since(report["group_id"], report["dataset_id"], since)
    with unit_of_work(ctx.deps.sessions) as session:
        taken = remote_calls.adopted_remote_ids(session=session, remote_ids=candidates)
    mine = next((c for c in candidates if c not in taken), None)
    if mine is None:
        return None
    ctx.log.info("adopting Power BI refresh %s started by an earlier delivery", mine)
    ctx.record_remote_id(mine)
    return Pending(_next_check(ctx), {"request_id": mine, "status": "Unknown", "adopted": True,
                                      "refreshes_today": intent.get("refreshes_today")})


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
