"""Faults during ingestion: each ends, after redelivery, with exactly one copy of every row.

The already covered cases (a crash between load and status update simulated in-process, a
TransientError from the warehouse) live in tests/handlers/test_raw_file.py; here the faults are
the real ones: the metadata connection killed by the server, the warehouse failing inside its
transaction, storage streams dying halfway, the publisher down after the load.
(The worker process killed with SIGKILL is in test_sigkill.py.)
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text

from database.models import Outbox, TaskBatch
from errors import TransientError
from tests.handlers.ingest_support import Ingest
from tests.reliability.conftest import duplicate_lineage, items_csv

NAME = "rel/items/day.csv"


def loaded_ids(ing: Ingest) -> list[int]:
    return [r[0] for r in ing.rows("rel.items", "item_id")] if ing.count("rel.items") else []


@pytest.fixture
def two_generations(ing: Ingest) -> tuple[Any, Any]:
    """Generation 1 of NAME loaded (ids 1-5); generation 2 (ids 101-103) put, its event not yet sent."""
    first = ing.load(NAME, items_csv(1, 5))
    assert first.status == "SUCCESS"
    second = ing.put(NAME, items_csv(101, 3))
    return first, second


def assert_exactly_generation_two(ing: Ingest, second: Any) -> None:
    row = ing.file(second)
    assert (row.status, row.rows_loaded) == ("SUCCESS", 3), row.error_message
    assert ing.rows("rel.items", "item_id, _file_id") == [(101, row.id), (102, row.id), (103, row.id)]
    assert duplicate_lineage(ing, "rel.items") == []
    announced = [m.data["file_id"] for m in ing.deps.publisher.published if m.event_type == "file_loaded"]
    assert announced.count(row.id) == 1
    assert ing.exists(f"archive/{NAME}")  # the raw object was moved despite the fault


# -- metadata database connection dropped ---------------------------------------------------------

@pytest.fixture
def admin(database_url: str) -> Iterator[Any]:
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def terminate_backend_of(session: Any, admin: Any) -> None:
    """Kill the server process behind the session's connection, as a failover or restart would."""
    pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with admin.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid}).scalar_one()


def lose_commit_acknowledgement(session: Any, admin: Any) -> None:
    """The COMMIT reaches the server and commits, but the connection dies before the client hears it."""
    dbapi = session.connection().connection.dbapi_connection
    real_commit = dbapi.commit

    def commit_then_drop() -> None:
        real_commit()
        import pg8000

        dbapi.commit = real_commit
        raise pg8000.InterfaceError("network error")

    dbapi.commit = commit_then_drop


FAULT_POINTS: dict[str, tuple[str, str, Callable[[Any, Any], None]]] = {
    # name: (module, function wrapped, what happens to the session's connection before it runs)
    "while_attaching_the_table": ("database.files", "attach", terminate_backend_of),
    "after_the_warehouse_load": ("database.files", "finish", terminate_backend_of),
    "while_writing_the_outbox": ("database.outbox", "enqueue", terminate_backend_of),
    "commit_acknowledgement_lost": ("database.outbox", "enqueue", lose_commit_acknowledgement),
}


@pytest.mark.parametrize("point", sorted(FAULT_POINTS))
def test_metadata_connection_dropped_mid_transaction(ing: Ingest, two_generations, admin, monkeypatch,
                                                     point: str) -> None:
    import importlib

    module_name, function, fault = FAULT_POINTS[point]
    module = importlib.import_module(module_name)
    real = getattr(module, function)
    fired = []

    def faulty(*, session: Any, **kwargs: Any) -> Any:
        if not fired:
            fired.append(point)
            fault(session, admin)
        return real(session=session, **kwargs)

    monkeypatch.setattr(module, function, faulty)
    _, second = two_generations
    status = ing.deliver(second)
    assert fired
    if point == "commit_acknowledgement_lost":
        # The status did commit: nothing to redo, but the answer was a 500, so the platform redelivers.
        assert status == 500 and ing.file(second).status == "SUCCESS"
    else:
        assert status == 500
        assert ing.file(second).status == "NEW"  # rolled back; the claim given back on a fresh connection
    assert ing.count("rel.items") in (3, 5)  # either generation, never both, never a mix
    assert duplicate_lineage(ing, "rel.items") == []
    assert ing.deliver(second) == 200
    assert_exactly_generation_two(ing, second)


# -- the warehouse failing inside its own transaction ----------------------------------------------

class Unavailable(Exception):
    """A vendor error that no adapter translated, e.g. an HTTP 503 surfacing as a bare exception."""


