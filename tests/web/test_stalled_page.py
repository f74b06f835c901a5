"""A file whose claim was given back and never redelivered is shown *stalled* on the page (overview,
files, the file, its batch) with its last transient error, and the sweep delivers it again."""

from __future__ import annotations

import re

from tests.handlers.ingest_support import ORDERS, ORDERS_CSV
from tests.locks import DuckDbLock
from tests.web.conftest import AUTH
from values.messages import OutgoingMessage


def page(client, path: str) -> str:
    response = client.get(path, headers=AUTH)
    assert response.status_code == 200, (path, response.status_code)
    return response.get_data(as_text=True)


def test_a_file_no_redelivery_retook_is_shown_stalled_and_the_sweep_loads_it(operator, ingest, deps, clock) -> None:
    from tests.engine.conftest import drain

    ingest.register(ORDERS)
    deps.warehouse.lock_wait_seconds = 0.1
    with DuckDbLock(deps.warehouse.path) as lock:
        info = ingest.put("sales/orders/day1.csv", ORDERS_CSV)
        assert ingest.deliver(info) == 500  # transient: the platform would redeliver... and does not
        file = ingest.file(info)
        assert file.status == "NEW" and "busy" in file.last_error
        fresh = page(operator, f"/files/{file.id}")
        assert 'id="last-error"' in fresh and "stalled" not in re.search(r"<h1>.*?</h1>", fresh).group(0)
        assert 'id="stalled"' not in page(operator, "/")  # released moments ago: a redelivery may come

        clock.advance(deps.settings.ingest.stall_seconds + 1)
        overview = page(operator, "/")
        stalled = re.search(r'<table id="stalled">.*?</table>', overview, re.S).group(0)
        assert f'data-stalled="{file.id}"' in stalled and "Could not set lock" in stalled
        assert "s-stalled" in re.search(r"<h1>.*?</h1>", page(operator, f"/files/{file.id}")).group(0)
        batch = page(operator, f"/batches/{file.batch_id}")
        assert "s-stalled" in re.search(r"<h1>.*?</h1>", batch).group(0) and 'id="stalled"' in batch
        assert re.search(rf'data-file="{file.id}".*?s-stalled', page(operator, "/files"), re.S)
        lock.release()

    deps.publisher.publish(OutgoingMessage("task", {"sweep": True}))  # Cloud Scheduler's sweep
    drain(deps)
    loaded = ingest.file(info)
    assert loaded.status == "SUCCESS" and deps.warehouse.count_rows("sales", "orders") == 5
    assert 'id="stalled"' not in page(operator, "/")
    batch = page(operator, f"/batches/{loaded.batch_id}")
    assert f'Batch {loaded.batch_id} <span class="status s-SUCCESS">' in batch
