"""The worker process killed with SIGKILL mid-file, then the event redelivered after the lease.

A real second process ingests a large file against the same Postgres, DuckDB file and bucket
folder and is killed at a chosen point: while reading, inside the warehouse transaction (old rows
deleted, new ones inserted, not committed), and after the warehouse commit but before the
status update. Whatever the point, the warehouse holds one generation only, and the redelivery
after the lease ends with exactly one copy of the new generation.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from config.settings import PROJECT_ROOT
from tests.handlers.ingest_support import BUCKET, Ingest
from tests.reliability.conftest import duplicate_lineage, items_csv

NAME = "rel/items/big.csv"
BIG_ROWS = 20_000


def start_worker(ing: Ingest, info, pause_at: str, marker: Path, log: Path) -> subprocess.Popen:
    settings = ing.deps.settings
    spec = {"database_url": settings.database_url, "data_dir": str(settings.data_dir),
            "warehouse_url": settings.warehouse_url, "storage_url": settings.storage_url,
            "bucket": info.bucket, "name": info.name, "generation": info.generation, "size": info.size,
            "pause_at": pause_at, "marker": str(marker)}
    env = {**os.environ, "APP_ENV": "test", "PYTHONPATH": str(PROJECT_ROOT)}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "tests.reliability.worker", json.dumps(spec)],
                                cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for(marker: Path, worker: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if worker.poll() is not None:
            pytest.fail(f"worker exited with {worker.returncode} before the kill point:\n{log.read_text()}")
        if time.monotonic() > deadline:
            worker.kill()
            pytest.fail(f"worker did not reach the kill point:\n{log.read_text()}")
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("pause_at", ["reading", "warehouse_transaction", "after_warehouse_commit"])
def test_worker_killed_mid_file_then_redelivered_after_the_lease(ing: Ingest, tmp_path: Path, pause_at: str) -> None:
    first = ing.load(NAME, items_csv(1, 5))
    big = ing.put(NAME, items_csv(1001, BIG_ROWS))
    marker, log = tmp_path / "marker", tmp_path / "worker.log"
    worker = start_worker(ing, big, pause_at, marker, log)
    wait_for(marker, worker, log)
    assert ing.file(big).status == "PROCESSING"
    os.kill(worker.pid, signal.SIGKILL)
    assert worker.wait(timeout=30) == -signal.SIGKILL

    # What the crash left: one generation or the other in the warehouse, never both or a part.
    with_new = pause_at == "after_warehouse_commit"
    assert ing.count("rel.items") == (BIG_ROWS if with_new else 5)
    assert duplicate_lineage(ing, "rel.items") == []
    assert ing.file(big).status == "PROCESSING"

    assert ing.deliver(big) == 500  # within the lease: the dead worker might still be alive
    ing.deps.settings = ing.deps.settings.model_copy(
        update={"ingest": ing.deps.settings.ingest.model_copy(update={"lease_seconds": 1})})
    time.sleep(1.1)
    assert ing.deliver(big) == 200  # the lease ran out: taken over
    row = ing.file(big)
    assert (row.status, row.rows_loaded, row.attempts) == ("SUCCESS", BIG_ROWS, 2), row.error_message
    ids = ing.deps.warehouse.query("SELECT min(item_id), max(item_id), count(*), count(DISTINCT item_id), "
                                   "min(_file_id), max(_file_id) FROM rel.items").rows
    assert ids == [(1001, 1000 + BIG_ROWS, BIG_ROWS, BIG_ROWS, row.id, row.id)]
    assert duplicate_lineage(ing, "rel.items") == []
    assert ing.file(first).status == "SUCCESS"
    assert ing.exists(f"archive/{NAME}") and not ing.exists(NAME, BUCKET)
