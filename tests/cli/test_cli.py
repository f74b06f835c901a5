"""The `caf` command line against the real stack (typer's runner, the test session's database)."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path

import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from typer.testing import CliRunner

from cli.app import _register, app
from tests.handlers.ingest_support import ORDERS, ORDERS_CSV
from values.messages import STORAGE_FINALIZED

runner = CliRunner()
_register()


def caf(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def write_definition(tmp_path: Path, text: str, name: str = "orders.yaml") -> Path:
    import textwrap

    folder = tmp_path / "defs"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(textwrap.dedent(text))
    return folder


def test_registry_sync_is_idempotent_and_reports_changes(deps, tmp_path: Path) -> None:
    folder = write_definition(tmp_path, ORDERS)
    code, out = caf("registry", "sync", str(folder))
    assert code == 0 and "sales.orders" in out and "created" in out
    code, out = caf("registry", "sync", str(folder))
    assert code == 0 and "unchanged" in out
    write_definition(tmp_path, ORDERS.replace("max_bad_records: 2", "max_bad_records: 3"))
    code, out = caf("registry", "sync", str(folder))
    assert code == 0 and "updated" in out


def test_registry_sync_rejects_invalid_definition_naming_file_and_field(deps, tmp_path: Path) -> None:
    folder = write_definition(tmp_path, ORDERS.replace("type: NUMERIC", "type: MONEY"), "bad.yaml")
    code, out = caf("registry", "sync", str(folder))
    assert code == 2
    assert "bad.yaml" in out and "schema.1.type" in out and "MONEY" in out


def test_ingest_backfill_and_status(deps, tmp_path: Path) -> None:
    caf("registry", "sync", str(write_definition(tmp_path, ORDERS)))
    good = tmp_path / "day1.csv"
    good.write_text(ORDERS_CSV)
    code, out = caf("ingest", str(good), "--prefix", "sales/orders/")
    assert code == 0 and "SUCCESS" in out
    assert deps.warehouse.count_rows("sales", "orders") == 5

    deps.storage.put_bytes("landing", "sales/orders/day2.csv", b"Order ID,amount,order_date,note\n6,1,2026-11-04,x\n")
    deps.storage.put_bytes("landing", "sales/orders/broken.csv", b"Order ID,amount\n")
    code, out = caf("backfill", "landing/sales/")
    assert code == 1 and "2 to deliver" in out  # broken.csv ended in ERROR
    assert deps.warehouse.count_rows("sales", "orders") == 6

    code, out = caf("status", "--json")
    assert code == 1  # something is in ERROR: usable from cron / CI
    data = json.loads(out)
    assert data["files"] == {"SUCCESS": 2, "ERROR": 1}
    assert "missing column" in data["recent_file_errors"][0]["error"]


def test_serve_hosts_all_targets_over_http(deps, tmp_path: Path) -> None:
    from werkzeug.serving import make_server

    from cli.serve import build_app

    caf("registry", "sync", str(write_definition(tmp_path, ORDERS)))
    info = deps.storage.put_bytes("landing", "sales/orders/http.csv", ORDERS_CSV.encode())
    server = make_server("127.0.0.1", 0, build_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=10) as response:
            assert json.load(response)["status"] == "ok"
        from cli.local_delivery import storage_event_data

        event = CloudEvent({"type": STORAGE_FINALIZED, "source": "//storage.googleapis.com/b"},
                           storage_event_data(info))
        headers, body = to_binary(event)
        headers["Content-Type"] = "application/json"  # as Eventarc sends it; urllib's default (a form) is refused
        request = urllib.request.Request(f"{base}/gcs/", data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
        deps.settings.auth.static_tokens = {"serve-token": "default"}
        status = urllib.request.Request(f"{base}/status", headers={"Authorization": "Bearer serve-token"})
        with urllib.request.urlopen(status, timeout=10) as response:
            assert json.load(response)["files"] == {"SUCCESS": 1}
    finally:
        server.shutdown()
    assert deps.warehouse.count_rows("sales", "orders") == 5


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_log_lines_carry_labels(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    import logs

    logs.configure(fmt, "INFO")
    token = logs.set_trace("projects/p/traces/abc")
    with logs.bind(bucket="landing", object="a.csv", generation=7):
        logging.getLogger("caf.test").info("loaded %s rows", 5, extra={"rows_loaded": 5})
    logs._trace.reset(token)
    captured = capsys.readouterr()
    line = (captured.out if fmt == "json" else captured.err).strip().splitlines()[-1]
    if fmt == "json":
        payload = json.loads(line)
        assert payload["severity"] == "INFO" and payload["message"] == "loaded 5 rows"
        assert payload["logging.googleapis.com/labels"] == {"bucket": "landing", "object": "a.csv", "generation": "7"}
        assert payload["logging.googleapis.com/trace"] == "projects/p/traces/abc"
        assert payload["rows_loaded"] == 5
    else:
        assert "loaded 5 rows" in line and "bucket=landing" in line


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_secret_in_a_bound_label_never_reaches_the_log(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Labels come from events (object names, ids): whatever they carry is masked like the message."""
    import logging

    import logs

    logs.configure(fmt, "INFO")
    with logs.bind(object="exports/orders.csv?password=hunter2", event_id="token: hunter2"):
        logging.getLogger("caf.test").info("loading")
    captured = capsys.readouterr()
    line = (captured.out if fmt == "json" else captured.err).strip().splitlines()[-1]
    assert "loading" in line and "exports/orders.csv?password=" in line  # the label is there...
    assert "hunter2" not in line  # ...without the secret
    if fmt == "json":
        labels = json.loads(line)["logging.googleapis.com/labels"]
        assert labels["object"] == "exports/orders.csv?password=***"
