"""Alembic migrations produce exactly the models, and go down cleanly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from database import migrate
from database.base import Base
from tests.conftest import fresh_database


def test_upgrade_head_matches_models_and_downgrade_base_works(pg_server_url: str) -> None:
    url = fresh_database(pg_server_url, "caf_migrations")
    migrate.upgrade(url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == [], f"migrations differ from models: {diff}"
        tables = set(inspect(engine).get_table_names())
        assert {"files", "domain", "tables", "schemas", "tasks", "task_dependencies", "task_batch",
                "task_log", "query", "repo", "power_bi_report"} <= tables
        assert migrate.current(url) == migrate.head()

        migrate.downgrade(url, "base")
        engine.dispose()
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate.upgrade(url)  # and back up again: migrations are re-runnable
        assert migrate.current(url) == migrate.head()
    finally:
        engine.dispose()


def test_files_unique_object_version_and_status_check(deps) -> None:
    import pytest
    from sqlalchemy import exc, text

    with deps.engine.begin() as conn:
        conn.execute(text("INSERT INTO files (bucket, name, generation) VALUES ('b', 'n', 1)"))
    with pytest.raises(exc.IntegrityError), deps.engine.begin() as conn:
        conn.execute(text("INSERT INTO files (bucket, name, generation) VALUES ('b', 'n', 1)"))
    with pytest.raises(exc.DBAPIError), deps.engine.begin() as conn:
        conn.execute(text("INSERT INTO files (bucket, name, generation, status) VALUES ('b', 'n', 2, 'DONE')"))


def test_task_dependency_rejects_self_edge(deps) -> None:
    import pytest
    from sqlalchemy import exc, text

    with deps.engine.begin() as conn:
        conn.execute(text("INSERT INTO tasks (name, kind) VALUES ('a', 'sql')"))
    with pytest.raises(exc.DBAPIError), deps.engine.begin() as conn:
        conn.execute(text("INSERT INTO task_dependencies (parent_id, child_id) VALUES (1, 1)"))
