"""Two tenants end to end (issue 11): the same table names, append and replace loads, each its own DAG.

`default` loads through the landing bucket (handle_raw_file), `beta` through an upload job (the
jobs API) and its landing prefix. Each tenant's on_file DAG — a SQL task writing a totals table,
then a python task — runs on its own files only. Afterwards every read either tenant can make
(pages, /status, /runs, /batches, /tables) shows its own rows, runs and batches, and nothing of
the other's.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.engine import callables
from tests.engine.conftest import RECORD, drain
from tests.handlers.ingest_support import ORDERS, Ingest
from tests.tenancy.conftest import bearer, declare, upload
from tests.tenancy.test_isolation import TOKENS, html, tasks

SNAPSHOT = (ORDERS.replace("table: orders", "table: snapshot").replace("sales/orders/*.csv", "sales/snapshot/*.csv")
            .replace("write_mode: append", "write_mode: replace"))
HEADER = "Order ID,amount,order_date,note\n"


def rows(*ids: int, note: str) -> str:
    return HEADER + "".join(f"{i},{i}.00,2026-11-0{1 + i % 5},{note}\n" for i in ids)


@pytest.fixture(autouse=True)
def _reset_callables():
    callables.reset()
    yield
    callables.reset()


@pytest.fixture
def settings(settings):
    from config.settings import AuthSettings

    return settings.model_copy(update={"auth": AuthSettings(mode="static", static_tokens=TOKENS,
                                                            signing_key="test-signing-key-0123456789")})


@pytest.fixture
def client(deps):
    from tests.conftest import make_client

    return make_client("operator", "http")


def dag(tenant: str, physical: str) -> list[dict]:
    """The tenant's on_file DAG: totals (SQL over its own physical table) → report (python)."""
    totals = (f"CREATE OR REPLACE TABLE {physical}.order_totals AS "
              f"SELECT count(*) AS orders, sum(amount) AS amount FROM {physical}.orders")
    return [{"name": f"{tenant}_totals", "kind": "sql", "tenant": tenant, "on_file": ["sales.orders"],
             "sql": {"query": totals}, "produces": ["sales.order_totals"]},
            {"name": f"{tenant}_report", "kind": "python", "tenant": tenant, "depends_on": [f"{tenant}_totals"],
             "python": {"callable": RECORD}}]


def job_load(client, token: str, name: str, data: str) -> dict:
    raw = data.encode()
    answer = client.post("/jobs", json={"files": [declare(name, raw)]}, headers=bearer(token)).get_json()
    assert upload(client, answer, name, raw).status_code == 200
    view = client.post(f"/jobs/{answer['job_id']}/finalize", headers=bearer(token)).get_json()
    assert view["status"] == "done", view
    return view


def test_two_tenants_same_tables_own_loads_own_dags_nothing_shared(deps, client, tmp_path: Path) -> None:
    ing = Ingest(deps, tmp_path)
    for tenant in ("default", "beta"):
        suffix = "" if tenant == "default" else "    tenant: beta\n"
        ing.register(ORDERS + suffix, f"{tenant}-orders.yaml")
        ing.register(SNAPSHOT + suffix, f"{tenant}-snapshot.yaml")
    tasks(deps, *dag("default", "sales"), *dag("beta", "beta_sales"))

    # default: landing objects; beta: an upload job and its landing prefix. Appends, then replaces.
    d1 = ing.load("sales/orders/d1.csv", rows(1, 2, 3, note="default"))
    drain(deps)
    job_load(client, "tok-b", "sales/orders/b1.csv", rows(101, 102, note="beta"))
    drain(deps)
    d2 = ing.load("sales/orders/d2.csv", rows(4, note="default"))
    drain(deps)
    for name, data in (("sales/snapshot/s1.csv", rows(1, 2, note="default")),
                       ("sales/snapshot/s2.csv", rows(3, note="default")),
                       ("beta/sales/snapshot/s1.csv", rows(101, 102, 103, note="beta")),
                       ("beta/sales/snapshot/s2.csv", rows(104, 105, note="beta"))):
        assert ing.load(name, data).status == "SUCCESS"
    drain(deps)

    # warehouse: each tenant's rows in its own tables; replace loads replaced only their own table
    assert ing.rows("sales.orders", "order_id, note") == [(1, "default"), (2, "default"), (3, "default"),
                                                          (4, "default")]
    assert ing.rows("beta_sales.orders", "order_id, note") == [(101, "beta"), (102, "beta")]
    assert ing.rows("sales.snapshot", "order_id") == [(3,)]
    assert ing.rows("beta_sales.snapshot", "order_id") == [(104,), (105,)]
    assert ing.rows("sales.order_totals", "orders") == [(4,)]
    assert ing.rows("beta_sales.order_totals", "orders") == [(2,)]

    # engine: each file ran its tenant's DAG, in its tenant's batch, and nothing else
    assert callables.calls("default_report") == 2 and callables.calls("beta_report") == 1
    from sqlalchemy import text

    with deps.sessions() as session:
        mixed = session.execute(text(
            "SELECT count(*) FROM task_log l JOIN tasks t ON t.id = l.task_id JOIN task_batch b ON b.id = l.batch_id"
            " WHERE t.tenant_id <> b.tenant_id OR l.tenant_id <> b.tenant_id")).scalar()
        per_tenant = dict(session.execute(text(
            "SELECT l.tenant_id, count(*) FROM task_log l GROUP BY 1")).all())
    assert mixed == 0 and per_tenant == {"default": 4, "beta": 2}

    # pages and /status: each token sees its own files, batches, runs and tables, nothing of the other
    own = {"tok-a": ("default", ["d1.csv", "d2.csv", "default_totals", "default_report"]),
           "tok-b": ("beta", ["b1.csv", "beta_totals", "beta_report"])}
    for token, (tenant, mine) in own.items():
        theirs = [n for t, (_, names) in own.items() if t != token for n in names]
        text_of = " ".join(html(client, path, token) for path in
                           ("/", "/files", "/batches", "/runs", "/tables", "/tables/sales.orders"))
        assert all(n in text_of for n in mine), (tenant, [n for n in mine if n not in text_of])
        assert not [n for n in theirs if re.search(rf"\b{re.escape(n)}\b", text_of)], tenant
        status = client.get("/status", headers=bearer(token)).get_json()
        assert status["files"] == ({"SUCCESS": 4} if tenant == "default" else {"SUCCESS": 3}), status
        assert "tenants" not in status
    for batch_id in (d1.batch_id, d2.batch_id):
        assert client.get(f"/batches/{batch_id}", headers=bearer("tok-b")).status_code == 404
        assert client.post(f"/batches/{batch_id}/restart", data={"confirm": "yes"},
                           headers=bearer("tok-b")).status_code == 404
    assert client.get(f"/files/{d1.id}", headers=bearer("tok-b")).status_code == 404
