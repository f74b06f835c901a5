"""Raw-file ingestion through the real handle_raw_file target, Postgres and DuckDB."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from sqlalchemy import text

from tests.handlers.ingest_support import BUCKET, ORDERS, ORDERS_CSV, Ingest


@pytest.fixture
def ing(deps, tmp_path) -> Ingest:
    env = Ingest(deps, tmp_path)
    env.register(ORDERS)
    return env


def test_csv_loads_with_lineage_and_is_archived(ing: Ingest) -> None:
    info = ing.put("sales/orders/day1.csv", ORDERS_CSV)
    assert ing.deliver(info) == 200
    row = ing.file(info)
    assert (row.status, row.rows_read, row.rows_loaded, row.rows_rejected) == ("SUCCESS", 5, 5, 0)
    assert row.batch_id is not None and row.finished_at is not None
    data = ing.rows("sales.orders", "order_id, amount, note, _file_id, _batch_id, _source_row")
    assert [r[0] for r in data] == [1, 2, 3, 4, 5]
    assert data[1][2] == "comma, inside"
    assert data[2][2] == 'say "hi"'
    assert data[3][2] == "line one\r\nline two"
    assert data[4][1] is None and data[4][2] == ""  # unquoted empty → NULL; quoted "" → empty string
    assert data[0][1] == Decimal("10.5")
    assert {(r[3], r[4]) for r in data} == {(row.id, row.batch_id)}
    assert [r[5] for r in data] == [1, 2, 3, 4, 5]
    assert not ing.exists("sales/orders/day1.csv")
    assert ing.exists("archive/sales/orders/day1.csv")
    assert row.staged_uri and ing.exists(row.staged_uri.split(f"/{BUCKET}/", 1)[1])
    loaded = [m for m in ing.deps.publisher.published if m.event_type == "file_loaded"]
    assert [m.data["file_id"] for m in loaded] == [row.id]
    assert loaded[0].data["dataset"] == "sales" and loaded[0].data["table"] == "orders"


def test_sequential_redelivery_loads_once(ing: Ingest) -> None:
    info = ing.put("sales/orders/day1.csv", ORDERS_CSV)
    assert [ing.deliver(info, event_id=f"e{i}") for i in range(5)] == [200] * 5
    assert ing.count("sales.orders") == 5
    assert ing.file(info).attempts == 1


def test_concurrent_redelivery_loads_once(ing: Ingest) -> None:
    info = ing.put("sales/orders/day1.csv", ORDERS_CSV)
    codes: list[list[int]] = []

    def worker(n: int) -> None:
        from tests.conftest import make_client

        client_ing = Ingest(ing.deps, ing.tmp)
        client_ing.client = make_client("handle_raw_file")
        seen = []
        for _ in range(50):  # like the platform: redeliver a 500 until acknowledged
            seen.append(client_ing.deliver(info, event_id=f"c{n}"))
            if seen[-1] == 200:
                break
            threading.Event().wait(0.05)
        codes.append(seen)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(seen[-1] == 200 for seen in codes)
    assert ing.count("sales.orders") == 5
    assert no_duplicate_lineage(ing)


def no_duplicate_lineage(ing: Ingest, table: str = "sales.orders") -> bool:
    dupes = ing.deps.warehouse.query(
        f"SELECT _file_id, _source_row FROM {table} GROUP BY ALL HAVING count(*) > 1").rows
    return dupes == []


def test_new_generation_replaces_the_objects_earlier_rows(ing: Ingest) -> None:
    first = ing.load("sales/orders/day1.csv", ORDERS_CSV)
    second = ing.load("sales/orders/day1.csv", "Order ID,amount,order_date,note\n9,1,2026-11-05,x\n")
    assert first.generation != second.generation
    assert ing.rows("sales.orders", "order_id, _file_id") == [(9, second.id)]
    other = ing.load("sales/orders/day2.csv", "Order ID,amount,order_date,note\n10,1,2026-11-05,y\n")
    assert ing.count("sales.orders") == 2 and other.status == "SUCCESS"


def test_older_generation_delivered_late_is_superseded(ing: Ingest) -> None:
    old = ing.put("sales/orders/day1.csv", "Order ID,amount,order_date,note\n1,1,2026-11-01,old\n")
    old_copy = ing.deps.storage.local_path(BUCKET, "sales/orders/day1.csv").read_bytes()
    new = ing.load("sales/orders/day1.csv", "Order ID,amount,order_date,note\n2,2,2026-11-01,new\n")
    assert old_copy and new.status == "SUCCESS"
    assert ing.deliver(old) == 200  # the old version's event arrives after the new one loaded
    late = ing.file(old)
    assert late.status == "SUCCESS" and late.rows_loaded is None and "superseded" in (late.detail or "")
    assert ing.rows("sales.orders", "order_id") == [(2,)]


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the handler catches it."""


