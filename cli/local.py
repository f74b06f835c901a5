"""`caf local`: plain functions-framework runs without `caf serve`.

    caf local pubsub-push URL      the Pub/Sub emulator pushes CAF's topic to handle_pubsub at URL
    caf local event BUCKET/NAME    a ready storage CloudEvent (curl) for a local object

See docs/local-development.md for the two-process recipe.
"""

from __future__ import annotations

import json
import os
import shlex
import uuid
from datetime import UTC, datetime
from typing import Any

import typer

from cli.context import console
from errors import ConfigError

app = typer.Typer(help="Local runs with plain functions-framework processes (docs/local-development.md).",
                  no_args_is_help=True)

STORAGE_FINALIZED = "google.cloud.storage.object.v1.finalized"


@app.command("pubsub-push")
def pubsub_push(
    endpoint: str = typer.Argument(..., help="handle_pubsub's URL, e.g. http://127.0.0.1:8081/"),
    max_delivery_attempts: int = typer.Option(5, min=5, max=100, help="Deliveries before dead-lettering."),
) -> None:
    """Create CAF's topic, a dead-letter topic and a push subscription to ENDPOINT on the Pub/Sub emulator."""
    from google.api_core import exceptions as gexc
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]
    from google.protobuf import duration_pb2

    from config.settings import get_settings

    host = os.environ.get("PUBSUB_EMULATOR_HOST")
    if not host:
        raise ConfigError("PUBSUB_EMULATOR_HOST is not set: `caf local pubsub-push` only configures the "
                          "Pub/Sub emulator (production subscriptions come from run/scripts/deploy)")
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"endpoint must be an http(s) URL, got {endpoint!r}")
    settings = get_settings()
    project = settings.publisher.project or settings.gcp_project or "caf-local"
    topic = settings.publisher.topic
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic_path = publisher.topic_path(project, topic)
    dead_path = publisher.topic_path(project, f"{topic}-dead-letter")
    for path in (topic_path, dead_path):
        try:
            publisher.create_topic(name=path)
        except gexc.AlreadyExists:
            pass
    subscription = subscriber.subscription_path(project, f"{topic}-push")
    try:
        subscriber.delete_subscription(subscription=subscription)  # re-run: point it at the new endpoint
    except gexc.NotFound:
        pass
    # The push URL names the topic: functions-framework makes it the CloudEvent's source, as Eventarc does.
    push_url = f"{endpoint.rstrip('/')}/projects/{project}/topics/{topic}"
    subscriber.create_subscription(request={
        "name": subscription, "topic": topic_path, "ack_deadline_seconds": 60,
        "push_config": {"push_endpoint": push_url},
        "retry_policy": {"minimum_backoff": duration_pb2.Duration(seconds=1),
                         "maximum_backoff": duration_pb2.Duration(seconds=30)},
        "dead_letter_policy": {"dead_letter_topic": dead_path, "max_delivery_attempts": max_delivery_attempts}})
    console.print(f"Pub/Sub emulator {host}: {topic_path} → push {push_url}\n"
                  f"  dead letters after {max_delivery_attempts} deliveries: {dead_path}\n"
                  f"  publishers need PUBLISHER__KIND=pubsub PUBLISHER__PROJECT={project} "
                  f"PUBLISHER__TOPIC={topic} PUBSUB_EMULATOR_HOST={host}")


@app.command("event")
def event(
    target: str = typer.Argument(..., help="BUCKET/NAME of an object in local storage"),
    url: str = typer.Option("http://127.0.0.1:8080/", help="handle_raw_file's URL"),
    structured: bool = typer.Option(False, help="Structured mode (one JSON document) instead of binary."),
    json_only: bool = typer.Option(False, "--json", help="Print the CloudEvent (structured JSON), no curl."),
) -> None:
    """Print a ready `google.cloud.storage.object.v1.finalized` CloudEvent for a local object, as curl."""
    from app.deps import get_deps

    bucket, _, name = target.partition("/")
    if not bucket or not name:
        raise ConfigError(f"expected BUCKET/NAME, got {target!r}")
    info = get_deps().storage.stat(bucket, name)
    attributes, data = storage_cloud_event(info)
    if json_only or structured:
        document = json.dumps({**attributes, "datacontenttype": "application/json", "data": data})
        if json_only:
            typer.echo(document)
            return
        typer.echo(f"curl -sS -X POST {shlex.quote(url)} -H 'Content-Type: application/cloudevents+json' "
                   f"-d {shlex.quote(document)}")
        return
    headers = " ".join(f"-H {shlex.quote(f'ce-{k}: {v}')}" for k, v in attributes.items())
    typer.echo(f"curl -sS -X POST {shlex.quote(url)} -H 'Content-Type: application/json' {headers} "
               f"-d {shlex.quote(json.dumps(data))}")


def storage_cloud_event(info: Any) -> tuple[dict[str, str], dict[str, Any]]:
    """CloudEvent attributes and data (the GCS object resource) of a finalize event for `info`."""
    from cli.local_delivery import storage_event_data

    attributes = {
        "specversion": "1.0", "type": STORAGE_FINALIZED, "id": f"local-{uuid.uuid4().hex}",
        "source": f"//storage.googleapis.com/projects/_/buckets/{info.bucket}",
        "subject": f"objects/{info.name}", "time": datetime.now(UTC).isoformat(),
    }
    return attributes, {k: v for k, v in storage_event_data(info).items() if v is not None}


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="local")
