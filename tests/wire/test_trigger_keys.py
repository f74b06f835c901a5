"""Trigger deduplication is keyed on the whole delivery, not on the message id alone.

Message ids are unique per topic only, and the Pub/Sub emulator restarts them at "1": a new
trigger with an old id must still start its batch, while a redelivery must not.
"""

from __future__ import annotations

import base64
import json

from tests.conftest import make_client
from tests.engine.conftest import define, py


def push(message_id: str, publish_time: str, subscription: str) -> dict:
    data = base64.b64encode(json.dumps({"task": "nightly"}).encode()).decode()
    return {"message": {"data": data, "attributes": {"event_type": "task"}, "messageId": message_id,
                        "publishTime": publish_time}, "subscription": subscription}


def batches(deps) -> int:
    from sqlalchemy import func, select

    from database.models import TaskBatch

    with deps.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(TaskBatch)) or 0)


def test_same_message_id_after_an_emulator_restart_or_on_another_topic_starts_a_new_batch(deps) -> None:
    """Push to a URL naming the topic (functions-framework makes it the CloudEvent's source)."""
    define(deps, py("nightly"))
    client = make_client("handle_pubsub")
    sub, topic = "projects/caf-emu/subscriptions/caf-push", "/projects/caf-emu/topics/caf-events"
    first = push("1", "2026-11-26T09:00:00.000Z", sub)
    assert client.post(topic, json=first).status_code == 200
    assert client.post(topic, json=first).status_code == 200  # redelivery: same batch
    assert batches(deps) == 1
    assert client.post(topic, json=push("1", "2026-11-26T10:00:00.000Z", sub)).status_code == 200  # restart
    assert client.post(f"{topic}-eu", json=first).status_code == 200  # same id and time, another topic
    assert batches(deps) == 3
