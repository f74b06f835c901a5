"""What every command does before its work: the schema check that keeps Alembic out of a warm start."""

from __future__ import annotations

from sqlalchemy import create_engine

from database import migrate
from tests.conftest import fresh_database


def test_head_read_from_the_version_files_is_alembics_head() -> None:
    assert migrate._head_from_files() is not None
    assert migrate._head_from_files() == migrate._alembic_head()


def test_head_from_files_defers_to_alembic_when_a_file_is_not_plain(tmp_path, monkeypatch) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "0001_a.py").write_text("revision = '0001'\ndown_revision = None\n")
    (versions / "0002_b.py").write_text("revision: str = '0002'\ndown_revision: str | None = '0001'\n")
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", tmp_path)
    migrate._head_from_files.cache_clear()
    try:
        assert migrate._head_from_files() == "0002"
        (versions / "0003_c.py").write_text("revision = '0003'\ndown_revision = '0001'\n")  # a second head
        migrate._head_from_files.cache_clear()
        assert migrate._head_from_files() is None
        (versions / "0003_c.py").write_text("revision = compute()\ndown_revision = '0002'\n")
        migrate._head_from_files.cache_clear()
        assert migrate._head_from_files() is None
    finally:
        migrate._head_from_files.cache_clear()


def test_revision_of_a_never_migrated_an_old_and_a_current_database(pg_server_url: str) -> None:
    url = fresh_database(pg_server_url, "caf_startup_revision")
    engine = create_engine(url)
    try:
        assert migrate.revision_of(engine) is None
        migrate.upgrade(url, "0004")
        assert migrate.revision_of(engine) == "0004" != migrate.head()
        migrate.upgrade(url)
        assert migrate.revision_of(engine) == migrate.head() == migrate.current(url)
    finally:
        engine.dispose()


def test_a_command_migrates_a_fresh_or_old_database_and_leaves_a_current_one_alone(pg_server_url: str,
                                                                                    tmp_path) -> None:
    from app.deps import Deps
    from cli.context import ensure_migrated
    from config.settings import load_settings

    url = fresh_database(pg_server_url, "caf_startup_migrate")
    deps = Deps(load_settings(database_url=url, data_dir=str(tmp_path / "local")))
    try:
        assert ensure_migrated(deps) is True  # never migrated: brought to head
        assert migrate.current(url) == migrate.head()
        assert ensure_migrated(deps) is False  # at head: nothing to do
        migrate.downgrade(url, "0004")
        deps.engine.dispose()
        assert ensure_migrated(deps) is True  # an older revision: upgraded
        assert migrate.current(url) == migrate.head()
    finally:
        deps.close()


