"""Human output at 80 columns: lines fit, names and error words are never cut in the middle."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import caf_process
from tests.engine import callables
from tests.engine.conftest import define, py

SQL_ERROR = ('warehouse rejected the statement: Catalog Error: Table with name '
             '"analytics.customer_lifetime_value_snapshot" does not exist because schema "analytics" does not '
             'exist. Did you mean "sales.customer_revenue"?')


def test_failed_run_and_status_fit_80_columns_without_broken_words(caf, deps) -> None:
    name = "extract_customer_lifetime_value"
    define(deps, py(name, dag="nightly"), py("publish_dashboard", name, dag="nightly"))
    callables.FAILURES[name] = [callables.permanent(SQL_ERROR)]
    for args in (("run", "nightly"), ("status",)):
        result = caf(*args)
        assert result.code == 1
        lines = result.out.splitlines()
        assert max(len(line) for line in lines) <= 80, result.out
        words = set(result.out.split())
        assert name in words  # the task name whole, on one line
        for word in ('"analytics.customer_lifetime_value_snapshot"', "Catalog", "statement:"):
            assert word in words, (word, result.out)
        assert "{'" not in result.out  # no Python reprs


def test_third_party_info_lines_stay_quiet_even_at_log_level_info(tmp_path: Path, pg_server_url: str) -> None:
    """pgserver says `INFO exiting <pid> remaining pids=[...]` at every exit; a CLI user never sees it."""
    socket = Path(pg_server_url.split("unix_sock=", 1)[1])
    data_dir = socket.parent.parent  # the test session's embedded server: this command attaches to it
    result = caf_process("db", "current", tmp_path=tmp_path, DATA_DIR=str(data_dir), LOG_LEVEL="INFO",
                         DB_NAME="caf_cli_quiet")
    assert result.returncode == 0, result.stderr
    assert "current:" in result.stdout
    assert "pgserver" not in result.stderr and "remaining pids" not in result.stderr, result.stderr
