"""What a terminal shows: a byte progress bar for files (only on a TTY), no teardown noise after failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import caf_process, write_yaml
from tests.conftest import fresh_database

pytestmark = pytest.mark.slow

BROKEN_DAG = """\
    dag: broken
    tasks:
      - name: bad_sql
        kind: sql
        max_attempts: 1
        sql: {query: "SELECT * FROM sales.does_not_exist"}
"""
BIG = """\
    dataset: big
    table: rows
    source: big/*.csv
    format: csv
    schema:
      - {name: id, type: INT64}
      - {name: text, type: STRING}
"""


def test_failed_task_run_ends_without_leak_messages(tmp_path: Path, pg_server_url: str) -> None:
    url = fresh_database(pg_server_url, "caf_cli_terminal")
    synced = caf_process("tasks", "sync", str(write_yaml(tmp_path / "t", "dag.yaml", BROKEN_DAG)),
                         tmp_path=tmp_path, DATABASE_URL=url)
    assert synced.returncode == 0, synced.stderr
    ran = caf_process("run", "broken", tmp_path=tmp_path, DATABASE_URL=url)
    assert ran.returncode == 1 and "does_not_exist" in ran.stdout
    assert "nanobind" not in ran.stderr and "leaked" not in ran.stderr
    assert "INFO" not in ran.stderr  # no third-party (or CAF) INFO lines at the default level


def test_ingest_shows_byte_progress_on_a_terminal_only(tmp_path: Path, pg_server_url: str) -> None:
    url = fresh_database(pg_server_url, "caf_cli_terminal")
    assert caf_process("registry", "sync", str(write_yaml(tmp_path / "defs", "big.yaml", BIG)), tmp_path=tmp_path,
                       DATABASE_URL=url).returncode == 0
    big = tmp_path / "rows.csv"
    big.write_text("id,text\n" + "".join(f"{i},{'x' * 90}\n" for i in range(60_000)))  # ~5.6 MB
    on_tty = caf_process("ingest", str(big), "--prefix", "big/", tmp_path=tmp_path, DATABASE_URL=url,
                         TTY_COMPATIBLE="1", TTY_INTERACTIVE="1")
    assert on_tty.returncode == 0, on_tty.stderr
    assert "ingesting 1/1 big/rows.csv" in on_tty.stdout and "0.0/5.8 MB" in on_tty.stdout
    assert "5.8/5.8 MB" in on_tty.stdout  # the bytes read were counted
    piped = caf_process("ingest", str(big), "--prefix", "big/", tmp_path=tmp_path, DATABASE_URL=url)
    assert piped.returncode == 0 and "MB" not in piped.stdout and "SUCCESS" in piped.stdout