def test_ingest_of_several_files_reports_each_files_own_outcome_in_order(caf, deps, tmp_path, monkeypatch) -> None:
    import json
    import textwrap

    from cli import ingest
    from tests.handlers.ingest_support import ORDERS

    monkeypatch.setattr(ingest, "_OUTCOME_CHUNK", 2)  # the outcomes of four files read in two statements
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "orders.yaml").write_text(textwrap.dedent(ORDERS))
    assert caf("registry", "sync", str(tmp_path / "defs")).code == 0
    header = "Order ID,amount,order_date,note\n"
    files = {"good.csv": header + "1,1.00,2026-11-01,a\n2,2.00,2026-11-01,b\n",
             "all-bad.csv": header + "3,lots,2026-11-01,a\n4,many,2026-11-01,b\n",
             "notes.txt": "not a table's file\n",
             "mixed.csv": header + "5,x,2026-11-01,a\n6,6.00,2026-11-01,b\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    paths = [str(tmp_path / name) for name in files]

    result = caf("ingest", *paths, "--prefix", "sales/orders/", "--json")
    assert result.code == 1, result.text  # a file ended in ERROR
    outcomes = [(f["object"], f["status"], f["rows_loaded"], f["rows_rejected"])
                for f in json.loads(result.out)["files"]]
    assert outcomes == [("sales/orders/good.csv", "SUCCESS", 2, 0), ("sales/orders/all-bad.csv", "ERROR", 0, 2),
                        ("sales/orders/notes.txt", "ERROR", 0, None),
                        ("sales/orders/mixed.csv", "SUCCESS", 1, 1)]

    for name, text in files.items():  # new versions of the same objects, as a table this time
        (tmp_path / name).write_text(text.replace(",2026-11-01,", ",2026-11-02,"))
    result = caf("ingest", *paths, "--prefix", "sales/orders/")
    lines = [line for line in result.out.splitlines() if "landing/sales/orders/" in line]
    assert [line.split("│")[3].strip() for line in lines] == ["SUCCESS", "ERROR", "ERROR", "SUCCESS"], result.out
    said = result.words  # each file's message under its own name
    assert "(sales/orders/notes.txt): no table registered for sales/orders/notes.txt" in said
    assert "(sales/orders/mixed.csv): 1 row(s) rejected" in said and "(sales/orders/all-bad.csv): all 2 row(s)" in said


class Unavailable(Exception):
    """A vendor error no adapter translated (a bug to fix): the platform answers HTTP 500 and redelivers."""


def test_ingest_answers_an_untranslated_error_as_http_500_and_redelivers(caf, deps, tmp_path, monkeypatch,
                                                                         caplog) -> None:
    import json
    import logging
    import textwrap

    from adapters.warehouse.duckdb import DuckDbWarehouse
    from tests.handlers.ingest_support import ORDERS, ORDERS_CSV

    deps.settings.ingest.local_redeliveries = 2
    deps.settings.ingest.local_backoff_seconds = 0.01
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "orders.yaml").write_text(textwrap.dedent(ORDERS))
    assert caf("registry", "sync", str(tmp_path / "defs")).code == 0
    (tmp_path / "day1.csv").write_text(ORDERS_CSV)
    calls = []

    def unavailable(self, request):
        calls.append(request)
        raise Unavailable("503 Service Unavailable")

    monkeypatch.setattr(DuckDbWarehouse, "load", unavailable)
    with caplog.at_level(logging.ERROR):
        result = caf("ingest", str(tmp_path / "day1.csv"), "--prefix", "sales/orders/", "--json")
    assert result.code == 3, result.text
    [outcome] = json.loads(result.out)["files"]
    assert outcome["http"] == 500 and outcome["status"] == "NEW"
    assert "not loaded after 2 attempt(s)" in outcome["message"]
    assert len(calls) == 2  # delivered again after the first 500
    logged = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], Unavailable)]
    assert len(logged) == 2 and "sales/orders/day1.csv" in logged[0].getMessage()


def _names(app) -> set[str]:
    names = {c.name or c.callback.__name__ for c in app.registered_commands if c.callback is not None}
    return names | {g.name for g in app.registered_groups if g.name}


def test_every_command_is_mapped_to_the_module_that_registers_it() -> None:
    import importlib
    import pkgutil

    import typer

    import cli
    from cli.app import COMMANDS, _register, app

    found: dict[str, str] = {}
    for info in pkgutil.iter_modules(cli.__path__):
        module = importlib.import_module(f"cli.{info.name}")
        if hasattr(module, "register"):  # each optional module registers its own commands
            scratch = typer.Typer()
            module.register(scratch)
            found |= dict.fromkeys(_names(scratch), module.__name__)
    found |= {"db": "cli.db", "demo": "cli.demo", "serve": "cli.serve", "status": "cli.status"}
    assert COMMANDS == found
    _register()
    assert _names(app) == set(COMMANDS)


