"""The functions-framework targets, driven through the real app: encodings, routes, error policy."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from sqlalchemy import select

from config.settings import PROJECT_ROOT
from database.models import File
from tests.conftest import make_client
from values.messages import PUBSUB_PUBLISHED, STORAGE_FINALIZED


def storage_event(name: str, generation: object = "1700000000000001", *, bucket: str = "landing",
                  when: datetime | None = None) -> CloudEvent:
    attributes = {
        "type": STORAGE_FINALIZED,
        "source": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
        "subject": f"objects/{name}",
        "time": (when or datetime.now(UTC)).isoformat(),
    }
    data = {"bucket": bucket, "name": name, "generation": generation, "size": "10", "md5Hash": "abc=="}
    return CloudEvent(attributes, data)


def pubsub_event(data: bytes | str, attributes: dict[str, str]) -> CloudEvent:
    raw = data if isinstance(data, str) else base64.b64encode(data).decode()
    return CloudEvent(
        {"type": PUBSUB_PUBLISHED, "source": "//pubsub.googleapis.com/projects/p/topics/caf-events"},
        {"message": {"data": raw, "attributes": attributes, "messageId": "m-1"},
         "subscription": "projects/p/subscriptions/caf"},
    )


def post(client, event: CloudEvent, *, mode: str):
    headers, body = to_binary(event) if mode == "binary" else to_structured(event)
    return client.post("/", headers=headers, data=body)


def files(deps) -> list[File]:
    with deps.sessions() as session:
        return list(session.scalars(select(File).order_by(File.id)))


@pytest.mark.parametrize("mode", ["binary", "structured"])
@pytest.mark.parametrize("generation", ["1700000000000001", 1700000000000001])
def test_unregistered_object_is_recorded_as_error_and_acknowledged(deps, mode: str, generation: object) -> None:
    client = make_client("handle_raw_file")
    response = post(client, storage_event("unknown/thing.csv", generation), mode=mode)
    assert response.status_code == 200
    [row] = files(deps)
    assert (row.bucket, row.name, row.generation) == ("landing", "unknown/thing.csv", 1700000000000001)
    assert row.status == "ERROR"
    assert row.error_message == "no table registered for unknown/thing.csv"


def test_folder_placeholder_is_ignored(deps) -> None:
    response = post(make_client("handle_raw_file"), storage_event("sales/orders/"), mode="binary")
    assert response.status_code == 200
    assert files(deps) == []


@pytest.mark.parametrize("data", [{"bucket": "landing"}, {"bucket": "b", "name": "x", "generation": "abc"},
                                  {"bucket": "b", "name": "x", "generation": True}, ["not", "an", "object"]])
def test_malformed_storage_event_is_acknowledged(deps, data: object) -> None:
    event = CloudEvent({"type": STORAGE_FINALIZED, "source": "//storage.googleapis.com/x"}, data)
    response = post(make_client("handle_raw_file"), event, mode="structured")
    assert response.status_code == 200
    assert files(deps) == []


def test_event_older_than_max_age_is_dropped(deps) -> None:
    old = datetime.now(UTC) - timedelta(seconds=deps.settings.events.max_age_seconds + 60)
    response = post(make_client("handle_raw_file"), storage_event("unknown/a.csv", when=old), mode="binary")
    assert response.status_code == 200
    assert files(deps) == []


def test_transient_failure_answers_500_so_the_platform_redelivers(deps, settings) -> None:
    from app.deps import Deps, set_deps

    unreachable = settings.model_copy(update={"database_url": "postgresql+pg8000://caf@127.0.0.1:1/caf"})
    set_deps(Deps(unreachable, publisher=deps.publisher))
    response = post(make_client("handle_raw_file"), storage_event("unknown/b.csv"), mode="binary")
    assert response.status_code == 500


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_pubsub_gcs_notification_routes_to_raw_file(deps, mode: str) -> None:
    attrs = {"eventType": "OBJECT_FINALIZE", "bucketId": "landing", "objectId": "nowhere/x.csv",
             "objectGeneration": "42", "payloadFormat": "JSON_API_V1"}
    body = json.dumps({"bucket": "landing", "name": "nowhere/x.csv", "generation": "42", "size": "3"}).encode()
    response = post(make_client("handle_pubsub"), pubsub_event(body, attrs), mode=mode)
    assert response.status_code == 200
    [row] = files(deps)
    assert (row.name, row.generation, row.status) == ("nowhere/x.csv", 42, "ERROR")


def test_pubsub_other_gcs_notifications_are_ignored(deps) -> None:
    attrs = {"eventType": "OBJECT_DELETE", "bucketId": "landing", "objectId": "a.csv", "objectGeneration": "1"}
    response = post(make_client("handle_pubsub"), pubsub_event(b"{}", attrs), mode="binary")
    assert response.status_code == 200
    assert files(deps) == []


def test_pubsub_legacy_push_body_is_accepted(deps) -> None:
    attrs = {"eventType": "OBJECT_FINALIZE", "bucketId": "landing", "objectId": "legacy/x.csv",
             "objectGeneration": "7"}
    body = {"message": {"data": base64.b64encode(b"{}").decode(), "attributes": attrs, "messageId": "1"},
            "subscription": "projects/p/subscriptions/s"}
    response = make_client("handle_pubsub").post("/", json=body)
    assert response.status_code == 200
    [row] = files(deps)
    assert (row.name, row.generation) == ("legacy/x.csv", 7)


@pytest.mark.parametrize(
    ("data", "attrs"),
    [
        ("%%% not base64 %%%", {"event_type": "task"}),
        (base64.b64encode(b"{not json").decode(), {"event_type": "task"}),
        (base64.b64encode(b"{}").decode(), {"event_type": "nonsense"}),
        (base64.b64encode(b"{}").decode(), {}),
        (base64.b64encode(b"{}").decode(), {"eventType": "OBJECT_FINALIZE"}),
    ],
)
def test_pubsub_malformed_messages_are_acknowledged(deps, data: str, attrs: dict[str, str]) -> None:
    response = post(make_client("handle_pubsub"), pubsub_event(data, attrs), mode="binary")
    assert response.status_code == 200
    assert files(deps) == []


def test_operator_health_and_status(deps) -> None:
    client = make_client("operator", "http")
    assert client.get("/healthz").get_json() == {"status": "ok", "service": "caf-operator"}
    post(make_client("handle_raw_file"), storage_event("unknown/c.csv"), mode="binary")
    assert client.get("/status").status_code == 401  # every tenant's counts and errors: not for anyone
    deps.settings.auth.static_tokens = {"status-token": "default"}
    status = client.get("/status", headers={"Authorization": "Bearer status-token"}).get_json()
    assert status["files"] == {"ERROR": 1}
    assert status["recent_file_errors"][0]["error"] == "no table registered for unknown/c.csv"
    assert client.get("/nope").status_code == 404


def test_importing_main_connects_to_nothing_and_stays_light() -> None:
    code = ("import sys, main; heavy = [m for m in ('sqlalchemy', 'pandas', 'pyarrow', 'duckdb', "
            "'google.cloud.storage', 'google.cloud.bigquery', 'pgserver', 'pg8000') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         check=True, env={"PATH": "/usr/bin:/bin", "APP_ENV": "test"})
    assert out.stdout.strip() == ""
