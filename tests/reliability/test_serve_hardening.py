"""`caf serve` against what a web page in the developer's browser could send it, over a real socket:
cross-site "simple" CloudEvents, another Host name (DNS rebinding), huge bodies, events for buckets
that are not landing buckets, and header-sized values in log lines."""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from cli.local_delivery import storage_event_data
from database.models import File
from tests.reliability.conftest import finalize_headers, http_post, items_csv

MIB = 1 << 20


def request(base_url: str, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, chunks: list[bytes] | None = None) -> tuple[int, bytes]:
    """One request on a fresh connection; `chunks` sends the body chunked (no Content-Length)."""
    host, port = base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    headers = dict(headers or {})
    conn.putrequest(method, path, skip_host="Host" in headers)
    for key, value in headers.items():
        conn.putheader(key, value)
    if chunks is not None:
        conn.putheader("Transfer-Encoding", "chunked")
    elif body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders()
    try:
        if chunks is not None:
            for chunk in chunks:
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.send(b"0\r\n\r\n")
        elif body:
            conn.send(body)
    except (BrokenPipeError, ConnectionResetError):
        pass  # answered (413) and closed before the whole body was sent
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def pubsub_task_body() -> bytes:
    message = {"message": {"data": base64.b64encode(b'{"sweep": true}').decode(),
                           "attributes": {"event_type": "sweep"}, "messageId": "m1"},
               "subscription": "projects/p/subscriptions/s"}
    return json.dumps(message).encode()


def structured(event_type: str, source: str, data: Any) -> bytes:
    return json.dumps({"specversion": "1.0", "type": event_type, "source": source, "id": uuid.uuid4().hex,
                       "datacontenttype": "application/json", "data": data}).encode()


def file_rows(deps) -> int:
    with deps.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(File)) or 0)


# -- cross-site requests ----------------------------------------------------------------------------
@pytest.mark.parametrize("content_type", ["text/plain", "text/plain;charset=utf-8", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", None])
def test_cloudevents_a_browser_could_forge_are_refused(ing, live_server: str, content_type: str | None) -> None:
    from values.messages import PUBSUB_PUBLISHED, STORAGE_FINALIZED

    info = ing.put("rel/items/forged.csv", items_csv(1, 3))
    headers = {"Content-Type": content_type} if content_type else {}
    gcs = structured(STORAGE_FINALIZED, "//storage.googleapis.com/projects/_/buckets/landing",
                     storage_event_data(info))
    assert request(live_server, "POST", "/gcs/", gcs, headers)[0] == 415
    pubsub = structured(PUBSUB_PUBLISHED, "//pubsub.googleapis.com/x", json.loads(pubsub_task_body()))
    assert request(live_server, "POST", "/pubsub/", pubsub, headers)[0] == 415
    # binary-mode headers with a form / text content type, or none: refused as well
    binary = {k: v for k, v in finalize_headers(info).items() if k != "Content-Type"}
    binary.update({"Content-Type": content_type} if content_type else {})
    assert request(live_server, "POST", "/gcs/", json.dumps(storage_event_data(info)).encode(), binary)[0] == 415
    assert file_rows(ing.deps) == 0 and ing.exists("rel/items/forged.csv")


def test_genuine_binary_and_structured_cloudevents_still_work(ing, live_server: str) -> None:
    """Eventarc's binary mode and structured mode; a Pub/Sub push (plain JSON body, no ce-* headers)
    is covered over the emulator by tests/wire."""
    from values.messages import STORAGE_FINALIZED

    info = ing.put("rel/items/binary.csv", items_csv(1, 3))
    assert request(live_server, "POST", "/gcs/", json.dumps(storage_event_data(info)).encode(),
                   finalize_headers(info))[0] == 200
    other = ing.put("rel/items/structured.csv", items_csv(10, 2))
    body = structured(STORAGE_FINALIZED, "//storage.googleapis.com/projects/_/buckets/landing",
                      storage_event_data(other))
    assert request(live_server, "POST", "/gcs/", body, {"Content-Type": "application/cloudevents+json"})[0] == 200
    assert ing.count("rel.items") == 5


# -- DNS rebinding ---------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "127.0.0.1.evil.example", "localhost.",
                                  "", "[::2]:80"])