def test_crash_between_load_and_status_update_leaves_one_copy(ing: Ingest, monkeypatch) -> None:
    from adapters.warehouse.duckdb import DuckDbWarehouse

    real_load = DuckDbWarehouse.load

    def load_then_die(self, request):
        real_load(self, request)
        raise Crash

    info = ing.put("sales/orders/day1.csv", ORDERS_CSV)
    monkeypatch.setattr(DuckDbWarehouse, "load", load_then_die)
    with pytest.raises(Crash):
        ing.deliver(info)
    monkeypatch.setattr(DuckDbWarehouse, "load", real_load)
    assert ing.file(info).status == "PROCESSING"
    assert ing.deliver(info) == 500  # within the lease: another instance may still be on it
    with ing.deps.engine.begin() as conn:  # the lease runs out
        conn.execute(text("UPDATE files SET claimed_at = now() - interval '1 hour'"))
    assert ing.deliver(info) == 200
    row = ing.file(info)
    assert (row.status, row.rows_loaded, row.attempts) == ("SUCCESS", 5, 2)
    assert ing.count("sales.orders") == 5


def test_transient_warehouse_failure_releases_the_claim_for_redelivery(ing: Ingest, monkeypatch) -> None:
    from adapters.warehouse.duckdb import DuckDbWarehouse
    from errors import TransientError

    def unavailable(self, request):
        raise TransientError("warehouse unavailable (503)")

    info = ing.put("sales/orders/day1.csv", ORDERS_CSV)
    monkeypatch.setattr(DuckDbWarehouse, "load", unavailable)
    assert ing.deliver(info) == 500
    assert ing.file(info).status == "NEW"
    monkeypatch.undo()
    assert ing.deliver(info) == 200
    assert ing.count("sales.orders") == 5


def test_bad_rows_within_limit_are_quarantined(ing: Ingest) -> None:
    csv = ("Order ID,amount,order_date,note\n1,1.5,2026-11-01,a\n2,abc,2026-11-01,b\n"
           "3,2,2026-13-45,c\n4,2,2026-11-01,d\n")
    info = ing.put("sales/orders/bad.csv", csv)
    assert ing.deliver(info) == 200
    row = ing.file(info)
    assert (row.status, row.rows_read, row.rows_loaded, row.rows_rejected) == ("SUCCESS", 4, 2, 2)
    assert ing.rows("sales.orders", "order_id, _source_row") == [(1, 1), (4, 4)]
    rejected = ing.quarantine(info)
    assert [r["row"] for r in rejected] == [2, 3]
    assert "amount" in rejected[0]["reason"] and "abc" in str(rejected[0]["raw"])
    assert "order_date" in rejected[1]["reason"]
    assert row.quarantine_uri and row.quarantine_uri.endswith(".rejected.ndjson")


def test_too_many_bad_rows_fail_the_file_and_load_nothing(ing: Ingest) -> None:
    csv = "Order ID,amount,order_date,note\n" + "".join(f"{i},x{i},2026-11-01,n\n" for i in range(1, 5))
    info = ing.put("sales/orders/worse.csv", csv)
    assert ing.deliver(info) == 200
    row = ing.file(info)
    assert row.status == "ERROR" and "max_bad_records=2" in row.error_message
    assert "row 1" in row.error_message
    assert ing.count("sales.orders") == 0
    assert ing.exists("failed/sales/orders/worse.csv")
    assert len(ing.quarantine(info)) >= 3


def test_duplicate_keys_within_a_file_are_rejected_rows(ing: Ingest) -> None:
    csv = "Order ID,amount,order_date,note\n1,1,2026-11-01,a\n2,1,2026-11-01,b\n1,9,2026-11-01,again\n"
    row = ing.load("sales/orders/dupes.csv", csv)
    assert (row.status, row.rows_loaded, row.rows_rejected) == ("SUCCESS", 2, 1)
    assert ing.rows("sales.orders", "order_id, note") == [(1, "a"), (2, "b")]
    [rejected] = ing.quarantine(_info(row))
    assert rejected["row"] == 3 and "duplicate key" in rejected["reason"] and "row 1" in rejected["reason"]


