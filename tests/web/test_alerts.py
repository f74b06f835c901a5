"""Alerts against a loopback webhook server: Google Chat and Slack shapes, de-dup, rate limit, failures swallowed.

The Google Chat webhook keeps its real host (`chat.googleapis.com`, which picks the Chat format);
its requests reach the loopback server through HTTP_PROXY, as an absolute-URI proxy request.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from app import alerts
from tests.handlers.ingest_support import ORDERS, ORDERS_CSV

CHAT_SECRET = "chat-key-SECRET1&token=SECRET2"
SLACK_SECRET = "T000/B000/SLACKSECRET3"
ROW_VALUE = "Jane-Doe-4242"


@dataclass
class Hooks:
    port: int
    status: int = 200
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def chat_url(self) -> str:
        return f"http://chat.googleapis.com/v1/spaces/AAA/messages?key={CHAT_SECRET}"

    @property
    def slack_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/{SLACK_SECRET}"

    def bodies(self, kind: str) -> list[dict[str, Any]]:
        return [body for path, body in self.received if (kind == "chat") == path.startswith("http://chat.")]


@pytest.fixture
def hooks(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hooks]:
    state: Hooks

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.received.append((self.path, body))
            self.send_response(state.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state = Hooks(port=server.server_port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{state.port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield state
    server.shutdown()


@pytest.fixture
def alerting(deps, hooks: Hooks):
    deps.settings.alerts.webhooks = [hooks.chat_url, hooks.slack_url]
    deps.settings.alerts.min_interval_seconds = 60
    return deps


def failed_file(ingest, name: str) -> int:
    """A file in ERROR, failed while no webhook was configured (so each test raises the alert itself)."""
    configured = ingest.deps.settings.alerts.webhooks
    ingest.deps.settings.alerts.webhooks = []
    try:
        return ingest.load(name, "Order ID,amount,order_date\n1,2.00,2026-11-01\n").id
    finally:
        ingest.deps.settings.alerts.webhooks = configured


def test_ingestion_raises_the_file_alert_itself(alerting, hooks: Hooks, ingest) -> None:
    ingest.register(ORDERS)
    row = ingest.load("sales/orders/auto.csv", "Order ID,amount,order_date\n1,2.00,2026-11-01\n")
    assert row.status == "ERROR"
    assert [b["text"] for b in hooks.bodies("slack")] == ["CAF file failed: auto.csv"]
    assert alerts.on_file_error(alerting, row.id) is False  # de-duplicated per object version


def test_file_error_posts_google_chat_and_slack_cards_once(alerting, hooks: Hooks, ingest) -> None:
    ingest.register(ORDERS)
    file_id = failed_file(ingest, "sales/orders/2026-11-02.csv")
    assert alerts.on_file_error(alerting, file_id) is True

    [chat] = hooks.bodies("chat")
    assert chat["text"].startswith("CAF file failed: 2026-11-02.csv")
    card = chat["cardsV2"][0]["card"]
    assert card["header"]["title"] == chat["text"] and card["header"]["subtitle"] == "reason: mapping_mismatch"
    widgets = {w["decoratedText"]["topLabel"]: w["decoratedText"]["text"] for w in card["sections"][0]["widgets"]}
    assert widgets["table"] == "sales.orders" and widgets["reason"] == "mapping_mismatch"
    assert "missing column(s): note" in widgets["error"]
    assert widgets["object"].startswith("gs://landing/sales/orders/2026-11-02.csv#")

    [slack] = hooks.bodies("slack")
    assert slack["text"] == chat["text"]
    assert slack["blocks"][0] == {"type": "header", "text": {"type": "plain_text", "text": chat["text"]}}
    fields = [f["text"] for block in slack["blocks"] if block["type"] == "section" for f in block["fields"]]
    assert "*table*\nsales.orders" in fields and any("missing column(s): note" in f for f in fields)

    # A redelivered event, or a second hook call for the same object version: no second card.
    assert alerts.on_file_error(alerting, file_id) is False
    assert len(hooks.received) == 2


def test_rate_limit_holds_back_then_counts(alerting, hooks: Hooks, ingest) -> None:
    ingest.register(ORDERS)
    first, second, third = (failed_file(ingest, f"sales/orders/{n}.csv") for n in ("a", "b", "c"))
    assert alerts.on_file_error(alerting, first) is True
    assert alerts.on_file_error(alerting, second) is False  # same table within 60 s: held back
    assert len(hooks.bodies("slack")) == 1
    alerting.clock.advance(61)
    assert alerts.on_file_error(alerting, third) is True
    last = hooks.bodies("slack")[-1]
    fields = [f["text"] for block in last["blocks"] if block["type"] == "section" for f in block["fields"]]
    assert "*held back*\n1 similar alert(s) in the last interval" in fields
    assert alerts.on_file_error(alerting, second) is False  # held back once means handled: no late card


def test_webhook_failures_are_logged_and_swallowed(alerting, hooks: Hooks, ingest,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    ingest.register(ORDERS)
    file_id = failed_file(ingest, "sales/orders/a.csv")
    hooks.status = 500
    with caplog.at_level(logging.WARNING, logger="caf.alerts"):
        assert alerts.on_file_error(alerting, file_id) is False
    assert "HTTP 500" in caplog.text and "http://chat.googleapis.com" in caplog.text
    assert "SECRET" not in caplog.text  # only the webhook's host is ever logged

    alerting.settings.alerts.webhooks = ["http://127.0.0.1:9/closed-port"]
    alerting.clock.advance(61)
    other = failed_file(ingest, "sales/orders/b.csv")
    assert alerts.on_file_error(alerting, other) is False  # unreachable: swallowed too

    # A failed delivery is not a delivery: the next attempt for the same key is sent.
    hooks.status = 200
    alerting.settings.alerts.webhooks = [hooks.slack_url]
    assert alerts.on_file_error(alerting, file_id) is True


def test_cards_carry_no_secrets_and_no_row_data(alerting, hooks: Hooks, ingest) -> None:
    ingest.register(ORDERS.replace("max_bad_records: 2", "max_bad_records: 0"))
    bad = ingest.load("sales/orders/people.csv", "Order ID,amount,order_date,note\n"
                      f"1,{ROW_VALUE},2026-11-01,x\n2,{ROW_VALUE},2026-11-01,y\n2,1.00,2026-11-01,z\n")
    assert bad.status == "ERROR" and ROW_VALUE in bad.error_message  # the message itself quotes the value
    assert hooks.bodies("slack")  # ingestion raised the file alert itself
    assert alerts.on_file_error(alerting, bad.id) is False  # once per object version
    assert alerts.notify(alerting, "custom", "k1", "db down: postgresql://caf:hunter2@db/caf",
                         {"detail": "password=hunter2 token: abc123", "hook": hooks.slack_url}) is True
    posted = json.dumps([body for _, body in hooks.received], ensure_ascii=False)
    for secret in (ROW_VALUE, "hunter2", "abc123", "SLACKSECRET3", "SECRET1", "SECRET2"):
        assert secret not in posted
    assert "row(s) rejected" in posted and "row 2: …" in posted


def test_task_error_limit_refusal_and_batch_done(alerting, hooks: Hooks) -> None:
    from engine.kinds.base import RemoteFailure
    from tests.engine import callables
    from tests.engine.conftest import define, py, run_batch, runs

    callables.reset()
    define(alerting, py("load", dag="d"), py("refresh", "load", dag="d"), py("report", "load", dag="d"))
    callables.FAILURES["refresh"] = [RemoteFailure("Power BI dataset ds1: daily refresh limit of 8 reached",
                                                   alert="limit_reached", detail={"dataset_id": "ds1"})]
    callables.FAILURES["report"] = [callables.permanent("relation missing")]
    batch_id = run_batch(alerting, "d")
    by_name = {name: run for name, run in runs(alerting, batch_id).items()}
    ids = _run_ids(alerting, batch_id)

    # The engine raised these itself as the runs ended; asking again is de-duplicated.
    titles = [body["text"] for body in hooks.bodies("slack")]
    assert sorted(titles[:2]) == ["CAF refresh refused (daily limit): refresh", "CAF task failed: report"]
    assert titles[2:] == [f"CAF batch {batch_id} ERROR: dag:d"]
    assert alerts.on_task_error(alerting, ids["report"]) is False
    assert alerts.on_task_error(alerting, ids["load"]) is False  # SUCCESS: nothing to say
    assert alerts.on_limit_refused(alerting, ids["refresh"], "daily refresh limit of 8 reached") is False  # once
    assert alerts.on_batch_done(alerting, batch_id) is False
    assert by_name["refresh"]["status"] == "ERROR"
    callables.reset()


def test_alert_records_never_reach_the_publisher(alerting, hooks: Hooks, ingest) -> None:
    from database import outbox

    ingest.register(ORDERS)
    ingest.load("sales/orders/ok.csv", ORDERS_CSV)
    assert alerts.on_file_error(alerting, failed_file(ingest, "sales/orders/a.csv"))
    outbox.publish_pending(session_factory=alerting.sessions, publisher=alerting.publisher)
    assert not [m for m in alerting.publisher.published if m.event_type == "alert"]


def test_no_webhooks_no_alert(deps, ingest) -> None:
    ingest.register(ORDERS)
    assert alerts.on_file_error(deps, failed_file(ingest, "sales/orders/a.csv")) is False


def _run_ids(deps: Any, batch_id: int) -> dict[str, int]:
    from sqlalchemy import text

    with deps.sessions() as session:
        rows = session.execute(text("SELECT t.name, l.id FROM task_log l JOIN tasks t ON t.id = l.task_id"
                                    " WHERE l.batch_id = :b"), {"b": batch_id}).all()
    return {name: run_id for name, run_id in rows}


def test_all_rejected_file_alerts_and_all_skipped_batch_does_not(alerting, hooks: Hooks, ingest) -> None:
    from tests.engine.conftest import define, drain, runs

    ingest.register(ORDERS)  # max_bad_records: 2
    bad = ingest.load("sales/orders/all-bad.csv", "Order ID,amount,order_date,note\n1,x,2026-11-01,a\n")
    assert bad.status == "ERROR"
    assert [b["text"] for b in hooks.bodies("slack")] == ["CAF file failed: all-bad.csv"]

    define(alerting, {"name": "ready", "kind": "wait_for_files", "on_file": ["sales.orders"],
                      "wait_for_files": {"tables": ["sales.orders", "sales.customers"]}},
           {"name": "after", "kind": "python", "python": {"callable": "engine.kinds.python:noop"},
            "depends_on": ["ready"]})
    alerting.clock.advance(61)
    waiting = ingest.load("sales/orders/ok.csv", ORDERS_CSV)
    drain(alerting)
    assert {r["status"] for r in runs(alerting, waiting.batch_id).values()} == {"SKIPPED"}
    assert alerts.on_batch_done(alerting, waiting.batch_id) is False
    assert not [b for b in hooks.bodies("slack") if b["text"].startswith("CAF batch")]


def test_a_stalled_file_alerts_once(alerting, hooks: Hooks, ingest, clock) -> None:
    from tests.engine.conftest import drain
    from tests.locks import DuckDbLock
    from values.messages import OutgoingMessage

    ingest.register(ORDERS)
    alerting.warehouse.lock_wait_seconds = 0.1
    with DuckDbLock(alerting.warehouse.path):
        info = ingest.put("sales/orders/stuck.csv", ORDERS_CSV)
        assert ingest.deliver(info) == 500  # given back; no redelivery comes
        assert not hooks.received
        clock.advance(alerting.settings.ingest.stall_seconds + 1)
        for _ in range(2):  # two sweeps while the warehouse is still locked: one alert
            alerting.publisher.publish(OutgoingMessage("task", {"sweep": True}))
            drain(alerting)
            clock.advance(alerting.settings.ingest.stall_seconds + 1)
    [card] = hooks.bodies("slack")
    assert card["text"] == "CAF file stalled: stuck.csv"
    fields = [f["text"] for block in card["blocks"] if block["type"] == "section" for f in block["fields"]]
    assert any(f.startswith("*last error*\nwarehouse file") for f in fields)
    assert ingest.file(info).status == "NEW"
