"""`caf local event` prints a storage CloudEvent that handle_raw_file accepts as it is."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cli.app import _register, app
from tests.conftest import make_client
from tests.handlers.ingest_support import Ingest
from tests.wire.test_functions_framework import ORDERS, loaded

_register()


def test_printed_structured_event_loads_the_local_object(deps, tmp_path: Path) -> None:
    Ingest(deps, tmp_path).register(ORDERS)
    info = deps.storage.put_bytes("landing", "sales/orders/o3.csv", b"order_id,amount\n7,1.50\n")
    result = CliRunner().invoke(app, ["local", "event", "landing/sales/orders/o3.csv", "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    event = json.loads(result.output)
    assert event["type"] == "google.cloud.storage.object.v1.finalized"
    assert event["data"]["generation"] == str(info.generation) and event["data"]["md5Hash"] == info.md5
    reply = make_client("handle_raw_file").post("/", data=result.output,
                                                headers={"Content-Type": "application/cloudevents+json"})
    assert reply.status_code == 200 and loaded(deps, "sales/orders/o3.csv")
