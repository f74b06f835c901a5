"""Local delivery of CloudEvents to the targets behind the functions-framework entry points in `main`.

`caf ingest` hands each finalize event to `handlers.events.raw_file` (what `main.handle_raw_file`
calls), and the local bus each message to `handlers.events.pubsub` (`main.handle_pubsub`), as a
CloudEvent object: exactly what functions-framework passes them after decoding an HTTP request
(the HTTP decoding itself is covered by the entry-point tests and by `caf serve`). Calling them
there, not through `main`, keeps functions-framework and Flask (~150 modules, ~50 ms) out of a CLI
process. An exception means "not acknowledged": the caller redelivers, as the platform would after
an HTTP 500.
"""

from __future__ import annotations

import base64
import functools
import logging
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

from values.messages import PUBSUB_PUBLISHED

log = logging.getLogger("caf.cli")


def pubsub_event(data: bytes, attributes: dict[str, str], message_id: str) -> Any:
    """The `messagePublished` CloudEvent Eventarc would deliver for this message."""
    from cloudevents.http import CloudEvent

    now = datetime.now(UTC).isoformat()
    published = _publish_time(message_id)  # stable across redeliveries, as Pub/Sub's publishTime is
    return CloudEvent(
        {"type": PUBSUB_PUBLISHED, "source": "//pubsub.googleapis.com/projects/local/topics/caf-events",
         "id": f"local-{message_id}-{uuid.uuid4().hex[:8]}", "time": now, "datacontenttype": "application/json"},
        {"message": {"data": base64.b64encode(data).decode(), "attributes": attributes, "messageId": message_id,
                     "publishTime": published},
         "subscription": "projects/local/subscriptions/caf"},
    )


@functools.lru_cache(maxsize=65536)
def _publish_time(message_id: str) -> str:
    return datetime.now(UTC).isoformat()


def deliver(data: bytes, attributes: dict[str, str], message_id: str) -> None:
    """Hand one message to `main.handle_pubsub`'s target; an exception (HTTP 500 in production) redelivers."""
    from handlers import events

    events.pubsub(pubsub_event(data, attributes, message_id))


def attach(bus: Any) -> None:
    bus.deliver = deliver


def storage_event_data(info: Any) -> dict[str, Any]:
    """The GCS object resource of a finalize event, as Eventarc delivers it."""
    return {
        "kind": "storage#object",
        "bucket": info.bucket,
        "name": info.name,
        "generation": str(info.generation),
        "size": str(info.size),
        "md5Hash": info.md5,
        "crc32c": info.crc32c,
        "contentType": info.content_type or "application/octet-stream",
        "contentEncoding": info.content_encoding,
        "timeCreated": datetime.now(UTC).isoformat(),
    }


def deliver_object(info: Any) -> int:
    """Hand an object's finalize CloudEvent to `main.handle_raw_file`'s target; returns the HTTP status
    functions-framework would answer: 200, or 500 when the handler raised (the platform redelivers).

    The event is the one Eventarc delivers (binary mode, the object resource as data), built as
    the CloudEvent object functions-framework decodes it into: no Flask app or request per file.
    """
    from cloudevents.http import CloudEvent

    from handlers import events
    from values.messages import STORAGE_FINALIZED

    event = CloudEvent(
        {"specversion": "1.0", "type": STORAGE_FINALIZED,
         "source": f"//storage.googleapis.com/projects/_/buckets/{info.bucket}", "subject": f"objects/{info.name}",
         "id": f"local-{uuid.uuid4().hex}", "time": datetime.now(UTC).isoformat(),
         "datacontenttype": "application/json"},
        storage_event_data(info),
    )
    try:
        events.raw_file(event)
    except Exception as exc:
        code = http_status(exc)
        if code is not None:  # the transient path (handlers.events): its warning line is already logged
            return code
        # a bug: logged with its traceback, as Flask does, then HTTP 500
        log.exception("Exception on handle_raw_file for %s/%s", info.bucket, info.name)
        return 500
    return 200


def http_status(exc: BaseException) -> int | None:
    """The status of an HTTP exception a target raised (the transient path raises werkzeug's
    InternalServerError), None for any other. werkzeug is looked up, not imported: a process where
    nothing imported it cannot have raised one."""
    exceptions = sys.modules.get("werkzeug.exceptions")
    if exceptions is not None and isinstance(exc, exceptions.HTTPException):
        return int(exc.code or 500)
    return None
