"""`caf purge --older-than`: dry run by default, `--yes` deletes; what a running batch or lineage needs stays."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer
from sqlalchemy import text
from typer.testing import CliRunner

from cli import ops, status
from tests.handlers.ingest_support import ORDERS, ORDERS_CSV

app = typer.Typer()
app.command()(status.status)
ops.register(app)
runner = CliRunner()
ONE_BAD_ROW = "Order ID,amount,order_date,note\n1,1.00,2026-01-01,a\n2,oops,2026-01-01,b\n"


def caf(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["purge", *args], catch_exceptions=False)
    return result.exit_code, result.output


def local(uri: str | None) -> Path:
    assert uri and uri.startswith("file://")
    return Path(uri.removeprefix("file://"))


def age_everything(deps, days: int) -> None:
    with deps.engine.begin() as conn:
        shift = {"d": f"{days} days"}
        conn.execute(text("UPDATE files SET created_at = created_at - CAST(:d AS interval),"
                          " updated_at = updated_at - CAST(:d AS interval),"
                          " finished_at = finished_at - CAST(:d AS interval)"), shift)
        conn.execute(text("UPDATE task_batch SET started_at = started_at - CAST(:d AS interval),"
                          " finished_at = finished_at - CAST(:d AS interval)"), shift)
        conn.execute(text("UPDATE outbox SET created_at = created_at - CAST(:d AS interval),"
                          " published_at = published_at - CAST(:d AS interval)"), shift)


def rows(deps, table: str) -> int:
    with deps.engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_purge_dry_run_then_yes(deps, ingest) -> None:
    ingest.register(ORDERS)
    old_ok = ingest.load("sales/orders/old.csv", ONE_BAD_ROW)
    broken = ingest.load("sales/orders/broken.csv", "Order ID,amount\n1,2\n")
    running = ingest.load("sales/orders/running.csv", ORDERS_CSV)
    newest = ingest.load("sales/orders/new.csv", ORDERS_CSV)
    while deps.publisher.drain():  # file_loaded events close the file batches (no task listens)
        pass
    assert (old_ok.status, broken.status, running.status, newest.status) == ("SUCCESS", "ERROR", "SUCCESS", "SUCCESS")
    with deps.engine.begin() as conn:  # a batch still running references `running`
        conn.execute(text("UPDATE task_batch SET status = 'PROCESSING', finished_at = NULL WHERE id = :b"),
                     {"b": running.batch_id})
    old_ok, running, newest = (ingest.file(_info(f)) for f in (old_ok, running, newest))  # as moved
    age_everything(deps, 100)
    orphan = deps.storage.put_bytes("landing", "staging/sales/orders/orphan.parquet", b"PAR1")
    recent_orphan = deps.storage.put_bytes("landing", "quarantine/recent.ndjson", b"{}")
    old_time = time.time() - 100 * 86400
    os.utime(local(deps.storage.uri("landing", orphan.name)), (old_time, old_time))

    doomed = [local(old_ok.archived_uri), local(old_ok.staged_uri), local(old_ok.quarantine_uri),
              local(deps.storage.uri("landing", "failed/sales/orders/broken.csv")),
              local(deps.storage.uri("landing", orphan.name))]
    kept = [local(running.archived_uri), local(running.staged_uri), local(newest.archived_uri),
            local(newest.staged_uri), local(deps.storage.uri("landing", recent_orphan.name))]
    assert all(p.exists() for p in doomed + kept)
    files_before, batches_before = rows(deps, "files"), rows(deps, "task_batch")

    code, out = caf("--older-than", "90d")
    assert code == 0 and "would delete" in out and "dry run" in out
    assert "kept: 1 old file(s) referenced by a PROCESSING batch" in out
    assert "orphan.parquet" in out and "unreferenced, old" in out
    assert all(p.exists() for p in doomed + kept)
    assert (rows(deps, "files"), rows(deps, "task_batch")) == (files_before, batches_before)

    code, out = caf("--older-than", "200d", "--yes")
    assert code == 0 and rows(deps, "files") == files_before  # nothing is that old

    code, out = caf("--older-than", "90d", "--yes")
    assert code == 0 and "deleted 2 file row(s)" in out
    assert not any(p.exists() for p in doomed)
    assert all(p.exists() for p in kept)
    with deps.engine.connect() as conn:
        left = {r[0] for r in conn.execute(text("SELECT name FROM files"))}
        batches = {r[0] for r in conn.execute(text("SELECT id FROM task_batch"))}
    assert left == {"sales/orders/running.csv", "sales/orders/new.csv"}
    assert batches == {running.batch_id, newest.batch_id}
    assert rows(deps, "outbox") == 0  # published events older than the window


def test_purge_rejects_a_bad_age(deps) -> None:
    result = runner.invoke(app, ["purge", "--older-than", "soon"])
    assert result.exit_code == 2 and "90d" in result.output


def _info(file):
    from adapters.storage.base import ObjectInfo

    return ObjectInfo(bucket=file.bucket, name=file.name, generation=file.generation, size=0)


def test_scheduled_purge_message_deletes_what_caf_purge_yes_would(deps, ingest) -> None:
    """Cloud Scheduler's `purge` message (deploy.purge.schedule) through handle_pubsub."""
    from values.messages import OutgoingMessage

    ingest.register(ORDERS)
    old = ingest.load("sales/orders/old.csv", ORDERS_CSV)
    newest = ingest.load("sales/orders/new.csv", ORDERS_CSV)
    while deps.publisher.drain():
        pass
    age_everything(deps, 100)
    deps.publisher.publish(OutgoingMessage("purge", {"older_than": "oops"}))  # malformed: acknowledged
    deps.publisher.publish(OutgoingMessage("purge", {"older_than": "90d"}))
    while deps.publisher.drain():
        pass
    with deps.engine.connect() as conn:
        left = {r[0] for r in conn.execute(text("SELECT name FROM files"))}
    assert left == {newest.name} and old.name not in left  # the newest file of a table is always kept
    assert not deps.publisher.dead_letters
