"""Session fixtures with real parts: embedded PostgreSQL, DuckDB files, the local bus.

The embedded server starts once per test session (or TEST_DATABASE_URL points at any Postgres);
each test that uses `deps` gets empty metadata tables, its own DuckDB file and bucket folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

os.environ.setdefault("APP_ENV", "test")


class Clock:
    """A controllable clock for retries, leases and delays."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)
        self.frozen = False

    def __call__(self) -> datetime:
        return self.now if self.frozen else max(self.now, datetime.now(UTC))

    def advance(self, seconds: float) -> None:
        self.now = self() + timedelta(seconds=seconds)
        self.frozen = True


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterator[None]:
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the `postgres` database on the session's server."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"]
        return
    import logging

    from database import embedded

    logging.getLogger("pgserver").setLevel(logging.WARNING)
    data_dir = tmp_path_factory.mktemp("pg")
    yield embedded.start(data_dir, stop_at_exit=False)
    embedded.stop(data_dir)


def fresh_database(server_url: str, name: str) -> str:
    from sqlalchemy import create_engine, text

    from database import embedded

    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return embedded.with_database(server_url, name)


@pytest.fixture(scope="session")
def database_url(pg_server_url: str) -> str:
    """A migrated database shared by the session (tables emptied per test by `deps`)."""
    from database import migrate

    url = fresh_database(pg_server_url, "caf_test")
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="session")
def engine(database_url: str):
    from sqlalchemy import create_engine

    from database import driver

    # As production's engines (database.session): one flight per statement, idle-only pings.
    eng = create_engine(database_url, pool_size=10, max_overflow=20, pool_pre_ping=False, hide_parameters=True)
    driver.install(eng)
    yield eng
    eng.dispose()


def truncate_all(engine) -> None:
    from sqlalchemy import text

    from database.base import Base

    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings(tmp_path: Path, database_url: str):
    from config.settings import load_settings

    return load_settings(
        database_url=database_url,
        data_dir=str(tmp_path / "local"),
        warehouse_url=f"duckdb://{tmp_path / 'warehouse.duckdb'}",
        storage_url=f"file://{tmp_path / 'buckets'}",
    )


@pytest.fixture
def deps(settings, engine, clock: Clock) -> Iterator:
    """Deps on the real session database (emptied), a fresh DuckDB and bucket folder, a local bus."""
    from adapters.publisher.local import LocalBus
    from app.deps import Deps, set_deps
    from cli import local_delivery
    from database.session import session_factory

    truncate_all(engine)
    bus = LocalBus(clock=clock)
    local_delivery.attach(bus)
    d = Deps(settings, clock=clock, engine=engine, sessions=session_factory(engine), publisher=bus)
    previous = set_deps(d)
    yield d
    set_deps(previous)


def make_client(target: str, signature: str = "cloudevent"):
    import functions_framework

    from config.settings import PROJECT_ROOT

    return functions_framework.create_app(target, str(PROJECT_ROOT / "main.py"), signature).test_client()
