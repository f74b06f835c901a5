"""run/scripts: the deploy dry-run prints every gcloud command; migrate brings a database to head."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from config.settings import PROJECT_ROOT
from database import migrate
from tests.conftest import fresh_database


def test_deploy_dry_run_prints_every_command(tmp_path) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "nightly.yaml").write_text("name: nightly_summary\nkind: sql\nschedule: '0 3 * * *'\n")
    out = subprocess.run(
        [sys.executable, "run/scripts/deploy", "--project", "acme-data", "--bucket", "acme-landing",
         "--cloud-sql-instance", "acme-data:europe-west1:caf", "--db-password-secret", "caf-db-password",
         "--tasks-dir", str(tasks), "--dry-run"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
    ).stdout
    lines = out.strip().splitlines()
    assert any("functions deploy caf-raw-file" in line and "--entry-point=handle_raw_file" in line
               and "type=google.cloud.storage.object.v1.finalized" in line and "bucket=acme-landing" in line
               and "--retry" in line for line in lines)
    assert any("functions deploy caf-pubsub" in line and "--trigger-topic=caf-events" in line for line in lines)
    assert any("functions deploy caf-operator" in line and "--trigger-http" in line for line in lines)
    assert any("topics create caf-events-dead-letter" in line for line in lines)
    assert any("--dead-letter-topic=caf-events-dead-letter" in line for line in lines)
    assert any("scheduler jobs create pubsub caf-nightly-summary" in line and "0 3 * * *" in line
               for line in lines)
    assert "CLOUD_SQL_INSTANCE=acme-data:europe-west1:caf" in out
    assert "DB_PASSWORD=caf-db-password:latest" in out  # a Secret Manager reference, not a value
    assert 'INGEST__LANDING_BUCKETS=["acme-landing"]' in out  # only the landing bucket is ingested
    assert all(line.startswith("gcloud ") or re.match(r"[A-Z_]+=\$\(gcloud ", line) for line in lines)
    raw = next(line for line in lines if "functions deploy caf-raw-file" in line)
    assert "--memory=2Gi" in raw and "--timeout=540s" in raw and "--max-instances=20" in raw  # config/prod.yaml
    assert "--region=europe-west1" in raw
    assert any("caf-sweep-outbox" in line and "event_type=sweep" in line for line in lines)
    assert any("caf-sweep-leases" in line and '{"sweep": true}' in line for line in lines)


def test_migrate_script_upgrades_to_head(pg_server_url: str) -> None:
    url = fresh_database(pg_server_url, "caf_script")
    env = {**os.environ, "DATABASE_URL": url, "APP_ENV": "test", "PYTHON": sys.executable}
    out = subprocess.run(["run/scripts/migrate"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                         check=True).stdout
    assert migrate.head() in out
    assert migrate.current(url) == migrate.head()
