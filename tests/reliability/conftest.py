"""Shared parts of the reliability suite: a real HTTP server, real CloudEvents, exact row checks."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.handlers.ingest_support import ORDERS, Ingest

ITEMS = """\
    dataset: rel
    table: items
    source: "rel/items/**"
    format: csv
    schema:
      - {name: item_id, type: INT64, mode: REQUIRED}
      - {name: qty, type: INT64}
      - {name: label, type: STRING}
    keys: [item_id]
    write_mode: append
    max_bad_records: 0
"""


@pytest.fixture
def ing(deps, tmp_path) -> Ingest:
    env = Ingest(deps, tmp_path)
    env.register(ORDERS)
    env.register(ITEMS, "items.yaml")
    return env


def items_csv(first_id: int, rows: int) -> str:
    """A small valid file of `rel.items`: ids first_id..first_id+rows-1."""
    body = "".join(f'{i},{i % 7},"item, {i}"\n' for i in range(first_id, first_id + rows))
    return "item_id,qty,label\n" + body


def duplicate_lineage(ing: Ingest, table: str) -> list[tuple]:
    """(file id, source row) pairs present more than once: must always be empty."""
    return ing.deps.warehouse.query(
        f"SELECT {ing.deps.warehouse.file_id_column}, _source_row, count(*) FROM {table} "
        "GROUP BY ALL HAVING count(*) > 1").rows


@pytest.fixture
def live_server(deps) -> Iterator[str]:
    """`caf serve`'s WSGI app (cli.serve.build_app) on a real loopback socket, threaded."""
    from werkzeug.serving import make_server

    from cli.serve import build_app

    server = make_server("127.0.0.1", 0, build_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="caf-test-server", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def finalize_headers(info: Any, event_id: str | None = None) -> dict[str, str]:
    """Binary-mode CloudEvent headers as Eventarc sends them for an object finalize."""
    from values.messages import STORAGE_FINALIZED

    return {
        "ce-specversion": "1.0",
        "ce-type": STORAGE_FINALIZED,
        "ce-source": f"//storage.googleapis.com/projects/_/buckets/{info.bucket}",
        "ce-subject": f"objects/{info.name}",
        "ce-id": event_id or uuid.uuid4().hex,
        "ce-time": datetime.now(UTC).isoformat(),
        "Content-Type": "application/json",
    }


def http_post(url: str, body: bytes, headers: dict[str, str], timeout: float = 30.0) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)


def post_finalize(base_url: str, info: Any, event_id: str | None = None) -> int:
    from cli.local_delivery import storage_event_data

    body = json.dumps(storage_event_data(info)).encode()
    return http_post(f"{base_url}/gcs/", body, finalize_headers(info, event_id))


@pytest.fixture
def duckdb_sql(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every connection opened ("<connect>") and SQL text run on the DuckDB warehouse."""
    import contextlib

    from adapters.warehouse.duckdb import DuckDbWarehouse

    statements: list[str] = []
    real_connect = DuckDbWarehouse.connect

    class Recording:
        def __init__(self, conn: Any) -> None:
            self.conn = conn

        def execute(self, sql: str, *args: Any) -> Any:
            statements.append(sql)
            return self.conn.execute(sql, *args)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.conn, name)

    @contextlib.contextmanager
    def connect(self: Any) -> Iterator[Any]:
        statements.append("<connect>")
        with real_connect(self) as conn:
            yield Recording(conn)

    monkeypatch.setattr(DuckDbWarehouse, "connect", connect)
    return statements