@pytest.mark.parametrize("error", ["duckdb_io_error", "untranslated_503"])
def test_warehouse_failing_during_the_load_keeps_the_previous_rows_then_loads_once(
        ing: Ingest, two_generations, monkeypatch, error: str) -> None:
    import duckdb

    from adapters.warehouse.duckdb import DuckDbWarehouse

    real = DuckDbWarehouse._delete_previous
    failures = [0]

    def delete_then_fail(self, conn, *args):
        real(self, conn, *args)  # the earlier generation's rows are already deleted in the transaction
        failures[0] += 1
        if error == "duckdb_io_error":
            raise duckdb.IOException("IO Error: Could not write file: No space left on device")
        raise Unavailable("503 Service Unavailable")

    monkeypatch.setattr(DuckDbWarehouse, "_delete_previous", delete_then_fail)
    _, second = two_generations
    assert ing.deliver(second) == 500
    assert ing.file(second).status == "NEW"
    assert loaded_ids(ing) == [1, 2, 3, 4, 5]  # rolled back: the earlier generation is intact
    monkeypatch.setattr(DuckDbWarehouse, "_delete_previous", real)
    assert ing.deliver(second) == 200
    assert failures == [1]
    assert_exactly_generation_two(ing, second)


def test_unexplained_warehouse_failures_end_in_error_with_nothing_partial(ing: Ingest, two_generations,
                                                                         monkeypatch) -> None:
    from adapters.warehouse.duckdb import DuckDbWarehouse

    real = DuckDbWarehouse._delete_previous

    def delete_then_fail(self, conn, *args):
        real(self, conn, *args)
        raise Unavailable("503 Service Unavailable")

    monkeypatch.setattr(DuckDbWarehouse, "_delete_previous", delete_then_fail)
    _, second = two_generations
    assert [ing.deliver(second) for _ in range(3)] == [500, 500, 200]  # the third time it is recorded
    row = ing.file(second)
    assert row.status == "ERROR" and "503 Service Unavailable" in row.error_message
    assert row.attempts == 3
    assert loaded_ids(ing) == [1, 2, 3, 4, 5]
    assert ing.deliver(second) == 200 and ing.file(second).attempts == 3  # final: not retried again


# -- storage read failing halfway ---------------------------------------------------------------------

class DyingStream(io.RawIOBase):
    """A download that breaks after `limit` bytes, as a reset connection does."""

    def __init__(self, inner: Any, limit: int, error: BaseException) -> None:
        self._inner, self._left, self._error = inner, limit, error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            raise self._error
        data = self._inner.read(min(len(buffer), self._left))
        self._left -= len(data)
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._inner.close()
        super().close()


def big_items_parquet(rows: int) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(pa.table({"item_id": list(range(1, rows + 1)), "qty": [1] * rows,
                             "label": [f"label {i}" for i in range(rows)]}), out, row_group_size=5000)
    return out.getvalue()


STORAGE_FAILURES = {
    # name: (object name, format, payload, error raised halfway)
    "csv_connection_reset": ("rel/items/big.csv", "csv", items_csv(1, 40_000).encode(),
                             ConnectionResetError(104, "Connection reset by peer")),
    "gzip_csv_timeout": ("rel/items/big.csv.gz", "csv", None, TimeoutError("The read operation timed out")),
    "parquet_bare_oserror": ("rel/parquet/big.parquet", "parquet", None, OSError(5, "Input/output error")),
}


