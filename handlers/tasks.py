"""Pub/Sub routes for CAF's own events (task, dataform, powerbi, file_loaded): decode, then delegate to the engine.

    task         {"task": name} | {"dag": name}            start a batch (Cloud Scheduler)
                 {"batch_id", "task_id", "attempt"}        run one task run (claimed once)
                 {"batch_id", "task_id", "attempt", "check"}   check a pending run
                 {"sweep": true}                            end runs whose lease passed; send unsent events;
                                                            deliver stalled files again
    dataform, powerbi   {"batch_id", "task_id", "attempt", "check"}   check a remote run
    file_loaded  {"file_id", "batch_id", "dataset", "table", ...}  start the on_file tasks

A message whose `not_before` attribute is still in the future raises TransientError, so that
Pub/Sub redelivers it later (the local bus never delivers early).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from values.messages import MalformedEvent, parse_time

if TYPE_CHECKING:
    from app.deps import Deps
    from values.messages import PubSubMessage

log = logging.getLogger("caf.tasks")


def handle(route: str, message: PubSubMessage, deps: Deps) -> None:
    from engine import retry

    retry.ensure_due(parse_time(message.attributes.get("not_before")), deps.clock())
    data = message.json()
    if route == "file_loaded":
        file_loaded(data, deps)
    elif route == "task" and "batch_id" not in data:
        trigger(data, deps, message_id=message.delivery_key)
    elif route in ("task", "dataform", "powerbi"):
        from engine import runner

        check = data.get("check")
        if route != "task" and check is None:
            raise MalformedEvent(f"{route} message without 'check': {sorted(data)}")
        runner.run_message(deps, batch_id=_int(data, "batch_id"), task_id=_int(data, "task_id"),
                           attempt=_int(data, "attempt", minimum=1),
                           check=None if check is None else _int(data, "check", minimum=0))
    else:
        raise MalformedEvent(f"unknown task route {route!r}")


def trigger(data: dict[str, Any], deps: Deps, *, message_id: str | None = None) -> None:
    """A scheduled start (`{"task": name}` or `{"dag": name}`), or a sweep (expired leases, unsent events,
    stalled files)."""
    from engine import scheduler, triggers

    if data.get("sweep"):
        from pipeline import stalled

        ended, sent = triggers.sweep(deps)
        found, loaded = stalled.sweep(deps)
        log.info("sweep: %s expired run(s) ended, %s unsent event(s) published, %s stalled file(s) delivered "
                 "again (%s loaded)", ended, sent, found, loaded)
        return
    name = data.get("task") or data.get("dag")
    if not isinstance(name, str) or not name:
        raise MalformedEvent("task message needs 'task', 'dag', 'sweep' or 'batch_id'")
    parameters = data.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise MalformedEvent("'parameters' must be an object")
    tenant = data.get("tenant") or "default"
    if not isinstance(tenant, str):
        raise MalformedEvent("'tenant' must be a string")
    scheduler.start_batch(deps, name=name, trigger=str(data.get("trigger") or "schedule"), parameters=parameters,
                          message_id=message_id, tenant=tenant)


def file_loaded(data: dict[str, Any], deps: Deps) -> None:
    """Start the tasks listening to the loaded table in the batch the file load created."""
    from engine import triggers

    dataset, table = data.get("dataset"), data.get("table")
    if not isinstance(dataset, str) or not isinstance(table, str) or not dataset or not table:
        raise MalformedEvent("file_loaded message needs 'dataset' and 'table'")
    registered, tenant = data.get("registered"), data.get("tenant")
    if not isinstance(registered, str | None) or not isinstance(tenant, str | None):
        raise MalformedEvent("file_loaded 'registered' and 'tenant' must be strings")
    batch_id = data.get("batch_id")
    file_id = data.get("file_id")
    batch_id, roots = triggers.file_loaded(
        deps, dataset=dataset, table=table, registered=registered, tenant=tenant,
        batch_id=None if batch_id is None else _int({"batch_id": batch_id}, "batch_id"),
        file_id=None if batch_id is not None or file_id is None else _int(data, "file_id"))
    log.info("file %s of %s.%s: batch %s started %s task(s)", data.get("file_id"), dataset, table, batch_id,
             len(roots))


def _int(data: dict[str, Any], key: str, *, minimum: int = 1) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MalformedEvent(f"task message: {key!r} must be an integer >= {minimum}, got {value!r}")
    return value
