"""Outcomes as the user sees them: a file whose every row was rejected is not green, in `caf ingest`,
`caf status`, table freshness and the operator page; rows rejected within the limit are said so."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cli.app import _register, app
from tests.handlers.ingest_support import ORDERS

runner = CliRunner()
_register()
ALL_BAD = "Order ID,amount,order_date,note\n1,lots,2026-11-01,a\n2,many,2026-11-01,b\n"  # max_bad_records: 2


def caf(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "200"})
    return result.exit_code, result.output


def _register_orders(tmp_path: Path) -> None:
    folder = tmp_path / "defs"
    folder.mkdir()
    import textwrap

    (folder / "orders.yaml").write_text(textwrap.dedent(ORDERS))
    assert caf("registry", "sync", str(folder))[0] == 0


def test_a_file_with_every_row_rejected_is_an_error_everywhere(deps, tmp_path: Path) -> None:
    _register_orders(tmp_path)
    bad = tmp_path / "all-bad.csv"
    bad.write_text(ALL_BAD)
    code, out = caf("ingest", str(bad), "--prefix", "sales/orders/")
    assert code == 1, out
    assert "ERROR" in out and "all 2 row(s) rejected; nothing loaded" in out

    code, out = caf("status", "--json")
    data = json.loads(out)
    assert code == 1 and data["files"] == {"ERROR": 1} and data["unresolved"]["files"] == 1
    assert "all 2 row(s) rejected" in data["recent_file_errors"][0]["error"]
    code, out = caf("status", "sales.orders")
    assert code == 1 and "is fresh" not in out


def test_rows_rejected_within_the_limit_load_and_say_so(deps, tmp_path: Path) -> None:
    _register_orders(tmp_path)
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("Order ID,amount,order_date,note\n1,lots,2026-11-01,a\n2,1.00,2026-11-01,b\n")
    code, out = caf("ingest", str(mixed), "--prefix", "sales/orders/")
    assert code == 0, out
    assert "SUCCESS" in out and "1 row(s) rejected, within max_bad_records=2" in out
    assert deps.warehouse.count_rows("sales", "orders") == 1

