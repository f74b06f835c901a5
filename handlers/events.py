"""What every CloudEvent target does around its handler (labels, age limit, error policy), and the
targets themselves.

`main` registers `raw_file` and `pubsub` with functions-framework, whose decorator only records the
signature type and calls through; `caf ingest` and the local bus call them directly, as the same
functions, without importing functions-framework and Flask (~150 modules) in a CLI process.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import logs
from errors import PermanentError, TransientError
from values.messages import ObjectRef, PubSubMessage

log = logging.getLogger("caf.events")


def _trace(event: Any) -> str | None:
    try:
        parent = event.get("traceparent")
    except Exception:  # noqa: BLE001 - attribute access on foreign objects
        return None
    return str(parent) if parent else None


def cloud_event_target(func: Callable[[Any], None]) -> Callable[[Any], None]:
    """Bind the event id to log lines, drop too-old events, acknowledge permanent errors."""

    @functools.wraps(func)
    def wrapper(event: Any) -> None:
        from handlers import routes

        routes.ensure_logging()
        token = logs.set_trace(_trace(event))
        with logs.bind(event_id=event["id"], event_type=event["type"]):
            try:
                age = routes.event_age_seconds(event, now=datetime.now(UTC))
                max_age = routes.max_event_age_seconds()
                if age is not None and age > max_age:
                    log.warning("dropped event older than %ss (age %.0fs)", max_age, age)
                    return
                func(event)
            except PermanentError as exc:
                log.warning("acknowledged permanently failing event: %s", exc,
                            extra={"error_kind": "permanent", "reason": type(exc).__name__})
            except TransientError as exc:
                # Expected and retried: one warning line, not a traceback, then HTTP 500.
                log.warning("transient failure, left for redelivery: %s", exc,
                            extra={"error_kind": "transient", "reason": type(exc).__name__})
                from werkzeug.exceptions import InternalServerError

                raise InternalServerError("transient failure; retry later") from exc
            finally:
                logs._trace.reset(token)

    return wrapper


@cloud_event_target
def raw_file(event: Any) -> None:
    """`google.cloud.storage.object.v1.finalized` (Eventarc) → raw-file ingestion."""
    from handlers import routes

    ref = ObjectRef.from_storage_data(routes.storage_event_data(event.get_data()), event_id=event["id"],
                                      event_time=routes.event_time(event))
    routes.raw_file(ref)


@cloud_event_target
def pubsub(event: Any) -> None:
    """`google.cloud.pubsub.topic.v1.messagePublished` → routed on the message attributes."""
    from handlers import routes

    routes.pubsub(PubSubMessage.from_push_body(event.get_data(), source=event["source"]))
