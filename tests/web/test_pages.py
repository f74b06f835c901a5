"""The operator page over the functions-framework test client: auth, tenants, filters, actions, the DAG picture."""

from __future__ import annotations

import re

from tests.handlers.ingest_support import ORDERS, ORDERS_CSV
from tests.web.conftest import AUTH, OTHER_TOKEN, TOKEN

HTML = {"Accept": "text/html"}
MISSING_NOTE = "Order ID,amount,order_date\n1,2.00,2026-11-01\n"


def page(client, path: str, headers=AUTH) -> str:
    response = client.get(path, headers=headers)
    assert response.status_code == 200, (path, response.status_code, response.get_data(as_text=True)[:500])
    return response.get_data(as_text=True)


def test_requests_without_a_valid_token_are_refused(operator) -> None:
    response = operator.get("/files")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json() == {"error": "authentication required"}
    response = operator.get("/files", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401 and response.get_json() == {"error": "invalid token"}
    response = operator.get("/batches/1", headers=HTML)
    assert response.status_code == 401 and 'name="token"' in response.get_data(as_text=True)
    assert 'value="/batches/1"' in response.get_data(as_text=True)  # back there after signing in
    # Not the page's paths: left to the other route modules / the router.
    assert operator.get("/healthz").get_json()["status"] == "ok"
    assert operator.get("/nowhere", headers=AUTH).status_code == 404


def test_login_sets_an_http_only_cookie_and_logout_clears_it(operator) -> None:
    response = operator.post("/login", data={"token": "wrong", "next": "/files"}, headers=HTML)
    assert response.status_code == 401 and "not valid" in response.get_data(as_text=True)
    response = operator.post("/login", data={"token": TOKEN, "next": "//evil.example/x"})
    assert response.status_code == 303 and response.headers["Location"] == "/"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "tenant <b>default</b>" in page(operator, "/", headers={})  # the cookie now authenticates
    response = operator.post("/login", data={"token": TOKEN}, headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in response.headers["Set-Cookie"]
    response = operator.post("/logout")
    assert response.status_code == 303 and "Max-Age=0" in response.headers["Set-Cookie"]
    assert operator.get("/files", headers=HTML).status_code == 401


def test_pages_show_files_with_filters_counts_and_quarantine(operator, ingest) -> None:
    ingest.register(ORDERS)
    ok = ingest.load("sales/orders/a.csv", ORDERS_CSV + "x,1,2026-11-03,bad\n")
    bad = ingest.load("sales/orders/b.csv", MISSING_NOTE)
    html = page(operator, "/files")
    assert f'data-file="{ok.id}"' in html and f'data-file="{bad.id}"' in html
    assert "missing column(s): note" in html and "rejected rows" in html
    only_errors = page(operator, "/files?status=ERROR&table=sales.orders")
    assert f'data-file="{bad.id}"' in only_errors and f'data-file="{ok.id}"' not in only_errors
    assert 'data-file=' not in page(operator, "/files?date=2001-01-01")
    assert operator.get("/files?status=BROKEN", headers=AUTH).status_code == 400
    assert operator.get("/files?date=yesterday", headers=AUTH).status_code == 400

    detail = page(operator, f"/files/{ok.id}")
    assert "6 read · 5 loaded · 1 rejected" in detail
    rejected = operator.get(f"/files/{ok.id}/quarantine", headers=AUTH)
    assert rejected.status_code == 200 and rejected.mimetype == "text/plain"
    assert '"row": 6' in rejected.get_data(as_text=True)
    overview = page(operator, "/")
    assert "Recent file errors" in overview and "missing column(s): note" in overview
    assert "mapping_mismatch 1" in overview
    tables = page(operator, "/tables")
    assert 'data-table="sales.orders"' in tables and "s-stale" in tables and "b.csv" in tables  # newer, failed
    assert "<dt>rows</dt><dd>5</dd>" in page(operator, "/tables/sales.orders")


def test_another_tenant_sees_nothing_and_cannot_act(operator, ingest) -> None:
    ingest.register(ORDERS)
    bad = ingest.load("sales/orders/b.csv", MISSING_NOTE)
    other = {"Authorization": f"Bearer {OTHER_TOKEN}"}
    assert f'data-file="{bad.id}"' not in page(operator, "/files", headers=other)
    assert "No failed files" in page(operator, "/", headers=other)
    for path in (f"/files/{bad.id}", f"/files/{bad.id}/retry", f"/batches/{bad.batch_id}", "/tables/sales.orders"):
        assert operator.get(path, headers=other).status_code == 404, path
    response = operator.post(f"/files/{bad.id}/retry", data={"confirm": "yes"}, headers=other)
    assert response.status_code == 404
    assert ingest.file(_ref(bad)).status == "ERROR"


def test_retry_needs_confirmation_and_csrf_with_the_cookie(operator, ingest, deps) -> None:
    ingest.register(ORDERS)
    bad = ingest.load("sales/orders/b.csv", MISSING_NOTE)
    confirm = page(operator, f"/files/{bad.id}/retry")
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', confirm).group(1)
    operator.post("/login", data={"token": TOKEN})  # from here on the browser's cookie
    assert operator.post(f"/files/{bad.id}/retry", data={"confirm": "yes"}).status_code == 400  # no CSRF
    assert operator.post(f"/files/{bad.id}/retry", data={"csrf": csrf}).status_code == 400  # not confirmed
    assert operator.get(f"/files/{bad.id}/retry?confirm=yes").status_code == 200  # GET only asks
    assert ingest.file(_ref(bad)).status == "ERROR"

    ingest.register(ORDERS.replace("      - {name: note, type: STRING}\n", ""))
    response = operator.post(f"/files/{bad.id}/retry", data={"confirm": "yes", "csrf": csrf})
    assert response.status_code == 303
    new_id = int(re.match(r"/files/(\d+)\?done=retried", response.headers["Location"]).group(1))
    html = page(operator, response.headers["Location"], headers={})
    assert "SUCCESS" in html and "The file was delivered again" in html
    assert deps.warehouse.count_rows("sales", "orders") == 1
    assert f"retried as file {new_id}" in page(operator, f"/files/{bad.id}", headers={})
    again = operator.post(f"/files/{bad.id}/retry", data={"confirm": "yes", "csrf": csrf})
    assert again.status_code == 409  # a newer version exists now
    ok = operator.get(f"/files/{new_id}/retry", headers=AUTH)
    assert ok.status_code == 409 and "only a file in ERROR" in ok.get_data(as_text=True)


def test_retry_of_a_file_left_in_place(operator, ingest, deps) -> None:
    deps.settings.ingest.move_processed = False  # the raw object stays under its name
    ingest.register(ORDERS)
    bad = ingest.load("sales/orders/b.csv", MISSING_NOTE)
    assert ingest.exists("sales/orders/b.csv") and not ingest.exists("failed/sales/orders/b.csv")
    ingest.register(ORDERS.replace("      - {name: note, type: STRING}\n", ""))
    response = operator.post(f"/files/{bad.id}/retry", data={"confirm": "yes"}, headers=AUTH)
    assert response.status_code == 303
    assert "SUCCESS" in page(operator, response.headers["Location"])


def test_batch_page_draws_the_dag_and_restarts(operator, deps, ingest) -> None:
    from tests.engine import callables
    from tests.engine.conftest import define, drain, py, run_batch

    callables.reset()
    define(deps, py("a", dag="g"), py("b", "a", dag="g"), py("c", "a", dag="g"), py("d", "b", "c", dag="g"))
    callables.FAILURES["b"] = [callables.permanent("<script>alert(1)</script> broke")]
    batch_id = run_batch(deps, "g")
    html = page(operator, f"/batches/{batch_id}")
    nodes = dict(re.findall(r'<g class="node" data-task="(\w)" data-status="(\w+)">', html))
    assert nodes == {"a": "SUCCESS", "b": "ERROR", "c": "SUCCESS", "d": "SKIPPED"}
    assert html.count('class="edge"') == 4 and "<script>" not in html and "&lt;script&gt;" in html
    svg = operator.get(f"/batches/{batch_id}/dag.svg", headers=AUTH)
    assert svg.mimetype == "image/svg+xml" and svg.get_data(as_text=True).startswith("<svg")
    runs = page(operator, "/runs?status=ERROR")
    assert 'data-task="b"' in runs and 'data-task="a"' not in runs
    assert "b, d" in page(operator, f"/batches/{batch_id}/restart")

    response = operator.post(f"/batches/{batch_id}/restart", data={"confirm": "yes"}, headers=AUTH)
    assert response.status_code == 303  # a bearer client needs no CSRF token
    drain(deps)
    html = page(operator, f"/batches/{batch_id}")
    assert f"Batch {batch_id} <span class=\"status s-SUCCESS\">" in html
    assert operator.get(f"/batches/{batch_id}/restart", headers=AUTH).status_code == 409

    ingest.register(ORDERS)
    bad = ingest.load("sales/orders/b.csv", MISSING_NOTE)
    refused = operator.post(f"/batches/{bad.batch_id}/restart", data={"confirm": "yes"}, headers=AUTH)
    assert refused.status_code == 409 and f"retry file {bad.id}" in refused.get_data(as_text=True)
    callables.reset()


def test_dag_layout_is_layered() -> None:
    from handlers.web.dag import layers, svg

    assert layers([1, 2, 3, 4], [(1, 2), (1, 3), (2, 4), (3, 4)]) == [[1], [2, 3], [4]]
    assert layers([1, 2], [(1, 2), (2, 1)]) == [[1, 2]]  # a cycle edited in by hand still draws
    picture = svg([{"task_id": 1, "name": "x" * 40, "status": "PROCESSING", "attempt": 0, "kind": "sql"}], [])
    assert 'data-status="PLANNED"' in picture and "x" * 23 + "…" in picture


def _ref(file):
    from adapters.storage.base import ObjectInfo

    return ObjectInfo(bucket=file.bucket, name=file.name, generation=file.generation, size=0)
