"""The whole ingestion flow once with the GCS adapter, against gcp-storage-emulator (in-process)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from adapters.storage.gcs import GcsStorage
from tests.handlers.ingest_support import BUCKET, ORDERS, ORDERS_CSV, Ingest
from tests.wire.emulators import gcs_emulator


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    saved = dict(os.environ)
    try:
        with gcs_emulator(BUCKET) as url:
            yield url
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_full_flow_through_gcs(deps, tmp_path, emulator: str) -> None:
    from config.settings import load_settings

    settings = load_settings(storage_url="gs://", storage_emulator_host=emulator)
    from adapters.storage import build_storage

    storage = build_storage(settings)  # the STORAGE_URL / STORAGE_EMULATOR_HOST path
    assert isinstance(storage, GcsStorage)
    deps._parts["storage"] = storage
    ing = Ingest(deps, tmp_path)
    ing.register(ORDERS)

    info = storage.put_bytes(BUCKET, "sales/orders/gcs.csv", ORDERS_CSV.encode(), "text/csv")
    assert ing.deliver(info) == 200
    assert ing.deliver(info) == 200  # redelivered: no-op
    row = ing.file(info)
    assert (row.status, row.rows_loaded) == ("SUCCESS", 5), row.error_message
    assert row.staged_uri == f"gs://{BUCKET}/staging/sales/orders/{row.id}-{info.generation}.parquet"
    assert row.archived_uri == f"gs://{BUCKET}/archive/sales/orders/gcs.csv"
    names = {o.name for o in storage.list(BUCKET)}
    assert "sales/orders/gcs.csv" not in names
    assert {"archive/sales/orders/gcs.csv", f"staging/sales/orders/{row.id}-{info.generation}.parquet"} <= names
    assert ing.count("sales.orders") == 5
    assert [r[0] for r in ing.rows("sales.orders", "_source_row")] == [1, 2, 3, 4, 5]

    bad = storage.put_bytes(BUCKET, "sales/orders/bad.csv", b"Order ID,amount\n1,2\n", "text/csv")
    assert ing.deliver(bad) == 200
    failed = ing.file(bad)
    assert failed.status == "ERROR" and "missing column" in failed.error_message
    assert "failed/sales/orders/bad.csv" in {o.name for o in storage.list(BUCKET, "failed/")}
