"""Cloud Functions entry points: decode the envelope, delegate to one handler, return.

Uncaught exceptions become HTTP 500 (the platform redelivers); returning acknowledges. The
CloudEvent targets live in handlers.events (`caf ingest` and the local bus call them there).
Importing this module connects to nothing and imports no heavy library.
"""

from __future__ import annotations

from typing import Any

import functions_framework

from handlers import events, routes


@functions_framework.cloud_event
def handle_raw_file(event: Any) -> None:
    """`google.cloud.storage.object.v1.finalized` (Eventarc) → raw-file ingestion."""
    events.raw_file(event)


@functions_framework.cloud_event
def handle_pubsub(event: Any) -> None:
    """`google.cloud.pubsub.topic.v1.messagePublished` → routed on the message attributes."""
    events.pubsub(event)


@functions_framework.http
def operator(request: Any) -> Any:
    """Operator HTTP API and page: health, status (and more as issues land)."""
    return routes.operator(request)
