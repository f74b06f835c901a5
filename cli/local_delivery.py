"""Local delivery of CloudEvents to the real functions-framework targets in `main`.

The local bus hands each message to `main.handle_pubsub` as a CloudEvent object, exactly what
functions-framework passes it after decoding an HTTP request (the HTTP decoding itself is
covered by the entry-point tests and by `caf serve`). An exception means "not acknowledged":
the bus redelivers, as Pub/Sub would after an HTTP 500.
"""

from __future__ import annotations

import base64
import functools
import uuid
from datetime import UTC, datetime
from typing import Any

from values.messages import PUBSUB_PUBLISHED


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
    """Hand one message to `main.handle_pubsub`; an exception (HTTP 500 in production) redelivers."""
    import main

    main.handle_pubsub(pubsub_event(data, attributes, message_id))


def attach(bus: Any) -> None:
    bus.deliver = deliver


@functools.cache
def _raw_file_client() -> Any:
    import functions_framework

    from config.settings import PROJECT_ROOT

    app = functions_framework.create_app("handle_raw_file", str(PROJECT_ROOT / "main.py"), "cloudevent")
    return app.test_client()


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
    """POST a binary-mode finalize CloudEvent for an object to the real handle_raw_file app."""
    from values.messages import STORAGE_FINALIZED

    headers = {
        "ce-specversion": "1.0",
        "ce-type": STORAGE_FINALIZED,
        "ce-source": f"//storage.googleapis.com/projects/_/buckets/{info.bucket}",
        "ce-subject": f"objects/{info.name}",
        "ce-id": f"local-{uuid.uuid4().hex}",
        "ce-time": datetime.now(UTC).isoformat(),
        "Content-Type": "application/json",
    }
    response = _raw_file_client().post("/", json=storage_event_data(info), headers=headers)
    return int(response.status_code)
