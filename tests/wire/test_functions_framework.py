"""The local-development recipe, end to end: two plain `functions-framework` processes, no `caf serve`.

handle_raw_file and handle_pubsub run as separate processes (as on Cloud Run functions); the
Pub/Sub emulator carries CAF's events between them through the push subscription that
`caf local pubsub-push` sets up; the storage event is the curl that `caf local event` prints,
without a `generation` (the local object's current one is used). The DAG must finish.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from config.settings import PROJECT_ROOT
from tests.handlers.ingest_support import Ingest
from tests.wire.conftest import PROJECT, wait_for
from tests.wire.emulators import Emulator, free_port, stop, wait_for_port

BIN = Path(sys.executable).parent
ORDERS = """
dataset: sales
table: orders
source: "sales/orders/*.csv"
format: csv
schema:
  - {name: order_id, type: INT64, mode: REQUIRED}
  - {name: amount, type: NUMERIC}
"""


@contextlib.contextmanager
def function(target: str, env: dict[str, str], log: Path) -> Iterator[str]:
    """`functions-framework --target TARGET` on a free port; yields its URL."""
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(BIN / "functions-framework"), f"--target={target}", "--signature-type=cloudevent",
             f"--source={PROJECT_ROOT / 'main.py'}", "--host=127.0.0.1", f"--port={port}"],
            cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, process, timeout=60, what=f"functions-framework {target}")
        yield f"http://127.0.0.1:{port}/"
    finally:
        stop(process)


def test_two_functions_framework_processes_finish_a_file_triggered_dag(deps, emulator: Emulator,
                                                                       tmp_path: Path) -> None:
    from tests.engine.conftest import define

    settings = deps.settings
    env = {**os.environ, "APP_ENV": "test", "DATABASE_URL": str(settings.database_url),
           "WAREHOUSE_URL": settings.warehouse_url, "STORAGE_URL": settings.storage_url,
           "DATA_DIR": str(settings.data_dir), "PUBSUB_EMULATOR_HOST": emulator.host,
           "PUBLISHER__KIND": "pubsub", "PUBLISHER__PROJECT": PROJECT, "PUBLISHER__TOPIC": "caf-ff-events",
           "LOG_LEVEL": "INFO"}
    Ingest(deps, tmp_path).register(ORDERS)
    noop = {"kind": "python", "python": {"callable": "engine.kinds.python:noop"}}
    define(deps, {"name": "clean", "on_file": ["sales.orders"], **noop},
           {"name": "left", "depends_on": ["clean"], **noop}, {"name": "right", "depends_on": ["clean"], **noop},
           {"name": "join", "depends_on": ["left", "right"], **noop})
    deps.storage.put_bytes("landing", "sales/orders/o1.csv", b"order_id,amount\n1,2.50\n2,4.00\n")
    deps.storage.put_bytes("landing", "sales/orders/o2.csv", b"order_id,amount\n3,1.00\n")

    with function("handle_raw_file", env, tmp_path / "raw.log") as raw_url, \
            function("handle_pubsub", env, tmp_path / "pubsub.log") as pubsub_url:
        setup = subprocess.run([str(BIN / "caf"), "local", "pubsub-push", pubsub_url], env=env, cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=120)
        assert setup.returncode == 0, setup.stderr + setup.stdout
        printed = subprocess.run([str(BIN / "caf"), "local", "event", "landing/sales/orders/o1.csv",
                                  f"--url={raw_url}"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                                 timeout=120)
        assert printed.returncode == 0 and printed.stdout.startswith("curl "), printed.stderr
        curl = subprocess.run(["bash", "-c", printed.stdout.strip() + " -w '%{http_code}' -o /dev/null"],
                              capture_output=True, text=True, timeout=120)
        assert curl.stdout.strip() == "200", curl.stderr + (tmp_path / "raw.log").read_text()

        first = wait_for(lambda: loaded(deps, "sales/orders/o1.csv"), timeout=30, what="o1 to load")
        # Structured mode, written by hand as in docs/local-development.md: no generation.
        event = {"specversion": "1.0", "type": "google.cloud.storage.object.v1.finalized", "id": "local-2",
                 "source": "//storage.googleapis.com/projects/_/buckets/landing", "datacontenttype": "application/json",
                 "data": {"bucket": "landing", "name": "sales/orders/o2.csv"}}
        current = deps.storage.stat("landing", "sales/orders/o2.csv").generation
        reply = requests.post(raw_url, json=event, headers={"Content-Type": "application/cloudevents+json"},
                              timeout=60)
        assert reply.status_code == 200, reply.text
        second = wait_for(lambda: loaded(deps, "sales/orders/o2.csv"), timeout=30, what="o2 to load")
        for file in (first, second):
            try:
                done = wait_for(lambda f=file: finished(deps, f.batch_id), timeout=45, what="the DAG to finish")
            except AssertionError:
                pytest.fail("DAG did not finish; handle_pubsub log:\n"
                            + (tmp_path / "pubsub.log").read_text()[-3000:])
            assert {n: r["status"] for n, r in done.items()} == dict.fromkeys(
                ("clean", "left", "right", "join"), "SUCCESS")
    assert second.generation == current  # the generation the event left out: the object's at delivery


def loaded(deps, name: str):
    from database.models import File

    with deps.sessions() as session:
        row = session.query(File).filter(File.name == name).one_or_none()
        return row if row is not None and row.status == "SUCCESS" and row.batch_id else None


def finished(deps, batch_id: int) -> dict | None:
    from tests.engine.conftest import runs

    done = runs(deps, batch_id)
    return done if done and all(r["status"] != "PROCESSING" for r in done.values()) else None