@pytest.mark.parametrize("case", sorted(STORAGE_FAILURES))
def test_storage_read_failing_halfway_is_transient_and_redelivery_loads_once(ing: Ingest, monkeypatch,
                                                                            case: str) -> None:
    import gzip

    from adapters.storage.local import LocalStorage

    name, fmt, payload, error = STORAGE_FAILURES[case]
    if fmt == "parquet":
        ing.register(ITEMS_PARQUET, "parquet.yaml")
        payload = big_items_parquet(40_000)
    if name.endswith(".gz"):
        payload = gzip.compress(items_csv(1, 40_000).encode(), compresslevel=1)
    info = ing.put(name, payload)
    real_open = LocalStorage.open_read
    breaks = [0]

    def open_dying(self, bucket, object_name, generation=None):
        stream = real_open(self, bucket, object_name, generation)
        if object_name != name or breaks[0] >= 4:
            return stream
        breaks[0] += 1
        return io.BufferedReader(DyingStream(stream, len(payload) // 2, error))

    monkeypatch.setattr(LocalStorage, "open_read", open_dying)
    # More failures in a row than the unexpected-failure limit: a network fault is never the file's fault.
    for attempt in range(1, 5):
        assert ing.deliver(info) == 500, attempt
        row = ing.file(info)
        assert (row.status, row.attempts) == ("NEW", attempt)
    assert ing.count("rel.items") + ing.count("rel.parquet_items") == 0
    assert ing.deliver(info) == 200
    row = ing.file(info)
    assert (row.status, row.rows_loaded, row.attempts) == ("SUCCESS", 40_000, 5), row.error_message
    table = "rel.parquet_items" if fmt == "parquet" else "rel.items"
    assert ing.count(table) == 40_000 and duplicate_lineage(ing, table) == []


ITEMS_PARQUET = """\
    dataset: rel
    table: parquet_items
    source: "rel/parquet/*.parquet"
    format: parquet
    schema:
      - {name: item_id, type: INT64, mode: REQUIRED}
      - {name: qty, type: INT64}
      - {name: label, type: STRING}
"""


# -- the publisher failing after the load -------------------------------------------------------------

class FlakyPublisher:
    """The local bus behind a switch: while `down`, every publish fails as a Pub/Sub outage would."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        self.down = True
        self.refused = 0

    def publish(self, message: Any) -> str:
        if self.down:
            self.refused += 1
            raise TransientError("Pub/Sub publish to projects/p/topics/caf-events failed: ServiceUnavailable")
        return str(self.bus.publish(message))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bus, name)


@pytest.fixture
def flaky(ing: Ingest) -> Iterator[FlakyPublisher]:
    from app.deps import Deps, set_deps
    from tests.engine import callables
    from tests.engine.conftest import define, py

    deps = ing.deps
    publisher = FlakyPublisher(deps.publisher)
    ing.deps = Deps(deps.settings, clock=deps.clock, engine=deps.engine, sessions=deps.sessions,
                    publisher=publisher, storage=deps.storage, warehouse=deps.warehouse)
    previous = set_deps(ing.deps)
    callables.reset()
    define(ing.deps, py("items_clean", on_file=["rel.items"]))  # a task listening to the loaded table
    yield publisher
    callables.reset()
    set_deps(previous)


def pending_outbox(ing: Ingest) -> list[Any]:
    with ing.deps.sessions() as session:
        return list(session.scalars(select(Outbox).where(Outbox.published_at.is_(None))))


def task_runs(ing: Ingest) -> int:
    from tests.engine import callables

    return callables.calls("items_clean")


def test_publish_failure_after_the_load_is_published_by_the_redelivery(ing: Ingest, flaky: FlakyPublisher) -> None:
    from tests.engine.conftest import drain

    info = ing.put(NAME, items_csv(1, 5))
    assert ing.deliver(info) == 500  # loaded and recorded, but its event is not out: ask for a redelivery
    row = ing.file(info)
    assert (row.status, row.rows_loaded) == ("SUCCESS", 5) and flaky.refused == 1
    [pending] = pending_outbox(ing)
    assert (pending.event_type, pending.payload["file_id"]) == ("file_loaded", row.id)
    flaky.down = False
    assert ing.deliver(info) == 200
    assert pending_outbox(ing) == []
    drain(ing.deps)
    assert task_runs(ing) == 1  # the file_loaded event reached the task engine, once
    assert ing.count("rel.items") == 5 and ing.exists(f"archive/{NAME}")
    with ing.deps.sessions() as session:
        assert session.get(TaskBatch, row.batch_id).status == "SUCCESS"


def test_publisher_outage_outlasting_redeliveries_is_drained_by_the_sweep(ing: Ingest, flaky: FlakyPublisher) -> None:
    from tests.conftest import make_client
    from tests.engine.conftest import drain
    from tests.handlers.test_main import post, pubsub_event

    info = ing.put(NAME, items_csv(1, 5))
    assert ing.deliver(info) == 500
    assert ing.deliver(info) == 200  # the redelivery cannot publish either; it acknowledges, the row stays
    assert len(pending_outbox(ing)) == 1 and flaky.refused == 2
    pubsub = make_client("handle_pubsub")
    sweep = pubsub_event(b"{}", {"event_type": "sweep"})
    assert post(pubsub, sweep, mode="binary").status_code == 500  # still down: the sweep is retried later
    flaky.down = False
    assert post(pubsub, sweep, mode="binary").status_code == 200
    assert pending_outbox(ing) == []
    drain(ing.deps)
    assert task_runs(ing) == 1
    assert post(pubsub, sweep, mode="binary").status_code == 200  # nothing left: publishes nothing again
    drain(ing.deps)
    assert task_runs(ing) == 1 and ing.count("rel.items") == 5


def test_event_published_twice_when_its_mark_is_lost_starts_the_tasks_once(ing: Ingest,
                                                                          flaky: FlakyPublisher) -> None:
    from database import outbox
    from tests.engine.conftest import drain

    flaky.down = False
    info = ing.put(NAME, items_csv(1, 5))
    assert ing.deliver(info) == 200
    with ing.deps.engine.begin() as conn:  # published, but the commit of published_at was lost
        conn.execute(text("UPDATE outbox SET published_at = NULL WHERE event_type = 'file_loaded'"))
    assert outbox.sweep(session_factory=ing.deps.sessions, publisher=ing.deps.publisher) == 1
    loaded = [m for m in flaky.bus.published if m.event_type == "file_loaded"]
    assert len(loaded) == 2  # at-least-once: the consumer sees it twice
    drain(ing.deps)
    assert task_runs(ing) == 1  # and its effect happens once