def test_other_host_names_are_refused_on_every_path(ing, live_server: str, host: str) -> None:
    info = ing.put("rel/items/rebind.csv", items_csv(1, 2))
    event = json.dumps(storage_event_data(info)).encode()
    for method, path, body, headers in (("GET", "/healthz", None, {}), ("GET", "/files", None, {}),
                                        ("POST", "/gcs/", event, finalize_headers(info)),
                                        ("POST", "/jobs", b"{}", {"Content-Type": "application/json"})):
        status, data = request(live_server, method, path, body, {**headers, "Host": host})
        assert status == 400 and b"allowed_hosts" in data, (method, path, status)
    assert file_rows(ing.deps) == 0


def test_loopback_names_are_served_and_allowed_hosts_is_configurable(deps, live_server: str) -> None:
    port = live_server.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}"):
        assert request(live_server, "GET", "/healthz", headers={"Host": host})[0] == 200, host

    from cli.serve import build_app

    settings = deps.settings.model_copy(update={"serve": deps.settings.serve.model_copy(
        update={"allowed_hosts": ["caf.internal"]})})
    with served(deps, settings, bind_host="10.1.2.3") as url:
        assert request(url, "GET", "/healthz", headers={"Host": "caf.internal:8080"})[0] == 200
        assert request(url, "GET", "/healthz", headers={"Host": "10.1.2.3"})[0] == 200  # the --host address
        assert request(url, "GET", "/healthz", headers={"Host": "localhost"})[0] == 400
    assert build_app  # imported for the reader: served() builds through it


@pytest.fixture
def small_limit(deps) -> Iterator[str]:
    settings = deps.settings.model_copy(update={"serve": deps.settings.serve.model_copy(
        update={"max_request_bytes": MIB})})
    with served(deps, settings) as url:
        yield url


def served(deps, settings, bind_host: str | None = None):
    import contextlib

    from werkzeug.serving import make_server

    from app.deps import Deps, set_deps
    from cli.serve import build_app

    @contextlib.contextmanager
    def run() -> Iterator[str]:
        own = Deps(settings, clock=deps.clock, engine=deps.engine, sessions=deps.sessions, publisher=deps.publisher)
        previous = set_deps(own)
        server = make_server("127.0.0.1", 0, build_app(bind_host=bind_host), threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
            set_deps(previous)

    return run()


# -- body size -------------------------------------------------------------------------------------
def test_bodies_over_the_limit_are_413_announced_or_streamed(ing, small_limit: str) -> None:
    info = ing.put("rel/items/big.csv", items_csv(1, 2))
    event = {**storage_event_data(info), "metadata": {"pad": "x" * (2 * MIB)}}
    body = json.dumps(event).encode()
    assert request(small_limit, "POST", "/gcs/", body, finalize_headers(info))[0] == 413
    chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)]
    assert request(small_limit, "POST", "/gcs/", headers=finalize_headers(info), chunks=chunks)[0] == 413
    assert request(small_limit, "POST", "/jobs", b"{" + b" " * (2 * MIB) + b"}",
                   {"Content-Type": "application/json"})[0] == 413
    assert file_rows(ing.deps) == 0
    # under the limit, chunked or not, it is processed normally
    small = json.dumps(storage_event_data(info)).encode()
    assert request(small_limit, "POST", "/gcs/", headers=finalize_headers(info),
                   chunks=[small[:100], small[100:]])[0] == 200
    assert ing.count("rel.items") == 2


def test_default_limit_is_cloud_runs_32_mib(deps) -> None:
    assert deps.settings.serve.max_request_bytes == 32 * MIB


# -- buckets ---------------------------------------------------------------------------------------
def test_events_for_the_upload_bucket_are_ignored_and_the_upload_stays(ing, live_server: str, caplog) -> None:
    caplog.set_level(logging.INFO)
    upload = ing.put("tenant_a/0b1c/sales/orders/a.csv", items_csv(1, 2), bucket="uploads")
    assert post_event(live_server, upload) == 200
    assert ing.exists("tenant_a/0b1c/sales/orders/a.csv", bucket="uploads")
    assert not ing.exists("failed/tenant_a/0b1c/sales/orders/a.csv", bucket="uploads")
    assert file_rows(ing.deps) == 0
    assert any("not a landing bucket" in r.getMessage() for r in caplog.records)


