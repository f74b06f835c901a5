"""The Pub/Sub tier: Google's Pub/Sub emulator pushing to `caf serve`'s app over real HTTP.

A session fixture starts the emulator (from the gcloud SDK) on a free port; each test gets its
own topic, dead-letter topic and push subscription, and `caf serve`'s WSGI app (cli.serve.build_app)
on a free port, with CAF's PubSubPublisher publishing to the emulator. Skipped, with the reason,
where the emulator is not installed.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.wire.emulators import Emulator, pubsub_emulator, pubsub_emulator_launcher

PROJECT = "caf-emu"
_names = itertools.count(1)


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    launcher, reason = pubsub_emulator_launcher()
    if launcher is None:
        pytest.skip(reason)
    with pubsub_emulator(launcher, tmp_path_factory.mktemp("pubsub") / "emulator.log") as running:
        yield running


class LoseAcks:
    """WSGI middleware: the first `n` matching deliveries are processed, then answered 500 (the ack
    is lost), so Pub/Sub redelivers a message CAF has already acted on."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.rules: list[list[Any]] = []  # [predicate on the push body, remaining]
        self.seen: list[dict] = []

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        import io

        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(raw)
        body = _json(raw)
        self.seen.append(body)
        rule = next((r for r in self.rules if r[1] > 0 and r[0](body)), None)
        if rule is None:
            return self.app(environ, start_response)
        rule[1] -= 1
        captured: list[Any] = []
        result = list(self.app(environ, lambda status, headers, exc=None: captured.append(status)))
        start_response("500 INTERNAL SERVER ERROR", [("Content-Type", "text/plain")])
        del result
        return [b"ack lost"]


def _json(raw: bytes) -> dict:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@dataclass
class Wire:
    """One test's topics, subscription and server; `deps` publishes through the emulator."""

    deps: Any
    topic: str
    dead_letter_topic: str
    subscription: str
    url: str
    acks: LoseAcks
    publisher_client: Any
    subscriber: Any
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def dead_letters(self, timeout: float = 30.0) -> list[Any]:
        """Messages that reached the dead-letter topic (read through a pull subscription)."""
        path = self.subscriber.subscription_path(PROJECT, f"{self.dead_letter_topic}-pull")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self.subscriber.pull(subscription=path, max_messages=10, timeout=5)
            if reply.received_messages:
                return [m.message for m in reply.received_messages]
            time.sleep(0.5)
        return []


def wait_for(predicate: Callable[[], Any], *, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def wire(deps, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Wire]:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]
    from google.protobuf import duration_pb2
    from werkzeug.serving import make_server

    from adapters.publisher.pubsub import PubSubPublisher
    from app.deps import Deps, set_deps
    from cli.serve import build_app
    from config.settings import TaskSettings

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
    n = next(_names)
    topic, dead, sub = f"caf-events-{n}", f"caf-dead-{n}", f"caf-push-{n}"
    publisher_client, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    app = build_app()
    acks = LoseAcks(app.wsgi_app)
    app.wsgi_app = acks
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, name="caf-serve", daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    topic_path, dead_path = publisher_client.topic_path(PROJECT, topic), publisher_client.topic_path(PROJECT, dead)
    publisher_client.create_topic(name=topic_path)
    publisher_client.create_topic(name=dead_path)
    subscriber.create_subscription(name=subscriber.subscription_path(PROJECT, f"{dead}-pull"), topic=dead_path)
    sub_path = subscriber.subscription_path(PROJECT, sub)
    # The push URL names the topic, so functions-framework gives the CloudEvent its real source.
    subscriber.create_subscription(request={
        "name": sub_path, "topic": topic_path, "ack_deadline_seconds": 30,
        "push_config": {"push_endpoint": f"{url}/pubsub/projects/{PROJECT}/topics/{topic}"},
        "retry_policy": {"minimum_backoff": duration_pb2.Duration(seconds=1),
                         "maximum_backoff": duration_pb2.Duration(seconds=2)},
        "dead_letter_policy": {"dead_letter_topic": dead_path, "max_delivery_attempts": 5}})
    settings = deps.settings.model_copy(update={"tasks": TaskSettings(backoff_base_seconds=1, backoff_max_seconds=2)})
    publisher = PubSubPublisher(project=PROJECT, topic=topic)
    wired = Deps(settings, clock=deps.clock, engine=deps.engine, sessions=deps.sessions, publisher=publisher)
    previous = set_deps(wired)
    try:
        yield Wire(wired, topic, dead, sub, url, acks, publisher_client, subscriber)
    finally:
        subscriber.delete_subscription(subscription=sub_path)  # stop pushing before the server goes
        server.shutdown()
        server.server_close()
        set_deps(previous)
        publisher.close()
