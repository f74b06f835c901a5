"""The BigQuery tier (`make wire`): BigQueryWarehouse through the real google-cloud-bigquery client
against local-bigquery (DuckDB-backed BigQuery API), loading from gcp-storage-emulator.

Not part of `make test`: local-bigquery needs Python >= 3.13, so `run/scripts/wire` builds it in
its own venv under `.local/` and passes its launcher in CAF_LOCAL_BIGQUERY. Known emulator limits
are marked xfail with their reason. The summary lists the engine each test ran on.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.wire import emulators
from tests.wire.emulators import free_port, stop, wait_for_port

PROJECT = "caf-emu"
BUCKET = "caf-staging"
ENGINE = "local-bigquery 0.4.0 (DuckDB) + gcp-storage-emulator, google-cloud-bigquery over HTTP"
_ran_on: dict[str, str] = {}


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    with emulators.gcs_emulator(BUCKET) as url:
        yield url


@pytest.fixture(scope="session")
def bigquery_emulator(gcs_emulator: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """local-bigquery on a free port (its private HOME holds the DuckDB extensions); yields its URL."""
    launcher = os.environ["CAF_LOCAL_BIGQUERY"]
    home = os.environ["CAF_LOCAL_BIGQUERY_HOME"]
    data = tmp_path_factory.mktemp("bigquery")
    port, grpc_port = free_port(), free_port()
    env = {**os.environ, "HOME": home, "STORAGE_EMULATOR_HOST": gcs_emulator}
    with open(data / "emulator.log", "wb") as log:
        process = subprocess.Popen(
            [launcher, "--host", "127.0.0.1", "--port", str(port), "--grpc-port", str(grpc_port),
             "--project", PROJECT, "--data-dir", str(data / "db"), "serve"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, process, timeout=90, what="local-bigquery")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
        print(Path(data / "emulator.log").read_text()[-2000:] if process.returncode not in (0, -15) else "")


SKIP = pytest.mark.skipif(
    not os.environ.get("CAF_LOCAL_BIGQUERY"),
    reason=os.environ.get("CAF_LOCAL_BIGQUERY_SKIP") or "BigQuery emulator tier: run `make wire` "
    "(builds local-bigquery in a Python 3.13 venv under .local/)")


@pytest.fixture(autouse=True)
def engine_used(request: pytest.FixtureRequest) -> None:
    _ran_on[request.node.nodeid] = ENGINE


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _ran_on:
        return
    terminalreporter.section("engine each test ran on")
    for nodeid, engine in sorted(_ran_on.items()):
        terminalreporter.write_line(f"{nodeid}: {engine}")
