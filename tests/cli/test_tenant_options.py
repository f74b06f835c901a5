"""`caf run` and `caf batch reprocess` take `--tenant`: a tenant's task runs in that tenant's batch only."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import write_yaml
from tests.engine import callables
from tests.engine.conftest import RECORD


def test_run_and_reprocess_for_a_tenant(deps, caf, tmp_path: Path) -> None:
    from tests.handlers.ingest_support import ORDERS, ORDERS_CSV, Ingest

    callables.reset()
    ing = Ingest(deps, tmp_path)
    ing.register(ORDERS + "    tenant: beta\n", "beta.yaml")
    write_yaml(tmp_path / "tasks", "t.yaml", f"""
        name: beta_job
        kind: python
        tenant: beta
        on_file: [sales.orders]
        python: {{callable: "{RECORD}"}}
    """)
    assert caf("tasks", "sync", str(tmp_path / "tasks")).code == 0
    assert caf("run", "beta_job").code != 0  # the default tenant has no such task
    assert caf("run", "beta_job", "--tenant", "beta").code == 0
    assert callables.calls("beta_job") == 1
    assert ing.load("beta/sales/orders/b.csv", ORDERS_CSV).status == "SUCCESS"
    deps.publisher.drain()
    assert caf("batch", "reprocess", "sales.orders").code != 0  # not a default-tenant table
    assert caf("batch", "reprocess", "sales.orders", "--tenant", "beta").code == 0
    assert callables.calls("beta_job") == 3  # run, the load, the reprocess
    callables.reset()
