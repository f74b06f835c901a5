"""Operator page, alerts, purge and status tests: the real stack with tokens for two tenants."""

from __future__ import annotations

from pathlib import Path

import pytest

TOKEN = "tok-default-0123456789"
OTHER_TOKEN = "tok-other-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def settings(tmp_path: Path, database_url: str):
    from config.settings import load_settings

    return load_settings(
        database_url=database_url,
        data_dir=str(tmp_path / "local"),
        warehouse_url=f"duckdb://{tmp_path / 'warehouse.duckdb'}",
        storage_url=f"file://{tmp_path / 'buckets'}",
        auth={"mode": "static", "static_tokens": {TOKEN: "default", OTHER_TOKEN: "other"}},
    )


@pytest.fixture
def operator(deps):
    """The functions-framework test client of the `operator` target."""
    from tests.conftest import make_client

    return make_client("operator", "http")


@pytest.fixture
def ingest(deps, tmp_path: Path):
    from tests.handlers.ingest_support import Ingest

    return Ingest(deps, tmp_path)
