"""Issue 11, findings 1-4: two tenants through the public entry points, real Postgres and DuckDB.

Tenants `default` (token tok-a) and `beta` (token tok-b). Each test reproduces one way the
isolation broke one level above the rows: a shared warehouse table, a default-tenant glob that
reached into a tenant's prefix, an engine that started another tenant's tasks, pages that answered
for everyone.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.engine import callables
from tests.engine.conftest import RECORD, drain
from tests.handlers.ingest_support import ORDERS, ORDERS_CSV, Ingest
from tests.tenancy.conftest import bearer, declare, upload

TOKENS = {"tok-a": "default", "tok-b": "beta", "tok-admin": "default"}
BETA_CSV = "Order ID,amount,order_date,note\n100,1.00,2026-11-05,beta\n101,2.00,2026-11-05,beta\n"


@pytest.fixture(autouse=True)
def _reset_callables():
    callables.reset()
    yield
    callables.reset()


@pytest.fixture
def settings(settings):
    from config.settings import AuthSettings

    return settings.model_copy(update={"auth": AuthSettings(
        mode="static", static_tokens=TOKENS, signing_key="test-signing-key-0123456789",
        admins=["token:" + hashlib.sha256(b"tok-admin").hexdigest()[:12]])})


@pytest.fixture
def ing(deps, tmp_path: Path) -> Ingest:
    return Ingest(deps, tmp_path)


@pytest.fixture
def client(deps):
    from tests.conftest import make_client

    return make_client("operator", "http")


def tasks(deps, *definitions: dict) -> None:
    from database.session import unit_of_work
    from engine.definitions import TaskDefinition
    from engine.sync import sync

    with unit_of_work(deps.sessions) as session:
        sync(session=session, definitions=[TaskDefinition.model_validate(d) for d in definitions], prune=True)


def listener(name: str, tenant: str, *depends_on: str, on_file: tuple[str, ...] = ()) -> dict:
    return {"name": name, "kind": "python", "python": {"callable": RECORD}, "tenant": tenant,
            "depends_on": list(depends_on), "on_file": list(on_file)}


def both_register_orders(ing: Ingest, *, beta_mode: str = "replace") -> None:
    ing.register(ORDERS, "default.yaml")
    ing.register(ORDERS.replace("write_mode: append", f"write_mode: {beta_mode}") + "    tenant: beta\n", "beta.yaml")


def html(client, path: str, token: str) -> str:
    answer = client.get(path, headers=bearer(token))
    assert answer.status_code == 200, (path, answer.status_code)
    return answer.get_data(as_text=True)


# -- finding 1: a shared warehouse table --------------------------------------------------------
def test_beta_replace_load_never_touches_defaults_table_nor_starts_its_tasks(deps, ing, client) -> None:
    both_register_orders(ing)
    tasks(deps, listener("default_orders", "default", on_file=("sales.orders",)),
          listener("beta_orders", "beta", on_file=("sales.orders",)))
    default_file = ing.load("sales/orders/d.csv", ORDERS_CSV)
    drain(deps)
    beta_file = ing.load("beta/sales/orders/x.csv", BETA_CSV)
    drain(deps)

    assert (default_file.status, beta_file.status) == ("SUCCESS", "SUCCESS"), beta_file.error_message
    assert ing.count("sales.orders") == 5  # beta's replace load did not empty default's table
    assert ing.rows("beta_sales.orders", "order_id") == [(100,), (101,)]
    assert callables.calls("default_orders") == 1 and callables.calls("beta_orders") == 1
    runs = html(client, "/runs", "tok-b")
    assert "beta_orders" in runs and "default_orders" not in runs
    batch_page = html(client, f"/batches/{beta_file.batch_id}", "tok-b")
    assert "default_orders" not in batch_page
    # beta cannot restart (nor see) default's batch
    answer = client.post(f"/batches/{default_file.batch_id}/restart", data={"confirm": "yes"},
                         headers=bearer("tok-b"))
    assert answer.status_code == 404


def test_registry_refuses_a_physical_table_another_tenant_owns(deps, ing) -> None:
    from errors import PermanentError

    deps.settings.jobs.per_tenant_datasets = False
    ing.register(ORDERS, "default.yaml")
    with pytest.raises(PermanentError, match=r"sales\.orders.*tenant default"):
        ing.register(ORDERS + "    tenant: beta\n", "beta.yaml", per_tenant_datasets=False)
    # and a default dataset named like a tenant's own dataset cannot take it over either
    deps.settings.jobs.per_tenant_datasets = True
    ing.register(ORDERS.replace("dataset: sales", "dataset: crm") + "    tenant: beta\n", "beta_crm.yaml")
    with pytest.raises(PermanentError, match=r"beta_crm\.orders.*tenant beta"):
        ing.register(ORDERS.replace("dataset: sales", "dataset: beta_crm"), "default_crm.yaml")


def test_load_refuses_a_table_registered_for_two_tenants_before_the_upgrade(deps, ing) -> None:
    """A registry that already holds a shared physical table (synced before ownership was checked)."""
    from sqlalchemy import update

    from database.models import Domain, Table
    from database.session import unit_of_work

    ing.register(ORDERS, "default.yaml")
    ing.register(ORDERS.replace("dataset: sales", "dataset: other") + "    tenant: beta\n", "beta.yaml")
    with unit_of_work(deps.sessions) as session:  # what an older sync let through
        session.execute(update(Domain).where(Domain.tenant_id == "beta").values(name="sales"))
        assert session.query(Table).count() == 2
    deps.settings.jobs.per_tenant_datasets = False
    assert ing.load("sales/orders/d.csv", ORDERS_CSV).status == "SUCCESS"  # the first owner keeps loading
    refused = ing.load("beta/sales/orders/x.csv", BETA_CSV)
    assert refused.status == "ERROR" and "tenant default" in refused.error_message
    assert ing.count("sales.orders") == 5


# -- finding 2: the default tenant reaching into a tenant's prefix -------------------------------
def test_default_upload_under_a_tenants_prefix_is_refused(deps, ing, client) -> None:
    ing.register(ORDERS.replace('"sales/orders/*.csv"', '"*/orders/*.csv"').replace("dataset: sales",
                                                                                     "dataset: regional"),
                 "default.yaml")
    ing.register(ORDERS.replace('"sales/orders/*.csv"', '"orders/*.csv"').replace("dataset: sales", "dataset: regional")
                 .replace("write_mode: append", "write_mode: replace") + "    tenant: beta\n", "beta.yaml")
    beta_file = ing.load("beta/orders/own.csv", BETA_CSV)
    assert beta_file.status == "SUCCESS", beta_file.error_message

    data = ORDERS_CSV.encode()
    answer = client.post("/jobs", json={"files": [declare("beta/orders/inject.csv", data)]},
                         headers=bearer("tok-a")).get_json()
    assert upload(client, answer, "beta/orders/inject.csv", data).status_code == 200
    view = client.post(f"/jobs/{answer['job_id']}/finalize", headers=bearer("tok-a")).get_json()
    [f] = view["files"]
    assert view["status"] == "failed" and "tenant beta" in f["error"], view
    assert ing.rows("beta_regional.orders", "order_id") == [(100,), (101,)]
    assert "inject.csv" not in html(client, "/files", "tok-b")


def test_landing_object_under_a_tenants_prefix_never_matches_a_default_glob(deps, ing) -> None:
    ing.register(ORDERS.replace('"sales/orders/*.csv"', '"**/*.csv"'), "default.yaml")
    ing.register(ORDERS.replace('"sales/orders/*.csv"', '"orders/*.csv"') + "    tenant: beta\n", "beta.yaml")
    stray = ing.load("beta/elsewhere/x.csv", BETA_CSV)
    assert stray.status == "ERROR" and stray.tenant_id != "default"
    assert ing.count("sales.orders") == 0


def test_job_finalize_loads_for_the_jobs_tenant(deps, ing, client) -> None:
    both_register_orders(ing, beta_mode="append")
    data = BETA_CSV.encode()
    answer = client.post("/jobs", json={"files": [declare("sales/orders/job.csv", data)]},
                         headers=bearer("tok-b")).get_json()
    assert upload(client, answer, "sales/orders/job.csv", data).status_code == 200
    view = client.post(f"/jobs/{answer['job_id']}/finalize", headers=bearer("tok-b")).get_json()
    assert view["status"] == "done", view
    assert ing.count("sales.orders") == 0 and ing.count("beta_sales.orders") == 2
    assert "sales/orders/job.csv" in html(client, "/files", "tok-b")
    assert "sales/orders/job.csv" not in html(client, "/files", "tok-a")


# -- finding 3: /status --------------------------------------------------------------------------
def test_status_needs_a_token_and_answers_for_the_callers_tenant(deps, ing, client) -> None:
    both_register_orders(ing)
    ing.load("sales/orders/bad.csv", "nonsense")
    ing.load("beta/sales/orders/x.csv", BETA_CSV)
    assert client.get("/status").status_code == 401
    assert client.get("/status", headers=bearer("wrong")).status_code == 401
    beta = client.get("/status", headers=bearer("tok-b")).get_json()
    assert beta["files"] == {"SUCCESS": 1} and beta["recent_file_errors"] == []
    default = client.get("/status", headers=bearer("tok-a")).get_json()
    assert default["files"] == {"ERROR": 1}
    assert "bad.csv" in default["recent_file_errors"][0]["object"]
    admin = client.get("/status", headers=bearer("tok-admin")).get_json()
    assert admin["files"] == {"ERROR": 1, "SUCCESS": 1} and set(admin["tenants"]) == {"default", "beta"}


# -- finding 4: table pages ----------------------------------------------------------------------
def test_table_page_lists_only_the_callers_files(deps, ing, client) -> None:
    both_register_orders(ing, beta_mode="append")
    ing.load("sales/orders/default-only.csv", ORDERS_CSV)
    ing.load("beta/sales/orders/beta-only.csv", BETA_CSV)
    beta = html(client, "/tables/sales.orders", "tok-b")
    assert "beta-only.csv" in beta and "default-only.csv" not in beta
    default = html(client, "/tables/sales.orders", "tok-a")
    assert "default-only.csv" in default and "beta-only.csv" not in default


def test_operator_reads_run_as_the_application_role(deps, ing) -> None:
    """Row-level security backs up the page's own filter: a query for another tenant returns nothing."""
    from sqlalchemy import text

    from database.tenancy import tenant_session
    from handlers.web import queries

    both_register_orders(ing, beta_mode="append")
    tasks(deps, listener("default_orders", "default", on_file=("sales.orders",)))
    ing.load("sales/orders/d.csv", ORDERS_CSV)
    drain(deps)
    with tenant_session(deps.sessions, "beta") as session:
        assert queries.files(session=session, tenant="default") == []
        assert queries.runs(session=session, tenant="default") == []
        assert session.execute(text("SELECT count(*) FROM task_log")).scalar() == 0
    with tenant_session(deps.sessions, "default") as session:
        assert len(queries.files(session=session, tenant="default")) == 1
        assert [r["name"] for r in queries.runs(session=session, tenant="default")] == ["default_orders"]
        assert session.execute(text("SELECT current_user")).scalar() == "caf_app"


