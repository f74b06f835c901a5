"""Pub/Sub publisher: message shape on the client call, and the round trip back through handle_pubsub.

The Pub/Sub emulator cannot be installed from the reachable registries, so the Google client is
replaced by a recorder with the same `publish(topic, data, **attributes) -> future` signature.
"""

from __future__ import annotations

import base64
import json
from concurrent.futures import Future
from datetime import UTC, datetime

import pytest
from google.api_core import exceptions as gexc

from adapters.publisher.pubsub import PubSubPublisher
from errors import PermanentError, TransientError
from values.messages import OutgoingMessage, PubSubMessage


class Recorder:
    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[tuple[str, bytes, dict[str, str]]] = []
        self.fail = fail

    def publish(self, topic: str, data: bytes, **attributes: str) -> Future:
        self.calls.append((topic, data, attributes))
        future: Future = Future()
        if self.fail:
            future.set_exception(self.fail)
        else:
            future.set_result(f"id-{len(self.calls)}")
        return future

    def stop(self) -> None:
        pass


def test_message_shape_data_json_and_string_attributes() -> None:
    client = Recorder()
    publisher = PubSubPublisher(project="acme", topic="caf-events", client=client)
    due = datetime(2026, 11, 21, 1, 0, tzinfo=UTC)
    message_id = publisher.publish(OutgoingMessage("task", {"batch_id": 7, "task_id": 3, "attempt": 2},
                                                   {"tenant": "acme"}, not_before=due))
    assert message_id == "id-1"
    [(topic, data, attributes)] = client.calls
    assert topic == "projects/acme/topics/caf-events"
    assert json.loads(data) == {"batch_id": 7, "task_id": 3, "attempt": 2}
    assert attributes == {"tenant": "acme", "event_type": "task", "not_before": due.isoformat()}
    assert all(isinstance(v, str) for v in attributes.values())


def test_published_message_decodes_as_the_push_envelope_delivers_it() -> None:
    client = Recorder()
    PubSubPublisher(project="acme", topic="caf-events", client=client).publish(
        OutgoingMessage("file_loaded", {"file_id": 1, "name": "sales/orders/ü.csv"}))
    _, data, attributes = client.calls[0]
    push = {"message": {"data": base64.b64encode(data).decode(), "attributes": attributes, "messageId": "9"},
            "subscription": "projects/acme/subscriptions/caf"}
    decoded = PubSubMessage.from_push_body(push)
    assert decoded.attributes["event_type"] == "file_loaded"
    assert decoded.json() == {"file_id": 1, "name": "sales/orders/ü.csv"}


@pytest.mark.parametrize(("error", "kind"), [
    (gexc.ServiceUnavailable("down"), TransientError),
    (gexc.DeadlineExceeded("slow"), TransientError),
    (gexc.NotFound("no topic"), PermanentError),
    (gexc.PermissionDenied("no"), PermanentError),
])
def test_publish_errors_are_translated(error: Exception, kind: type[Exception]) -> None:
    publisher = PubSubPublisher(project="acme", topic="caf-events", client=Recorder(fail=error))
    with pytest.raises(kind):
        publisher.publish(OutgoingMessage("task", {"dag": "d"}))
