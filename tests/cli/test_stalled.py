"""Nothing stalls silently: `caf ingest` beside another process holding DuckDB's single-writer lock
retries with backoff, then exits 3 naming the file and its error; the file is shown *stalled* by
`caf status` with its last error, its batch is not left PROCESSING, and `caf backfill` loads it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from sqlalchemy import select

from database.models import File, TaskBatch
from tests.handlers.ingest_support import ORDERS, ORDERS_CSV
from tests.locks import DuckDbLock


def _quick_local_retries(deps) -> None:
    deps.settings.ingest.local_redeliveries = 3
    deps.settings.ingest.local_backoff_seconds = 0.01
    deps.warehouse.lock_wait_seconds = 0.1  # each delivery gives up on the lock quickly


def _row(deps) -> tuple[File, TaskBatch]:
    with deps.sessions() as session:
        file = session.scalars(select(File).order_by(File.id)).first()
        assert file is not None
        return file, session.get(TaskBatch, file.batch_id)


def test_ingest_beside_a_lock_holder_exits_3_and_the_file_is_stalled_until_backfill(caf, deps, tmp_path: Path) -> None:
    _quick_local_retries(deps)
    folder = tmp_path / "defs"
    folder.mkdir()
    (folder / "orders.yaml").write_text(textwrap.dedent(ORDERS))
    assert caf("registry", "sync", str(folder)).code == 0
    day1 = tmp_path / "day1.csv"
    day1.write_text(ORDERS_CSV)

    with DuckDbLock(deps.warehouse.path):
        result = caf("ingest", str(day1), "--prefix", "sales/orders/", "--json")
        assert result.code == 3, result.text
        [outcome] = json.loads(result.out)["files"]
        assert outcome["object"] == "sales/orders/day1.csv" and outcome["status"] == "NEW"
        assert "not loaded after 3 attempt(s)" in outcome["message"] and "busy" in outcome["message"]
        assert "caf backfill landing/sales/orders/" in outcome["message"]
        shown = caf("ingest", str(day1), "--prefix", "sales/orders/")  # the human output names it too
        assert shown.code == 3 and "day1.csv" in shown.text and "not loaded" in shown.text

        file, batch = _row(deps)
        assert file.status == "NEW" and file.attempts == 3 and "busy" in (file.last_error or "")
        assert batch.status != "PROCESSING" and batch.summary["stalled"] == file.id

        status = caf("status", "--json")
        assert status.code == 1  # something needs attention
        data = json.loads(status.out)
        assert data["stalled"] == {"files": 2, "batches": 2}  # both ingests of day1.csv
        assert {f["id"] for f in data["stalled_files"]} >= {file.id}
        assert all("busy" in f["last_error"] for f in data["stalled_files"])
        assert data["recent_batches"][-1]["stalled"] is True
        assert "stalled" in caf("status").text

    backfill = caf("backfill", "landing/sales/", "--json")
    assert backfill.code == 0, backfill.text
    assert {f["status"] for f in json.loads(backfill.out)["files"]} == {"SUCCESS"}
    assert deps.warehouse.count_rows("sales", "orders") == 5
    with deps.sessions() as session:
        batches = session.scalars(select(TaskBatch)).all()
    assert {b.status for b in batches} == {"SUCCESS"}
    assert not any("stalled" in b.summary for b in batches)
    after = caf("status", "--json")
    assert after.code == 0 and json.loads(after.out)["stalled"] == {"files": 0, "batches": 0}