def _info(row):
    from adapters.storage.base import ObjectInfo

    return ObjectInfo(bucket=row.bucket, name=row.name, generation=row.generation, size=0)


def test_missing_and_unexpected_columns_are_named(ing: Ingest) -> None:
    row = ing.load("sales/orders/cols.csv", "Order ID,amt,order_date,note\n1,2,2026-11-01,a\n")
    assert row.status == "ERROR"
    assert "amount" in row.error_message and "amt" in row.error_message
    assert ing.count("sales.orders") == 0


def test_new_column_added_when_allowed(deps, tmp_path) -> None:
    ing = Ingest(deps, tmp_path)
    ing.register(ORDERS.replace("max_bad_records: 2", "max_bad_records: 0\n    allow_new_columns: true"))
    row = ing.load("sales/orders/new.csv", "Order ID,amount,order_date,note,channel\n1,2,2026-11-01,a,web\n")
    assert row.status == "SUCCESS", row.error_message
    assert deps.warehouse.table_columns("sales", "orders")["channel"] == "STRING"
    assert ing.rows("sales.orders", "order_id, channel") == [(1, "web")]


def test_registry_type_change_is_rejected_clearly(ing: Ingest) -> None:
    ing.load("sales/orders/a.csv", ORDERS_CSV)
    ing.register(ORDERS.replace("{name: amount, type: NUMERIC}", "{name: amount, type: STRING}"))
    row = ing.load("sales/orders/b.csv", "Order ID,amount,order_date,note\n7,1,2026-11-01,a\n")
    assert row.status == "ERROR"
    assert "amount" in row.error_message and "NUMERIC" in row.error_message and "STRING" in row.error_message
    assert ing.count("sales.orders") == 5


def test_per_tenant_datasets_when_configured(deps, tmp_path) -> None:
    ing = Ingest(deps, tmp_path)
    ing.register(ORDERS + "    tenant: acme\n")
    deps.settings.jobs.per_tenant_datasets = True
    row = ing.load("acme/sales/orders/acme.csv", ORDERS_CSV)
    assert row.status == "SUCCESS", row.error_message
    assert row.tenant_id == "acme"
    assert ing.count("acme_sales.orders") == 5
    assert deps.warehouse.table_columns("sales", "orders") is None


def test_objects_only_match_their_own_tenants_tables(deps, tmp_path) -> None:
    ing = Ingest(deps, tmp_path)
    ing.register(ORDERS, "default.yaml")
    ing.register(ORDERS + "    tenant: acme\n", "acme.yaml")  # the same name: acme's loads into acme_sales
    default_row = ing.load("sales/orders/d.csv", ORDERS_CSV)
    acme_row = ing.load("acme/sales/orders/a.csv", ORDERS_CSV.replace("plain", "acme"))
    assert (default_row.status, default_row.tenant_id) == ("SUCCESS", "default")
    assert (acme_row.status, acme_row.tenant_id) == ("SUCCESS", "acme")
    assert ing.count("sales.orders") == 5 and ing.count("acme_sales.orders") == 5
    assert ("acme",) in ing.rows("acme_sales.orders", "note") and ("acme",) not in ing.rows("sales.orders", "note")
    # A path naming another tenant that has no such table does not fall back to the default's tables.
    stray = ing.load("acme/crm/orders/x.csv", ORDERS_CSV)
    assert stray.status == "ERROR" and "no table registered" in stray.error_message


def test_only_an_objects_first_generation_may_load_as_a_plain_append(ing: Ingest, monkeypatch) -> None:
    """`first_load` (BigQuery: one load job, no delete) only when nothing of the object can be in the
    table: never for a later generation, whose predecessor's rows must go, nor for a reprocess."""
    from adapters.warehouse.duckdb import DuckDbWarehouse
    from pipeline import ingest

    seen: list[tuple[int, bool]] = []
    real_load = DuckDbWarehouse.load

    def load(self, request):
        seen.append((request.file_id, request.first_load))
        return real_load(self, request)

    monkeypatch.setattr(DuckDbWarehouse, "load", load)
    first = ing.load("sales/orders/day1.csv", ORDERS_CSV)
    second = ing.load("sales/orders/day1.csv", "Order ID,amount,order_date,note\n9,1,2026-11-05,x\n")
    other = ing.load("sales/orders/day2.csv", "Order ID,amount,order_date,note\n10,1,2026-11-05,y\n")
    ingest.reprocess(other.id, ing.deps, now=ing.deps.clock())
    assert seen == [(first.id, True), (second.id, False), (other.id, True), (other.id, False)]
    assert ing.count("sales.orders") == 2