def _child(argv: list[str], *, env: dict[str, str] | None = None) -> tuple[int, set[str]]:
    """Run `caf ARGV` in a fresh interpreter; its exit code and which of our / heavy modules it imported."""
    import json
    import os
    import subprocess
    import sys

    from config.settings import PROJECT_ROOT

    code = ("import json, sys; from cli.app import run; code = run(sys.argv[1:]); "
            "print(json.dumps([code, sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('cli', 'alembic', 'pgserver', 'flask'))]))")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120,
                         cwd=PROJECT_ROOT, env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr
    exit_code, loaded = json.loads(out.stdout.strip().splitlines()[-1])
    return exit_code, set(loaded)


def test_a_command_imports_only_its_own_module_and_a_current_schema_needs_no_alembic(tmp_path,
                                                                                    database_url: str) -> None:
    code, loaded = _child(["ingest", "--help"])
    assert code == 0 and "cli.ingest" in loaded
    assert not {"cli.ops", "cli.serve", "cli.tasks", "cli.demo", "cli.local", "cli.status"} & loaded, loaded

    env = {"APP_ENV": "test", "DATABASE_URL": database_url, "DATA_DIR": str(tmp_path / "local"),
           "WAREHOUSE_URL": f"duckdb://{tmp_path / 'wh.duckdb'}", "STORAGE_URL": f"file://{tmp_path / 'b'}"}
    code, loaded = _child(["status", "--json"], env=env)
    assert code in (0, 1) and "cli.status" in loaded and "cli.ingest" not in loaded
    assert not [m for m in loaded if m.startswith(("alembic", "pgserver"))], loaded


def test_a_caf_process_collects_garbage_again_once_started(tmp_path, database_url: str) -> None:
    import os
    import subprocess
    import sys

    from config.settings import PROJECT_ROOT

    code = ("import gc, sys; from cli.app import run; from cli.context import pause_gc; pause_gc(); "
            "assert not gc.isenabled(); run(sys.argv[1:]); print(gc.isenabled(), gc.get_freeze_count() > 0)")
    env = {**os.environ, "APP_ENV": "test", "DATABASE_URL": database_url, "DATA_DIR": str(tmp_path / "local"),
           "WAREHOUSE_URL": f"duckdb://{tmp_path / 'wh.duckdb'}", "STORAGE_URL": f"file://{tmp_path / 'b'}"}
    out = subprocess.run([sys.executable, "-c", code, "status", "--json"], capture_output=True, text=True,
                         timeout=120, cwd=PROJECT_ROOT, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "True True"  # collector on for the command's work


def test_ingest_delivers_its_events_without_importing_functions_framework_or_flask(tmp_path,
                                                                                   database_url: str) -> None:
    """`caf ingest` calls the targets behind main's entry points (handlers.events), not `main`: a
    CLI process has no use for functions-framework's Flask app (~150 modules at every start)."""
    (tmp_path / "notes.csv").write_text("a\n1\n")
    env = {"APP_ENV": "test", "DATABASE_URL": database_url, "DATA_DIR": str(tmp_path / "local"),
           "WAREHOUSE_URL": f"duckdb://{tmp_path / 'wh.duckdb'}", "STORAGE_URL": f"file://{tmp_path / 'b'}"}
    code, loaded = _child(["ingest", str(tmp_path / "notes.csv"), "--prefix", "nowhere/", "--json"], env=env)
    assert code in (0, 1) and "cli.local_delivery" in loaded  # delivered (no table: acknowledged)
    assert not [m for m in loaded if m.startswith("flask")], loaded


def test_what_ingest_imports_while_copying_a_file_in_is_the_handlers_not_flask() -> None:
    import json
    import subprocess
    import sys

    from config.settings import PROJECT_ROOT

    code = ("import importlib, json, sys; from cli.ingest import HANDLER_MODULES; "
            "[importlib.import_module(m) for m in HANDLER_MODULES]; "
            "print(json.dumps([m for m in sys.modules if m.split('.')[0] in ('flask', 'functions_framework')]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=PROJECT_ROOT, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
