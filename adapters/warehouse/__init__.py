"""Warehouse adapters: DuckDB locally, BigQuery in production, behind one interface."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlparse

if TYPE_CHECKING:
    from adapters.warehouse.base import Warehouse
    from config.settings import Settings


def build_warehouse(settings: Settings) -> Warehouse:
    if settings.warehouse_path is not None:
        from adapters.warehouse.duckdb import DuckDbWarehouse

        return DuckDbWarehouse(settings.warehouse_path)
    from adapters.warehouse.bigquery.warehouse import BigQueryWarehouse

    url = urlparse(settings.warehouse_url)
    location = parse_qs(url.query).get("location", [None])[0]
    return BigQueryWarehouse(project=url.netloc, location=location, api_endpoint=settings.bigquery_emulator_host)
