"""Cloud Functions entry points: decode the envelope, delegate to one handler, return.

Uncaught exceptions become HTTP 500 (the platform redelivers); returning acknowledges.
Importing this module connects to nothing and imports no heavy library.
"""

from __future__ import annotations

from typing import Any

import functions_framework

from handlers import routes
from handlers.events import cloud_event_target
from values.messages import ObjectRef, PubSubMessage


@functions_framework.cloud_event
@cloud_event_target
def handle_raw_file(event: Any) -> None:
    """`google.cloud.storage.object.v1.finalized` (Eventarc) → raw-file ingestion."""
    ref = ObjectRef.from_storage_data(routes.storage_event_data(event.get_data()), event_id=event["id"],
                                      event_time=routes.event_time(event))
    routes.raw_file(ref)


@functions_framework.cloud_event
@cloud_event_target
def handle_pubsub(event: Any) -> None:
    """`google.cloud.pubsub.topic.v1.messagePublished` → routed on the message attributes."""
    routes.pubsub(PubSubMessage.from_push_body(event.get_data(), source=event["source"]))


@functions_framework.http
def operator(request: Any) -> Any:
    """Operator HTTP API and page: health, status (and more as issues land)."""
    return routes.operator(request)
