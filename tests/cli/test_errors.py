"""Configuration and infrastructure failures: one or two lines naming the setting, documented exit codes.

Each test runs the installed `caf` script in a child process, as a user's shell would.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import caf_process


def caf(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return caf_process(*args, tmp_path=tmp_path, **env)


def test_help_documents_exit_codes_and_version(tmp_path: Path) -> None:
    shown = caf("--help", tmp_path=tmp_path)
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    assert "1 something is in ERROR" in text and "2 bad usage or configuration" in text
    assert "3 infrastructure unreachable" in text
    version = caf("--version", tmp_path=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("caf 0.")


def test_bad_usage_exits_2(tmp_path: Path) -> None:
    assert caf("status", "--no-such-flag", tmp_path=tmp_path).returncode == 2


def test_bad_log_level_names_the_setting_in_one_line(tmp_path: Path) -> None:
    result = caf("status", tmp_path=tmp_path, LOG_LEVEL="LOUD")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2 and "LOG_LEVEL" in result.stderr and "Traceback" not in result.stderr


def test_unreachable_database_exits_3_naming_database_url(tmp_path: Path) -> None:
    result = caf("status", tmp_path=tmp_path, DATABASE_URL="postgresql+pg8000://caf:s3cret@127.0.0.1:1/caf")
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in result.stderr  # the problem, then its fix
    assert "DATABASE_URL" in result.stderr and "127.0.0.1:1" in result.stderr
    assert "s3cret" not in result.stderr


def test_prod_without_cloud_settings_refuses_to_start(tmp_path: Path) -> None:
    result = caf("status", tmp_path=tmp_path, APP_ENV="prod", WAREHOUSE_URL="", STORAGE_URL="")
    assert result.returncode == 2, result.stderr
    said = " ".join(result.stderr.split())
    assert "APP_ENV=prod" in said and "CLOUD_SQL_INSTANCE" in said and "Traceback" not in said
    assert not (tmp_path / "local").exists()  # no embedded PostgreSQL was started


@pytest.mark.slow
def test_status_names_its_environment_and_prints_no_third_party_lines(tmp_path: Path, pg_server_url: str) -> None:
    from tests.conftest import fresh_database

    url = fresh_database(pg_server_url, "caf_cli_env")
    result = caf("status", tmp_path=tmp_path, DATABASE_URL=url)
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stdout.split())
    assert said.startswith("APP_ENV=test · metadata postgresql")
    assert result.stderr == ""  # no INFO lines from pgserver / alembic, no teardown messages


def test_prod_without_google_credentials_is_one_line_naming_the_fix(tmp_path: Path, database_url: str) -> None:
    (tmp_path / "f.csv").write_text("a\n1\n")
    result = caf("ingest", str(tmp_path / "f.csv"), tmp_path=tmp_path, APP_ENV="prod", DATABASE_URL=database_url,
                 WAREHOUSE_URL="bigquery://caf-test", STORAGE_URL="gs://", PUBLISHER__PROJECT="caf-test",
                 HOME=str(tmp_path), GOOGLE_APPLICATION_CREDENTIALS="", CLOUDSDK_CONFIG=str(tmp_path / "gcloud"),
                 NO_GCE_CHECK="True")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and "no Google credentials for Cloud Storage" in lines[0]
    assert "gcloud auth application-default login" in lines[1]


def test_ingest_with_the_database_unreachable_puts_nothing_in_the_bucket(tmp_path: Path) -> None:
    """The file is copied while the command starts up, but becomes an object only once the metadata
    database answered: a failed start leaves the bucket as it was (no object, no copy)."""
    (tmp_path / "f.csv").write_text("a\n1\n")
    result = caf("ingest", str(tmp_path / "f.csv"), "--prefix", "sales/", tmp_path=tmp_path,
                 DATABASE_URL="postgresql+pg8000://caf@127.0.0.1:1/caf")
    assert result.returncode == 3, result.stderr
    assert [p for p in (tmp_path / "b").rglob("*") if p.is_file()] == []
