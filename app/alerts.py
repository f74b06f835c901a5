"""Alerts to chat webhooks: file errors, task errors, refused refreshes and finished batches.

Each alert has a `key` (the object version, or the batch and task): the first alert for a key is
recorded in the `outbox` table (`event_type='alert'`, payload `{key, group, state, ...}`) and a
second one is dropped, so a redelivered event never alerts twice. Alerts of one `group` (kind +
table / task / DAG) are rate-limited to one per `alerts.min_interval_seconds`; the ones held back
are counted and mentioned in the next alert of the group. Records are written with
`published_at` set, so the outbox publisher never sends them to Pub/Sub.

Cards carry names, ids, counts and the error's wording with quoted values and per-row details
removed: never row data, never secrets. Every failure here is logged and swallowed: an alert
must never break ingestion or the engine.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import text

import logs

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from config.settings import Settings

log = logging.getLogger("caf.alerts")


class AlertPorts(Protocol):
    """What alerting reads of `app.deps.Deps`: settings, the clock and metadata sessions."""

    settings: Settings
    clock: Callable[[], datetime]

    @property
    def sessions(self) -> sessionmaker[Session]: ...

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_ROW_DETAIL = re.compile(r"\b(rows? \d+): [^;—]*")
_KEY_VALUES = re.compile(r"\(([^()=]+)=[^()]*\)")
_HTTP_URL = re.compile(r"\b(https?://[^/\s?#]*)[^\s]*", re.IGNORECASE)  # webhook / signed URLs: secret path


def safe_text(value: Any, limit: int = 500) -> str:
    """A value fit for a chat card: secrets and http(s) URL paths masked, quoted values and row details cut."""
    text = logs.redact(str(value))
    text = _HTTP_URL.sub(r"\1/…", text)
    text = _QUOTED.sub("'…'", text)
    text = _ROW_DETAIL.sub(r"\1: …", text)
    text = _KEY_VALUES.sub(r"(\1=…)", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def notify(deps: AlertPorts, kind: str, key: str, title: str, fields: dict[str, Any], *, group: str | None = None,
           tenant_id: str | None = None, subtitle: str | None = None) -> bool:
    """Post an alert card to every configured webhook, once per `key`; True when at least one took it.

    Never raises: a failure to record or deliver an alert is logged and swallowed.
    """
    try:
        return _notify(deps, kind, key, title, fields, group=group or kind, tenant_id=tenant_id, subtitle=subtitle)
    except Exception as exc:  # noqa: BLE001 - alerting must never break the caller
        log.warning("alert %s for %s not sent: %s", kind, key, type(exc).__name__,
                    extra={"metric": "alert", "status": "ERROR", "reason": kind})
        return False


def _notify(deps: AlertPorts, kind: str, key: str, title: str, fields: dict[str, Any], *, group: str,
            tenant_id: str | None, subtitle: str | None) -> bool:
    from adapters.services.alerts import Card, host_label, post
    from errors import CafError

    webhooks = list(deps.settings.alerts.webhooks)
    if not webhooks:
        return False
    record = _claim(deps, kind, key, group, tenant_id)
    if record is None:
        return False
    record_id, held_back = record
    card_fields = {label: safe_text(value) for label, value in fields.items() if value not in (None, "")}
    if held_back:
        card_fields["held back"] = f"{held_back} similar alert(s) in the last interval"
    card = Card(title=safe_text(title, 150), fields=card_fields,
                subtitle=safe_text(subtitle, 200) if subtitle else None, kind=kind)
    delivered = 0
    for url in webhooks:
        try:
            post(url, card)
            delivered += 1
        except CafError as exc:
            log.warning("alert %s to %s failed: %s", kind, host_label(url), exc,
                        extra={"metric": "alert", "status": "ERROR", "reason": kind})
    _finish(deps, record_id, "sent" if delivered else "failed", delivered)
    if delivered:
        log.info("alert %s sent to %s webhook(s)", kind, delivered,
                 extra={"metric": "alert", "status": "SUCCESS", "reason": kind})
    return delivered > 0


def _claim(deps: AlertPorts, kind: str, key: str, group: str, tenant_id: str | None) -> tuple[int, int] | None:
    """Record the alert unless its key was seen; None = duplicate or rate-limited (recorded as held back)."""
    from sqlalchemy import func, select

    from database.models import Outbox
    from database.session import unit_of_work

    now = deps.clock()
    interval = deps.settings.alerts.min_interval_seconds
    state = Outbox.payload["state"].astext
    with unit_of_work(deps.sessions) as session:
        # One writer per group at a time: the duplicate and rate checks see every earlier alert.
        session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(f"caf-alert:{group}", 0))))
        alerts = select(Outbox.id).where(Outbox.event_type == "alert")
        seen = session.execute(alerts.where(Outbox.payload["key"].astext == key, state != "failed").limit(1)).first()
        if seen is not None:
            log.debug("alert %s for %s already recorded", kind, key)
            return None
        in_group = (Outbox.event_type == "alert") & (Outbox.payload["group"].astext == group)
        last_sent = session.scalar(select(func.max(Outbox.published_at)).where(in_group,
                                                                             state.in_(("sent", "sending"))))
        payload: dict[str, Any] = {"key": key, "group": group, "kind": kind}
        if last_sent is not None and interval and now - last_sent < timedelta(seconds=interval):
            session.add(_row(payload | {"state": "held_back"}, now, tenant_id))
            log.info("alert %s for %s held back by the rate limit", kind, key,
                     extra={"metric": "alert", "status": "SKIPPED", "reason": kind})
            return None
        held_query = select(func.count()).where(in_group, state == "held_back")
        if last_sent is not None:
            held_query = held_query.where(Outbox.published_at > last_sent)
        held_back = int(session.scalar(held_query) or 0)
        row = _row(payload | {"state": "sending"}, now, tenant_id)
        session.add(row)
        session.flush()
        return row.id, held_back


def _row(payload: dict[str, Any], now: Any, tenant_id: str | None) -> Any:
    from database.models import Outbox

    row = Outbox(event_type="alert", payload=payload, attributes={}, published_at=now)
    if tenant_id:
        row.tenant_id = tenant_id
    return row


def _finish(deps: AlertPorts, record_id: int, state: str, delivered: int) -> None:
    from sqlalchemy import update

    from database.models import Outbox
    from database.session import unit_of_work

    with unit_of_work(deps.sessions) as session:
        row = session.get(Outbox, record_id)
        payload = dict(row.payload) if row is not None else {}
        session.execute(update(Outbox).where(Outbox.id == record_id).values(
            payload=payload | {"state": state, "webhooks": delivered}, published_at=deps.clock()))


# -- hooks called by ingestion and the engine ------------------------------------------------------
@dataclass(frozen=True)
class Alert:
    kind: str
    key: str
    group: str
    title: str
    fields: dict[str, Any]
    tenant_id: str | None = None
    subtitle: str | None = None


def on_file_error(deps: AlertPorts, file_id: int) -> bool:
    """A file ended in ERROR: one alert per object version."""
    return _hook(deps, "file_error", lambda session: _file_alert(session, file_id))


def on_task_error(deps: AlertPorts, task_log_id: int) -> bool:
    """A task run ended in ERROR after its retries: one alert per batch, task and restart.

    A run refused by a Power BI daily limit is reported as `limit_refused` (once, not twice).
    """
    return _hook(deps, "task_error", lambda session: _task_alert(session, task_log_id, None))


def on_limit_refused(deps: AlertPorts, task_log_id: int, message: str) -> bool:
    """A refresh was refused because the daily limit was reached: one alert per batch and task."""
    return _hook(deps, "limit_refused", lambda session: _task_alert(session, task_log_id, message))


def on_batch_done(deps: AlertPorts, batch_id: int) -> bool:
    """A batch that ran tasks ended (SUCCESS or ERROR): one alert per batch and restart.

    A batch whose every task was skipped (a wait_for_files gate still waiting) ran nothing: no alert.
    """
    return _hook(deps, "batch_done", lambda session: _batch_alert(session, batch_id))


def _hook(deps: AlertPorts, kind: str, facts: Callable[[Session], Alert | None]) -> bool:
    if not deps.settings.alerts.webhooks:
        return False
    try:
        from database.session import unit_of_work

        with unit_of_work(deps.sessions) as session:
            alert = facts(session)
    except Exception as exc:  # noqa: BLE001 - alerting must never break the caller
        log.warning("alert %s: could not read what to report: %s", kind, type(exc).__name__)
        return False
    if alert is None:
        return False
    return notify(deps, alert.kind, alert.key, alert.title, alert.fields, group=alert.group,
                  tenant_id=alert.tenant_id, subtitle=alert.subtitle)


def on_file_stalled(deps: AlertPorts, file_id: int) -> bool:
    """A file stopped moving (not loaded after a transient failure, no redelivery): one alert per object version."""
    return _hook(deps, "file_stalled", lambda session: _stalled_alert(session, file_id))


def _stalled_alert(session: Session, file_id: int) -> Alert | None:
    row = session.execute(text(
        "SELECT f.bucket, f.name, f.generation, f.status, f.attempts, f.last_error, f.batch_id, f.tenant_id,"
        " d.name || '.' || tb.name AS tbl FROM files f LEFT JOIN tables tb ON tb.id = f.table_id"
        " LEFT JOIN domain d ON d.id = tb.domain_id WHERE f.id = :id"), {"id": file_id}).mappings().first()
    if row is None or row["status"] not in ("NEW", "PROCESSING"):
        return None
    obj = f"gs://{row['bucket']}/{row['name']}#{row['generation']}"
    return Alert(
        kind="file_stalled", key=f"stalled:{row['bucket']}/{row['name']}#{row['generation']}",
        group=f"file_stalled:{row['tbl'] or row['bucket']}", tenant_id=row["tenant_id"],
        title=f"CAF file stalled: {row['name'].rsplit('/', 1)[-1]}",
        subtitle="not loaded after a transient failure; no redelivery came",
        fields={"table": row["tbl"] or "(none matched)", "object": obj, "file id": file_id,
                "attempts": row["attempts"], "last error": row["last_error"], "batch": row["batch_id"]})


def _file_alert(session: Session, file_id: int) -> Alert | None:
    from values.reasons import error_reason

    row = session.execute(text(
        "SELECT f.bucket, f.name, f.generation, f.status, f.error_message, f.rows_read, f.rows_rejected,"
        " f.batch_id, f.tenant_id, d.name || '.' || tb.name AS tbl FROM files f"
        " LEFT JOIN tables tb ON tb.id = f.table_id LEFT JOIN domain d ON d.id = tb.domain_id"
        " WHERE f.id = :id"), {"id": file_id}).mappings().first()
    if row is None or row["status"] != "ERROR":
        return None
    reason = error_reason(row["error_message"])
    obj = f"gs://{row['bucket']}/{row['name']}#{row['generation']}"
    return Alert(
        kind="file_error", key=f"file:{row['bucket']}/{row['name']}#{row['generation']}",
        group=f"file_error:{row['tbl'] or row['bucket']}", tenant_id=row["tenant_id"],
        title=f"CAF file failed: {row['name'].rsplit('/', 1)[-1]}", subtitle=f"reason: {reason}",
        fields={"table": row["tbl"] or "(none matched)", "object": obj, "file id": file_id, "reason": reason,
                "error": row["error_message"], "rows read": row["rows_read"], "rows rejected": row["rows_rejected"],
                "batch": row["batch_id"]})


def _task_alert(session: Session, task_log_id: int, limit_message: str | None) -> Alert | None:
    from values.reasons import task_reason

    row = session.execute(text(
        "SELECT l.batch_id, l.status, l.attempt, l.error, l.output, l.remote_id, t.name, t.kind, t.dag,"
        " b.tenant_id, b.root, b.summary FROM task_log l JOIN tasks t ON t.id = l.task_id"
        " JOIN task_batch b ON b.id = l.batch_id WHERE l.id = :id"), {"id": task_log_id}).mappings().first()
    if row is None:
        return None
    reason = task_reason(row["kind"], limit_message or row["error"], row["output"])
    if limit_message is None:  # on_task_error
        if row["status"] != "ERROR":
            return None
        if reason == "limit":  # the same alert (and key) as on_limit_refused: sent once
            limit_message = row["error"] or "daily refresh limit reached"
    restarts = int((row["summary"] or {}).get("restarts") or 0)
    kind = "limit_refused" if limit_message is not None else "task_error"
    title = (f"CAF refresh refused (daily limit): {row['name']}" if kind == "limit_refused"
             else f"CAF task failed: {row['name']}")
    return Alert(
        kind=kind, key=f"{kind}:{row['batch_id']}:{row['name']}:{restarts}", group=f"{kind}:{row['name']}",
        tenant_id=row["tenant_id"], title=title, subtitle=f"batch {row['batch_id']} · {row['root'] or ''}",
        fields={"task": row["name"], "kind": row["kind"], "dag": row["dag"], "batch": row["batch_id"],
                "attempts": row["attempt"], "reason": reason, "error": limit_message or row["error"],
                "remote id": row["remote_id"]})


def _batch_alert(session: Session, batch_id: int) -> Alert | None:
    row = session.execute(text(
        "SELECT b.status, b.trigger, b.root, b.summary, b.started_at, b.finished_at, b.tenant_id,"
        " (SELECT count(*) FROM task_log l WHERE l.batch_id = b.id) AS runs,"
        " (SELECT count(*) FROM task_log l WHERE l.batch_id = b.id AND l.status <> 'SKIPPED') AS ran"
        " FROM task_batch b WHERE b.id = :id"), {"id": batch_id}).mappings().first()
    if row is None or row["status"] == "PROCESSING" or not row["runs"]:
        return None  # still running, or a file batch without tasks (its file is alerted on its own)
    if not row["ran"]:
        return None  # every task skipped (a gate still waiting): nothing ran, nothing succeeded
    summary = row["summary"] or {}
    counts = summary.get("counts") or {}
    failed = ", ".join(f["task"] for f in summary.get("failed") or [] if isinstance(f, dict) and f.get("task"))
    took = (row["finished_at"] - row["started_at"]).total_seconds() if row["finished_at"] else None
    restarts = int(summary.get("restarts") or 0)
    return Alert(
        kind="batch_done", key=f"batch:{batch_id}:{restarts}", group=f"batch_done:{row['root'] or row['trigger']}",
        tenant_id=row["tenant_id"], title=f"CAF batch {batch_id} {row['status']}: {row['root'] or row['trigger']}",
        fields={"batch": batch_id, "status": row["status"], "trigger": row["trigger"],
                "tasks": ", ".join(f"{k} {v}" for k, v in counts.items()) or row["runs"],
                "failed tasks": failed, "duration": None if took is None else f"{took:.1f}s",
                "restarts": restarts or None})
