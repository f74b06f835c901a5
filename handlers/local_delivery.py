"""Local bus delivery through the real functions-framework `handle_pubsub` app."""

from __future__ import annotations

import base64
import functools
import uuid
from datetime import UTC, datetime
from typing import Any

from handlers.messages import PUBSUB_PUBLISHED


@functools.cache
def _client() -> Any:
    import functions_framework

    from config.settings import PROJECT_ROOT

    app = functions_framework.create_app("handle_pubsub", str(PROJECT_ROOT / "main.py"), "cloudevent")
    return app.test_client()


def deliver(data: bytes, attributes: dict[str, str], message_id: str) -> None:
    """POST one message as a structured CloudEvent; a non-2xx answer raises (redelivery)."""
    now = datetime.now(UTC).isoformat()
    envelope = {
        "specversion": "1.0",
        "type": PUBSUB_PUBLISHED,
        "source": "//pubsub.googleapis.com/projects/local/topics/caf-events",
        "id": f"local-{message_id}-{uuid.uuid4().hex[:8]}",
        "time": now,
        "datacontenttype": "application/json",
        "data": {
            "message": {"data": base64.b64encode(data).decode(), "attributes": attributes,
                        "messageId": message_id, "publishTime": now},
            "subscription": "projects/local/subscriptions/caf",
        },
    }
    response = _client().post("/", json=envelope, headers={"Content-Type": "application/cloudevents+json"})
    if response.status_code >= 300:
        raise RuntimeError(f"handle_pubsub answered {response.status_code} for message {message_id}")


def attach(bus: Any) -> None:
    bus.deliver = deliver
