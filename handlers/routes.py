"""Routing from decoded envelopes to handlers; heavy modules are imported on first use."""

from __future__ import annotations

import functools
import logging
from datetime import datetime
from typing import Any

from values.messages import MalformedEvent, ObjectRef, PubSubMessage, parse_time

log = logging.getLogger("caf.routes")

# GCS Pub/Sub notification event types that are not new object versions: acknowledged, ignored.
_IGNORED_GCS_EVENTS = ("OBJECT_DELETE", "OBJECT_ARCHIVE", "OBJECT_METADATA_UPDATE")
PUBSUB_ROUTES = ("task", "dataform", "powerbi", "file_loaded", "sweep", "purge")


@functools.cache
def ensure_logging() -> None:
    import logs
    from config.settings import get_settings

    settings = get_settings()
    logs.configure(settings.log_format, settings.log_level)


def max_event_age_seconds() -> int:
    from app.deps import get_deps

    return get_deps().settings.events.max_age_seconds


def event_time(event: Any) -> datetime | None:
    try:
        return parse_time(event.get("time"))
    except Exception:  # noqa: BLE001 - a malformed optional attribute is not fatal
        return None


def event_age_seconds(event: Any, *, now: datetime) -> float | None:
    when = event_time(event)
    return None if when is None else (now - when).total_seconds()


def storage_event_data(data: Any) -> Any:
    """The finalize event's object resource; locally, without `generation`, the object's current one.

    GCS always sends the generation. Hand-written local events (curl, docs/local-development.md)
    may leave it out, which with local storage (`file://`) means "the object as it is now".
    """
    if not isinstance(data, dict) or data.get("generation") not in (None, ""):
        return data
    from app.deps import get_deps
    from errors import PermanentError

    deps = get_deps()
    bucket, name = data.get("bucket"), data.get("name")
    if not deps.settings.storage_url.startswith("file://") or not isinstance(bucket, str) \
            or not isinstance(name, str):
        return data
    try:
        info = deps.storage.stat(bucket, name)
    except PermanentError:  # no such object (or an unsafe name): decoding reports the missing generation
        return data
    return {**data, "generation": str(info.generation)}


def raw_file(ref: ObjectRef) -> None:
    if ref.is_folder_placeholder:
        log.info("ignored folder placeholder %s/%s", ref.bucket, ref.name)
        return
    from app.deps import get_deps
    from handlers import raw_file as handler

    handler.handle(ref, get_deps())


def pubsub(message: PubSubMessage) -> None:
    """Route a Pub/Sub message: GCS notifications by `eventType`, CAF events by `event_type`."""
    attrs = message.attributes
    gcs_event = attrs.get("eventType")
    if gcs_event:
        if gcs_event == "OBJECT_FINALIZE":
            raw_file(message.object_ref())
            return
        if gcs_event in _IGNORED_GCS_EVENTS:
            log.info("ignored GCS notification %s for %s", gcs_event, attrs.get("objectId"))
            return
        raise MalformedEvent(f"unknown GCS notification eventType {gcs_event!r}")
    route = attrs.get("event_type")
    if route not in PUBSUB_ROUTES:
        raise MalformedEvent(f"unknown route: event_type={route!r} (expected one of {', '.join(PUBSUB_ROUTES)})")
    from app.deps import get_deps

    if route == "sweep":
        outbox_sweep(get_deps())
        return
    if route == "purge":  # Cloud Scheduler, when deploy.purge.schedule is set
        from handlers import purge

        purge.scheduled(message.json(), get_deps())
        return
    from handlers import tasks

    tasks.handle(route, message, get_deps())


def outbox_sweep(deps: Any) -> int:
    """`event_type=sweep` (Cloud Scheduler): publish outbox events stranded by a publisher outage."""
    from database import outbox

    return outbox.sweep(session_factory=deps.sessions, publisher=deps.publisher)


def operator(request: Any) -> Any:
    from app.deps import get_deps
    from handlers import operator as handler

    return handler.handle(request, get_deps())
