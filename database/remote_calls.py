"""Keyword-only database functions that make calls to remote services (Dataform, Power BI) happen once.

A task records its *intent* in its run's output before calling the remote, in the same
transaction that takes any quota the call uses; a redelivery that finds an intent but no remote
id knows the outcome of the earlier call is unknown and looks the remote up before acting again.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session


def record_intent(*, session: Session, run_id: int, attempt: int, key: str, intent: dict[str, Any]) -> bool:
    """Store `intent` under `output[key]` of a running task run; False if the run is no longer ours."""
    result = session.execute(text(
        "UPDATE task_log SET output = output || CAST(:o AS jsonb), updated_at = now()"
        " WHERE id = :id AND status = 'PROCESSING' AND attempt = :a"),
        {"o": json.dumps({key: intent}, default=str), "id": run_id, "a": attempt})
    return bool(result.rowcount)  # type: ignore[attr-defined]


def take_refresh_slot(*, session: Session, dataset_id: str, day: date, remote_used: int, limit: int) -> int | None:
    """Take one of `limit` refreshes of `dataset_id` on `day`; returns the refreshes used with it, or None.

    `remote_used` is what the remote's history shows (it also counts refreshes made elsewhere);
    the row lock of the UPDATE serialises concurrent takers, so at the limit exactly one wins.
    """
    session.execute(text(
        "INSERT INTO power_bi_refresh_day (dataset_id, day, used) VALUES (:d, :day, 0)"
        " ON CONFLICT (dataset_id, day) DO NOTHING"), {"d": dataset_id, "day": day})
    return session.execute(text(
        "UPDATE power_bi_refresh_day SET used = GREATEST(used, :remote) + 1, updated_at = now()"
        " WHERE dataset_id = :d AND day = :day AND GREATEST(used, :remote) < :limit RETURNING used"),
        {"d": dataset_id, "day": day, "remote": remote_used, "limit": limit}).scalar_one_or_none()


def adopted_remote_ids(*, session: Session, remote_ids: list[str]) -> set[str]:
    """Those of `remote_ids` that some task run already recorded as its remote run."""
    if not remote_ids:
        return set()
    rows = session.execute(text("SELECT remote_id FROM task_log WHERE remote_id = ANY(:ids)"), {"ids": remote_ids})
    return {r[0] for r in rows}