# -- Must 3: gates, latest files, manual starts and reprocess stay inside the batch's tenant ------------
def test_gates_latest_files_and_reprocess_consider_only_the_batchs_tenant(deps, ing) -> None:
    from engine import scheduler
    from errors import PermanentError
    from handlers import raw_file
    from tests.engine.conftest import runs

    def gate(tenant: str) -> dict:
        return {"name": f"{tenant}_gate", "kind": "wait_for_files", "tenant": tenant, "on_file": ["sales.orders"],
                "wait_for_files": {"tables": ["sales.orders"]}}

    both_register_orders(ing, beta_mode="append")
    tasks(deps, gate("default"), listener("default_after", "default", "default_gate"),
          gate("beta"), listener("beta_after", "beta", "beta_gate"))
    ing.load("sales/orders/d1.csv", ORDERS_CSV)
    drain(deps)
    assert (callables.calls("default_after"), callables.calls("beta_after")) == (1, 0)

    # beta's gate started by hand: default's loaded file is not beta's, so it still waits
    manual = scheduler.start_batch(deps, name="beta_gate", trigger="cli", tenant="beta")
    drain(deps)
    assert runs(deps, manual)["beta_gate"]["status"] == "SKIPPED" and callables.calls("beta_after") == 0
    with pytest.raises(PermanentError, match="for tenant beta"):
        scheduler.start_batch(deps, name="default_gate", trigger="cli", tenant="beta")

    beta_file = ing.load("beta/sales/orders/b.csv", BETA_CSV)
    drain(deps)
    ing.load("sales/orders/d2.csv", ORDERS_CSV.replace("plain", "second"))  # default's newer file
    drain(deps)
    assert (callables.calls("default_after"), callables.calls("beta_after")) == (2, 1)

    # reprocess beta's file: beta's DAG runs again with beta's newest file, default's does not run
    again = raw_file.reprocess(beta_file.id, deps)
    drain(deps)
    gate_run = runs(deps, again)["beta_gate"]
    assert gate_run["status"] == "SUCCESS", gate_run["error"]
    assert "/beta/sales/orders/b.csv#" in gate_run["output"]["files"]["sales.orders"]["object"]
    assert (callables.calls("default_after"), callables.calls("beta_after")) == (2, 2)
    assert set(runs(deps, again)) == {"beta_gate", "beta_after"}
