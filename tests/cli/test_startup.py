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