def post_event(url: str, info: Any) -> int:
    return http_post(f"{url}/gcs/", json.dumps(storage_event_data(info)).encode(), finalize_headers(info))


def test_landing_buckets_setting_limits_ingestion_to_those_buckets(ing, monkeypatch) -> None:
    from config.settings import load_settings

    monkeypatch.setenv("INGEST__LANDING_BUCKETS", '["acme-landing"]')  # as run/scripts/deploy sets it
    assert load_settings().ingest.landing_buckets == ["acme-landing"]
    settings = ing.deps.settings.model_copy(update={"ingest": ing.deps.settings.ingest.model_copy(
        update={"landing_buckets": ["raw-drop"]})})
    with served(ing.deps, settings) as url:
        elsewhere = ing.put("rel/items/x.csv", items_csv(1, 2), bucket="other")
        assert post_event(url, elsewhere) == 200 and file_rows(ing.deps) == 0
        configured = ing.put("rel/items/y.csv", items_csv(3, 2), bucket="raw-drop")
        assert post_event(url, configured) == 200
        landing = ing.put("rel/items/z.csv", items_csv(5, 2))  # jobs.landing_bucket is always one
        assert post_event(url, landing) == 200
    assert ing.count("rel.items") == 4 and file_rows(ing.deps) == 2


# -- log lines -------------------------------------------------------------------------------------
@pytest.fixture
def formatted_lines() -> Iterator[Any]:
    """Every record formatted at emit time (labels and trace bound) by both CAF formatters."""
    import logs
    from handlers import routes

    routes.ensure_logging()
    streams = [io.StringIO(), io.StringIO()]
    handlers = []
    for stream, formatter in zip(streams, (logs.JsonFormatter(), logs.TextFormatter()), strict=True):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        handler.setLevel(logging.DEBUG)
        logging.getLogger().addHandler(handler)
        handlers.append(handler)
    root_level = logging.getLogger().level
    logging.getLogger().setLevel(logging.DEBUG)
    yield lambda: [line for stream in streams for line in stream.getvalue().splitlines()]
    for handler in handlers:
        logging.getLogger().removeHandler(handler)
    logging.getLogger().setLevel(root_level)


def test_megabyte_headers_and_attributes_make_bounded_log_lines(ing, live_server: str, formatted_lines) -> None:
    huge = "z" * MIB
    info = ing.put("nowhere/x.csv", "a\n1\n")
    headers = {**finalize_headers(info), "ce-traceparent": "t" * 60_000}  # the server's header line limit is 64 KiB
    assert request(live_server, "POST", "/gcs/", json.dumps(storage_event_data(info)).encode(), headers)[0] == 200
    message = {"message": {"data": base64.b64encode(b"{}").decode(), "attributes": {"event_type": huge},
                           "messageId": "m1"}, "subscription": "projects/p/subscriptions/s"}
    pubsub_headers = {"ce-specversion": "1.0", "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
                      "ce-source": "//pubsub.googleapis.com/x", "ce-id": "m-1", "Content-Type": "application/json",
                      "ce-traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
    assert request(live_server, "POST", "/pubsub/", json.dumps(message).encode(), pubsub_headers)[0] == 200
    try:
        raise ValueError(huge)
    except ValueError:
        logging.getLogger("caf.test").exception("a quoted header: %s", huge)
    lines = formatted_lines()
    assert any("no table registered for nowhere/x.csv" in line for line in lines)
    assert any("unknown route" in line for line in lines)
    assert max(len(line) for line in lines) < 32_000, sorted(len(line) for line in lines)[-5:]
    assert sum("[cut: " in line for line in lines) >= 4  # pubsub route + the quoted header, both formatters
    trace = [json.loads(line).get("logging.googleapis.com/trace") for line in lines if line.startswith("{")]
    assert "00-" + "a" * 32 + "-" + "b" * 16 + "-01" in trace and all(t is None or len(t) < 300 for t in trace)
