"""The operator page as an operator reads it: retried errors shown resolved, rejected rows as a page
with a way back, pages that follow a running batch, and an all-rejected file shown as failed."""

from __future__ import annotations

import re

from tests.handlers.ingest_support import ORDERS, ORDERS_CSV
from tests.web.conftest import AUTH

MISSING_NOTE = "Order ID,amount,order_date\n1,2.00,2026-11-01\n"
REFRESH = re.compile(r'<meta http-equiv="refresh" content="\d+; url=([^"]*)">')


def page(client, path: str) -> str:
    response = client.get(path, headers=AUTH)
    assert response.status_code == 200, (path, response.status_code, response.get_data(as_text=True)[:500])
    return response.get_data(as_text=True)


def error_row(html: str, file_id: int) -> str:
    match = re.search(rf'<tr data-file="{file_id}".*?</tr>', html, re.S)
    assert match, f"file {file_id} not listed"
    return match.group(0)


def test_overview_shows_retried_errors_as_resolved(operator, ingest) -> None:
    ingest.register(ORDERS)
    fixed = ingest.load("sales/orders/b.csv", MISSING_NOTE)
    still_bad = ingest.load("sales/orders/c.csv", MISSING_NOTE)
    # The operator fixes the definition and retries b from the page; c is left alone.
    ingest.register(ORDERS.replace("      - {name: note, type: STRING}\n", ""))
    response = operator.post(f"/files/{fixed.id}/retry", data={"confirm": "yes"}, headers=AUTH)
    assert response.status_code == 303
    new_id = int(re.match(r"/files/(\d+)", response.headers["Location"]).group(1))

    overview = page(operator, "/")
    resolved = error_row(overview, fixed.id)
    assert "s-resolved" in resolved and f'href="/files/{new_id}"' in resolved
    assert "/retry" not in resolved and "btn danger" not in resolved
    assert f'href="/files/{still_bad.id}/retry"' in error_row(overview, still_bad.id)
    assert f'href="/files/{fixed.id}/retry"' not in page(operator, "/files")
    assert f'id="retried-as">file {new_id}' in page(operator, f"/files/{fixed.id}")

    # A fixed file uploaded again under the same name resolves the error the same way.
    reuploaded = ingest.load("sales/orders/c.csv", "Order ID,amount,order_date\n2,1.00,2026-11-01\n")
    assert reuploaded.status == "SUCCESS"
    again = error_row(page(operator, "/"), still_bad.id)
    assert "s-resolved" in again and "/retry" not in again


def test_rejected_rows_are_a_page_with_a_way_back_and_a_download(operator, ingest) -> None:
    ingest.register(ORDERS)
    ok = ingest.load("sales/orders/a.csv", ORDERS_CSV + "x,1,2026-11-03,<b>bad</b>\n")
    detail = page(operator, f"/files/{ok.id}")
    assert f'href="/files/{ok.id}/rejected"' in detail

    response = operator.get(f"/files/{ok.id}/rejected", headers=AUTH)
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert f'<a href="/files/{ok.id}" id="back">' in html
    assert f'href="/files/{ok.id}/quarantine" id="download"' in html
    assert "1 row(s) rejected" in html and '<td class="num">6</td>' in html
    assert "&lt;b&gt;bad&lt;/b&gt;" in html and "<b>bad</b>" not in html  # raw values escaped
    raw = operator.get(f"/files/{ok.id}/quarantine", headers=AUTH)  # the raw object is still there
    assert raw.mimetype == "text/plain" and '"row": 6' in raw.get_data(as_text=True)

    clean = ingest.load("sales/orders/clean.csv", "Order ID,amount,order_date,note\n9,1.00,2026-11-01,x\n")
    assert operator.get(f"/files/{clean.id}/rejected", headers=AUTH).status_code == 404


def test_an_all_rejected_file_is_shown_failed(operator, ingest) -> None:
    ingest.register(ORDERS)  # max_bad_records: 2
    bad = ingest.load("sales/orders/all-bad.csv", "Order ID,amount,order_date,note\n1,x,2026-11-01,a\n")
    html = page(operator, f"/files/{bad.id}")
    assert f'File {bad.id} <span class="status s-ERROR">' in html
    assert "all 1 row(s) rejected; nothing loaded" in html and f'href="/files/{bad.id}/rejected"' in html
    assert f'href="/files/{bad.id}/retry"' in error_row(page(operator, "/"), bad.id)


def test_pages_reload_themselves_while_a_batch_runs(operator, deps) -> None:
    from tests.engine import callables
    from tests.engine.conftest import define, drain, py, run_batch

    callables.reset()
    define(deps, py("a", dag="g"), py("b", "a", dag="g"))
    callables.FAILURES["b"] = [callables.permanent("broke")]
    batch_id = run_batch(deps, "g")
    assert not REFRESH.search(page(operator, f"/batches/{batch_id}"))  # ended: nothing to follow

    response = operator.post(f"/batches/{batch_id}/restart", data={"confirm": "yes"}, headers=AUTH)
    assert response.status_code == 303
    queued = page(operator, response.headers["Location"])
    assert '<td><span class="status s-QUEUED">' in queued
    assert REFRESH.search(queued).group(1) == f"/batches/{batch_id}"  # reloads without the notice
    assert REFRESH.search(page(operator, "/")).group(1) == "/"
    assert REFRESH.search(page(operator, "/runs?status=PROCESSING")).group(1) == "/runs?status=PROCESSING"
    assert REFRESH.search(page(operator, "/batches")).group(1) == "/batches"

    drain(deps)  # `caf serve` pumps the bus; the next reload shows the outcome
    done = page(operator, f"/batches/{batch_id}")
    assert '<td><span class="status s-QUEUED">' not in done and not REFRESH.search(done)
    assert f'Batch {batch_id} <span class="status s-SUCCESS">' in done
    callables.reset()


def test_a_restarted_failure_stays_listed_with_its_history(operator, deps) -> None:
    from tests.engine import callables
    from tests.engine.conftest import define, drain, py, run_batch

    callables.reset()
    define(deps, py("a", dag="g"), py("b", "a", dag="g"))
    callables.FAILURES["b"] = [callables.permanent("first failure")]
    batch_id = run_batch(deps, "g")
    assert operator.post(f"/batches/{batch_id}/restart", data={"confirm": "yes"}, headers=AUTH).status_code == 303
    drain(deps)
    html = page(operator, f"/batches/{batch_id}")
    assert f'Batch {batch_id} <span class="status s-SUCCESS">' in html
    tries = re.search(r'<table id="tries">.*?</table>', html, re.S).group(0)
    assert 'data-try="b"' in tries and "first failure" in tries and "s-ERROR" in tries

    failed = page(operator, "/runs?status=ERROR")  # Airflow keeps every try; so do we
    assert 'data-task="b" data-earlier="0-1"' in failed and "first failure" in failed
    assert 'data-task="a"' not in failed
    everything = page(operator, "/runs")
    assert everything.count('data-task="b"') == 2  # the current SUCCESS and the earlier ERROR
    callables.reset()
